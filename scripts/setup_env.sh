#!/usr/bin/env bash
# Idempotent set-up behind `make demo` and `make test`: Debian packages, the .venv, the generated
# ROS interfaces, the editable install (registered in the venv's ament index) and the real ROS 2
# Python tools. Each step records a hash of its inputs under .venv/.ovseg3d/ and is skipped when
# nothing changed, so a repeat run takes about a second. The steps live in scripts/lib/setup_steps.sh,
# shared with scripts/setup_jazzy_env.sh (the ROS 2 Jazzy / numpy 1.26 venv of `make test-jazzy`).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv=$repo/.venv
python=${PYTHON:-python3.11}
say_prefix=setup
# shellcheck source=lib/setup_steps.sh
source "$repo/scripts/lib/setup_steps.sh"

take_setup_lock
ensure_apt_packages
ensure_venv
install_deps requirements/requirements.txt requirements/constraints.txt \
  requirements/constraints.txt requirements/python.txt requirements/requirements.txt
build_interfaces
install_editable
register_package
install_ros2_tools

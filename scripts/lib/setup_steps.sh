# Steps shared by scripts/setup_env.sh (.venv, ROS 2 Kilted wheels) and scripts/setup_jazzy_env.sh
# (.venv-jazzy, ROS 2 Jazzy wheels, numpy 1.26). Sourced, not run. The caller sets `repo` (the
# checkout), `venv`, `python` (the interpreter that creates the venv) and `say_prefix`, then calls
# the steps in order. Each step records a hash of its inputs under $venv/.ovseg3d/ and is skipped
# when nothing changed, so a repeat run takes about a second.

apt_packages=(cmake g++ libusb-1.0-0 libgl1 libegl1 libgomp1)

say() { printf '[%s] %s\n' "${say_prefix:-setup}" "$*"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }
up_to_date() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }
mark() { mkdir -p "$stamps"; echo "$2" >"$stamps/$1"; }

# One set-up at a time per checkout: two at once rebuild build/interfaces under each other (both
# venvs generate their interfaces there).
take_setup_lock() {
  mkdir -p "$repo/build" && exec 9>"$repo/build/.setup.lock" && flock 9
  stamps=$venv/.ovseg3d
}

ensure_apt_packages() {
  local pkg missing=()
  for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
      say "installing Debian packages: ${missing[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "ovseg3d needs these Debian packages: ${missing[*]}" >&2
      echo "run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
}

ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    command -v "$python" >/dev/null || { echo "ovseg3d needs Python 3.11 ($python not found; set PYTHON=...)" >&2; exit 1; }
    say "creating $venv"
    "$python" -m venv "$venv"
  fi
  pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
}

# install_deps REQUIREMENTS CONSTRAINTS HASHED_FILES...: torch alone first, then the requirements,
# every pip call under the constraints (so no package can replace the CPU torch). Sets `deps`.
install_deps() {
  local requirements=$1 constraints=$2
  shift 2
  deps=$(digest "$@")
  if ! up_to_date deps "$deps"; then
    say "installing Python packages (torch first, then everything under $constraints)"
    "${pip[@]}" torch -c "$constraints" 2> >(grep -v 'is ignored' >&2)
    "${pip[@]}" -r "$requirements" -c "$constraints" 2> >(grep -v 'is ignored' >&2)
    rm -f "$stamps/interfaces" "$stamps/ros2-tools"  # both build against the ros-* wheels just installed
    mark deps "$deps"
  fi
}

# The messages/services of msg/ and srv/, generated with the venv's rosidl. Sets `interfaces`.
build_interfaces() {
  interfaces=$(digest msg/*.msg srv/*.srv CMakeLists.txt package.xml scripts/build_interfaces.sh)
  if ! up_to_date interfaces "$interfaces"; then
    say "generating ROS interfaces from msg/ and srv/ (rosidl, ~30 s)"
    VENV=$venv bash scripts/build_interfaces.sh
    mark interfaces "$interfaces"
  fi
}

install_editable() {
  local editable
  editable=$(digest setup.py pyproject.toml)
  if ! up_to_date editable "$editable"; then
    say "installing ovseg3d in editable mode"
    "${pip[@]}" --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
    mark editable "$editable"
  fi
}

# `ros2 launch ovseg3d_ros ...` and launch_ros' Node(package="ovseg3d_ros") find the package through
# the ament index under AMENT_PREFIX_PATH=$venv (the interface build registered it): link the launch
# files and config into its share folder and put the node launchers where colcon would: the
# OVSEG3D_EXECUTABLES of CMakeLists.txt ("name=module" pairs), so both installs start the same modules.
register_package() {
  local executables registered share file entry
  mapfile -t executables < <(sed -n '/set(OVSEG3D_EXECUTABLES/,/)/p' CMakeLists.txt | grep -o '"[^"]*=[^"]*"' | tr -d '"')
  registered=$(echo "$interfaces ${executables[*]} $(ls launch/*.py)" | sha256sum | cut -d' ' -f1)
  if ! up_to_date registered "$registered"; then
    say "registering the launch files, config and node launchers in $venv/share and $venv/lib"
    share=$venv/share/ovseg3d_ros
    ln -sfn "$repo/config" "$share/config"
    # `ros2 launch` finds launch files with os.walk, which does not enter a linked folder: link each file.
    rm -rf "$share/launch" && mkdir -p "$share/launch"
    for file in launch/*.py; do ln -s "$repo/$file" "$share/launch/"; done
    mkdir -p "$venv/lib/ovseg3d_ros"
    for entry in "${executables[@]}"; do
      printf '#!%s\nimport sys\nfrom %s import main\nsys.exit(main())\n' "$venv/bin/python" "${entry#*=}" \
        >"$venv/lib/ovseg3d_ros/${entry%%=*}"
      chmod +x "$venv/lib/ovseg3d_ros/${entry%%=*}"
    done
    mark registered "$registered"
  fi
}

# The real launch, ros2cli, message_filters, sensor_msgs_py and tf2_ros (the nodes and tests use them).
# A robot's ROS 2 install provides them; the PyPI wheels do not, so their sources are built from
# $OVSEG3D_ROS2_TOOLS (default ../shared/ros2_tools: install.sh + ros2-tools-src.tar.gz, ~65 s once).
# install_ros2_tools [INSTALLER [FILE...]]: INSTALLER (a command, default `bash`) runs install.sh VENV
# TARBALL; the FILEs (where the INSTALLER is defined) join the step's hash.
install_ros2_tools() {
  local installer=${1:-bash} tools tools_hash provided tools_probe
  shift $(($# > 0 ? 1 : 0))
  tools=${OVSEG3D_ROS2_TOOLS:-$repo/../shared/ros2_tools}
  tools=$(cd "$tools" 2>/dev/null && pwd || echo "$tools")
  tools_probe='import importlib
names = ("launch.launch_service", "launch_ros", "ros2cli", "ros2launch", "message_filters", "sensor_msgs_py.point_cloud2", "tf2_ros")
print(" ".join(importlib.import_module(n).__file__ for n in names))'
  if [ -f "$tools/ros2-tools-src.tar.gz" ] && [ -f "$tools/install.sh" ]; then
    tools_hash=$(echo "$deps $(digest "$tools/ros2-tools-src.tar.gz" "$tools/install.sh")${*:+ $(digest "$@")}" | sha256sum | cut -d' ' -f1)
  else
    tools_hash=missing
  fi
  if ! up_to_date ros2-tools "$tools_hash"; then
    provided=$("$venv/bin/python" -c "$tools_probe" 2>/dev/null || true)
    if [ -n "$provided" ] && { [[ "$provided" != *"$venv/"* ]] || [ "$tools_hash" = missing ]; }; then
      :  # a ROS 2 install provides them (a robot), or an earlier run installed them and the archive is gone
    elif [ "$tools_hash" = missing ]; then
      echo "ovseg3d needs the ROS 2 Python tools (launch, ros2cli, message_filters, sensor_msgs_py, tf2_ros):" \
        "no ROS 2 install provides them and $tools has no install.sh + ros2-tools-src.tar.gz" \
        "(set OVSEG3D_ROS2_TOOLS to that folder or source a ROS 2 install)" >&2
      exit 1
    else
      say "installing the ROS 2 Python tools from $tools (launch, ros2cli, message_filters, sensor_msgs_py, tf2_ros; ~65 s)"
      $installer "$tools/install.sh" "$venv" "$tools/ros2-tools-src.tar.gz"
      "$venv/bin/python" -c "$tools_probe" >/dev/null
      mark ros2-tools "$tools_hash"
    fi
  fi
}

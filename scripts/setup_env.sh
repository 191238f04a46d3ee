#!/usr/bin/env bash
# Idempotent set-up behind `make demo` and `make test`: Debian packages, the .venv, the generated
# ROS interfaces and the editable install. Each step records a hash of its inputs under
# .venv/.ovseg3d/ and is skipped when nothing changed, so a repeat run takes about a second.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv=$repo/.venv
stamps=$venv/.ovseg3d
python=${PYTHON:-python3.11}
apt_packages=(cmake g++ libusb-1.0-0 libgl1 libegl1 libgomp1)

say() { printf '[setup] %s\n' "$*"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }
up_to_date() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }
mark() { mkdir -p "$stamps"; echo "$2" >"$stamps/$1"; }

missing=()
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

if [ ! -x "$venv/bin/python" ]; then
  command -v "$python" >/dev/null || { echo "ovseg3d needs Python 3.11 ($python not found; set PYTHON=...)" >&2; exit 1; }
  say "creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

deps=$(digest requirements/*.txt)
if ! up_to_date deps "$deps"; then
  say "installing Python packages (torch first, then everything under requirements/constraints.txt)"
  "${pip[@]}" torch -c requirements/constraints.txt 2> >(grep -v 'is ignored' >&2)
  "${pip[@]}" -r requirements/requirements.txt -c requirements/constraints.txt 2> >(grep -v 'is ignored' >&2)
  rm -f "$stamps/interfaces"
  mark deps "$deps"
fi

interfaces=$(digest msg/*.msg srv/*.srv CMakeLists.txt package.xml scripts/build_interfaces.sh)
if ! up_to_date interfaces "$interfaces"; then
  say "generating ROS interfaces from msg/ and srv/ (rosidl, ~30 s)"
  VENV=$venv bash scripts/build_interfaces.sh
  mark interfaces "$interfaces"
fi

editable=$(digest setup.py pyproject.toml)
if ! up_to_date editable "$editable"; then
  say "installing ovseg3d in editable mode"
  "${pip[@]}" --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
  mark editable "$editable"
fi

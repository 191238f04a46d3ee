#!/usr/bin/env bash
# Generate the ovseg3d_ros messages/services with the real rosidl/ament build into the venv.
# The ros-* wheels export CMake files that name the wheel builder's Python and numpy include
# directories; they are rewritten to this venv's before configuring (ENVIRONMENT.md).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
py=$venv/bin/python
build=$repo/build/interfaces

py_include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$py" -c 'import numpy; print(numpy.get_include())')
for f in $(grep -rl --include='*.cmake' -e '/opt/python/cp311-cp311' "$venv/share" || true); do
  sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_include#g" \
         -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g" "$f"
done

export AMENT_PREFIX_PATH=$venv CMAKE_PREFIX_PATH=$venv PATH=$venv/bin:$PATH
rm -rf "$build"; mkdir -p "$build"
cmake -S "$repo" -B "$build" -DOVSEG3D_INSTALL_PYTHON=OFF -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" -DCMAKE_BUILD_TYPE=Release >"$build.log" 2>&1 \
  || { tail -40 "$build.log"; echo "interface configure failed; full log: $build.log" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" >>"$build.log" 2>&1 && cmake --install "$build" >>"$build.log" 2>&1 \
  || { tail -40 "$build.log"; echo "interface build failed; full log: $build.log" >&2; exit 1; }

# The generated package shares the name of our Python package; drop its empty __init__ so that
# the editable sources are the package and extend their __path__ to the generated msg/srv.
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
generated_init=$site/ovseg3d_ros/__init__.py
if [ -f "$generated_init" ] && [ ! -s "$generated_init" ]; then rm -f "$generated_init"; fi

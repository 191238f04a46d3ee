"""colcon builds the package as a ROS 2 robot would, and the installed types import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

pytestmark = [pytest.mark.ros, pytest.mark.slow]

VENV = Path(sys.prefix)


def test_colcon_builds_interfaces_and_installs_python_sources(tmp_path):
    colcon = VENV / "bin" / "colcon"
    workspace = tmp_path / "ws"
    source = workspace / "src" / "ovseg3d_ros"
    source.parent.mkdir(parents=True)
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "install", "log", ".cache", "demo_output", "__pycache__"
        ),
    )
    env = dict(
        os.environ,
        AMENT_PREFIX_PATH=str(VENV),
        CMAKE_PREFIX_PATH=str(VENV),
        PATH=f"{VENV / 'bin'}:{os.environ['PATH']}",
    )
    build = subprocess.run(
        [
            str(colcon),
            "build",
            "--merge-install",
            "--event-handlers",
            "console_direct+",
            "--cmake-args",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DBUILD_TESTING=OFF",
        ],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]

    install = workspace / "install"
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert (site / "ovseg3d_core" / "geometry.py").is_file()
    assert (site / "ovseg3d_ros" / "msg" / "_legend.py").is_file()
    assert (install / "share" / "ovseg3d_ros" / "package.xml").is_file()
    assert (install / "share" / "ovseg3d_ros" / "config").is_dir()
    for executable in ("scene_node", "retrieval_node", "bringup", "ovseg3d-bag"):
        assert os.access(install / "lib" / "ovseg3d_ros" / executable, os.X_OK), executable
    assert (install / "share" / "ovseg3d_ros" / "launch" / "ovseg3d.launch.py").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "ovseg3d_ros").is_file()

    # Import from the install space only, as `source install/setup.bash` would arrange.
    probe = (
        "import ovseg3d_ros, ovseg3d_core\n"
        "from ovseg3d_ros.msg import Legend\n"
        "from ovseg3d_ros.srv import QueryScene, RetrieveShapes, SaveScene, SetVocabulary\n"
        "print(ovseg3d_core.__file__); print(Legend.__module__); print(RetrieveShapes.Request().k)\n"
    )
    run_env = dict(
        env, PYTHONPATH=str(site), LD_LIBRARY_PATH=f"{install / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n" + probe],
        env=run_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    core_file, legend_module, k = result.stdout.split()
    assert core_file.startswith(str(install)), core_file
    assert legend_module == "ovseg3d_ros.msg._legend"
    assert k == "0"

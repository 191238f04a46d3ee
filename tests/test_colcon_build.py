"""colcon builds the package as a ROS 2 robot would, and the installed types import."""

from __future__ import annotations

import json
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
    for executable in ("scene_node", "retrieval_node", "bringup", "ovseg3d-bag", "ovseg3d-models"):
        assert os.access(install / "lib" / "ovseg3d_ros" / executable, os.X_OK), executable
    assert (install / "share" / "ovseg3d_ros" / "launch" / "ovseg3d.launch.py").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "ovseg3d_ros").is_file()

    # Import from the install space only, as `source install/setup.bash` would arrange, and load the
    # default student and retrieval checkpoints the nodes use; the cache must not go into the install.
    probe = (
        "import json, ovseg3d_ros, ovseg3d_core\n"
        "from ovseg3d_ros.msg import Legend\n"
        "from ovseg3d_ros.srv import QueryScene, RetrieveShapes, SaveScene, SetVocabulary\n"
        "from ovseg3d_core.paths import cache_dir\n"
        "from ovseg3d_core.purify.student import SHIPPED_CHECKPOINT, load_student\n"
        "from ovseg3d_core.retrieval.database import ShapeDatabaseConfig, model_files\n"
        "from ovseg3d_core.retrieval.model import load_model\n"
        "from ovseg3d_core.retrieval.training import RetrievalExperimentConfig\n"
        "retrieval, experiment = model_files(ShapeDatabaseConfig())\n"
        "load_student(), load_model(retrieval), RetrievalExperimentConfig.from_yaml(experiment)\n"
        "print(json.dumps({'core': ovseg3d_core.__file__, 'legend': Legend.__module__,\n"
        "    'k': RetrieveShapes.Request().k, 'student': str(SHIPPED_CHECKPOINT), 'retrieval': str(retrieval),\n"
        "    'experiment': str(experiment), 'cache': str(cache_dir())}))\n"
    )
    run_env = dict(
        env,
        PYTHONPATH=str(site),
        LD_LIBRARY_PATH=f"{install / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        XDG_CACHE_HOME=str(tmp_path / "user_cache"),
    )
    run_env.pop("OVSEG3D_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n" + probe],
        env=run_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["core"].startswith(str(site)), found
    assert found["legend"] == "ovseg3d_ros.msg._legend"
    assert found["k"] == 0
    shipped = (install / "share" / "ovseg3d_ros" / "checkpoints").resolve()
    assert Path(found["student"]) == shipped / "student" / "geometry_fpfh_normals.pt"
    assert Path(found["retrieval"]) == shipped / "retrieval" / "model.pt"
    assert Path(found["experiment"]) == shipped / "retrieval" / "config.yaml"
    assert found["cache"] == str(tmp_path / "user_cache" / "ovseg3d")

    # The weights tool a robot user runs first, from the install space's launcher.
    models = subprocess.run(
        [sys.executable, str(install / "lib" / "ovseg3d_ros" / "ovseg3d-models"), "list"],
        env=run_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert models.returncode == 0 and "ViT-B-16" in models.stdout, models.stderr[-3000:]

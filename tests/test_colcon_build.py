"""The README's robot instructions, run as written: colcon build, `source install/setup.bash`, `ros2 launch`.

A copy of the repository is built in a temporary workspace with the README's own commands, in a
shell that starts from an empty environment (no venv, no ROS variables). The PyPI ``ros-*`` wheels
and the real ros2 tools of the development venv stand in for a system ROS 2: where a robot runs
``source /opt/ros/<distro>/setup.bash``, the shell exports what that sets for the build
(``AMENT_PREFIX_PATH``, ``CMAKE_PREFIX_PATH``) and activates the venv (the README's own venv step,
here with the packages already installed). ``rosdep`` and ``rviz2`` do not exist here. Only the
test's ROS domain and localhost discovery are passed in, so runs never hear each other.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ros2_cli import CLI, VENV, answer, dumped_parameters, launching, node_info

from ovseg3d_core.data.root import data_root

from conftest import REPO_ROOT

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# What `source /opt/ros/<distro>/setup.bash` sets for a build, here the venv with the ros wheels; then its activation.
ROS_AND_VENV = f"export AMENT_PREFIX_PATH={VENV} CMAKE_PREFIX_PATH={VENV}; source {VENV}/bin/activate"
# The README's launch command, checkpoint included (no such file exists here: the node says so and maps geometry).
README_CHECKPOINT = "/opt/models/open_clip_vit_b16.safetensors"
README_LAUNCH = (
    "ros2 launch ovseg3d_ros ovseg3d.launch.py "
    "rgb_topic:=/camera/color/image_raw depth_topic:=/camera/aligned_depth_to_color/image_raw "
    f"camera_info_topic:=/camera/color/camera_info world_frame:=map checkpoint:={README_CHECKPOINT}"
)
# A small shape database (the default one takes minutes to build on two cores); scene_node keeps its defaults.
RETRIEVAL_PARAMS = """
retrieval_node:
  ros__parameters:
    database: {procedural_shapes: 12, text2shape: false, cloud_points: 256}
"""


class Workspace:
    """A colcon workspace built as the README says, and a clean shell with it sourced."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.home = root, home
        self.install = root / "install" / "ovseg3d_ros"  # colcon's default isolated layout
        self.share = self.install / "share" / "ovseg3d_ros"
        self.site = self.install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

    def env(self) -> dict[str, str]:
        """An empty environment but for a private home, the system PATH and the test's ROS isolation."""
        return {
            "HOME": str(self.home),
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ROS_DOMAIN_ID": os.environ["ROS_DOMAIN_ID"],
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "PYTHONUNBUFFERED": "1",
        }

    def shell(self, script: str) -> list[str]:
        """``bash -c`` running ``script`` in the workspace after the ROS stand-in and `source install/setup.bash`."""
        return ["bash", "-c", f"set -e; {ROS_AND_VENV}; cd {self.root}; source install/setup.bash; {script}"]

    def run(self, *commands: str, timeout: float = 120) -> list[str]:
        """Run sourced shell commands side by side; their stdout, after checking each succeeded."""
        processes = [
            subprocess.Popen(
                self.shell(command), env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for command in commands
        ]
        outputs = []
        for command, process in zip(commands, processes, strict=True):
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, f"{command}: {out[-2000:]}{err[-3000:]}"
            outputs.append(out)
        return outputs


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """The README's clone (a copy here), colcon build and `source install/setup.bash`, once for this module."""
    root = tmp_path_factory.mktemp("ovseg3d_ws")
    shutil.copytree(
        REPO_ROOT,
        root / "src" / "ovseg3d_ros",
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "install", "log", ".cache", "demo_output", "__pycache__"
        ),
    )
    built = Workspace(root, tmp_path_factory.mktemp("home"))
    # The README's lines, from `cd ..` in the workspace on (rosdep and pip have nothing to do here).
    script = (
        f"set -e; {ROS_AND_VENV}; cd {root}; "
        "python -m colcon build --packages-select ovseg3d_ros && source install/setup.bash; "
        'echo "AMENT_PREFIX_PATH=$AMENT_PREFIX_PATH"; echo "PYTHONPATH=$PYTHONPATH"'
    )
    build = subprocess.run(
        ["bash", "-c", script], env=built.env(), capture_output=True, text=True, timeout=600, cwd=root
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    # colcon-bash writes setup.bash, colcon-package-selection gives --packages-select (both in a ROS install's colcon).
    assert (root / "install" / "setup.bash").is_file(), "no install/setup.bash: is colcon-bash installed?"
    assert f"AMENT_PREFIX_PATH={built.install}:{VENV}\n" in build.stdout, build.stdout[-2000:]
    assert f"PYTHONPATH={built.site}\n" in build.stdout, build.stdout[-2000:]
    return built


def test_colcon_builds_interfaces_and_installs_python_sources(workspace):
    install, share, site = workspace.install, workspace.share, workspace.site
    assert (site / "ovseg3d_core" / "geometry.py").is_file()
    assert (site / "ovseg3d_ros" / "msg" / "_legend.py").is_file()
    assert (share / "package.xml").is_file() and (share / "config").is_dir()
    assert (share / "launch" / "ovseg3d.launch.py").is_file()
    for executable in ("scene_node", "retrieval_node", "bringup", "ovseg3d-bag", "ovseg3d-models"):
        assert os.access(install / "lib" / "ovseg3d_ros" / executable, os.X_OK), executable
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "ovseg3d_ros").is_file()

    # In the sourced shell, as a node would: the installed types, and the default student and
    # retrieval checkpoints the nodes load, found in the install's share/; the cache not in the install.
    probe = (
        "import json, ovseg3d_ros, ovseg3d_core\n"
        "from ovseg3d_ros.msg import Legend\n"
        "from ovseg3d_ros.srv import QueryScene, RetrieveShapes, SaveScene, SetVocabulary\n"
        "from ovseg3d_core.paths import cache_dir\n"
        "from ovseg3d_core.purify.student import SHIPPED_CHECKPOINT, load_student\n"
        "from ovseg3d_core.retrieval.database import ShapeDatabaseConfig, checkpoint_path\n"
        "from ovseg3d_core.retrieval.model import load_checkpoint_info, load_model\n"
        "retrieval = checkpoint_path(ShapeDatabaseConfig())\n"
        "load_student(), load_model(retrieval)\n"
        "print(json.dumps({'core': ovseg3d_core.__file__, 'ros': ovseg3d_ros.__file__, 'legend': Legend.__module__,\n"
        "    'k': RetrieveShapes.Request().k, 'student': str(SHIPPED_CHECKPOINT), 'retrieval': str(retrieval),\n"
        "    'held_out': len(load_checkpoint_info(retrieval).held_out), 'cache': str(cache_dir())}))\n"
    )
    # The weights tool a robot user runs first, through the install's launcher.
    found, models = workspace.run(
        f"cd /tmp && python3 -c {shlex.quote(probe)}", "ros2 run ovseg3d_ros ovseg3d-models list"
    )
    found = json.loads(found.splitlines()[-1])
    assert found["core"].startswith(f"{site}/") and found["ros"].startswith(f"{site}/"), found
    assert found["legend"] == "ovseg3d_ros.msg._legend"
    assert found["k"] == 0
    shipped = share / "checkpoints"
    assert Path(found["student"]) == shipped / "student" / "geometry_fpfh_normals.pt"
    assert Path(found["retrieval"]) == shipped / "retrieval" / "model.pt"
    assert found["held_out"] == 300  # the shapes the shipped model was not trained on, from the checkpoint itself
    assert found["cache"] == str(workspace.home / ".cache" / "ovseg3d")  # the user cache directory
    assert "ViT-B-16" in models


def test_readme_launch_command_runs_from_the_install_space(workspace, tmp_path):
    """`ros2 launch ovseg3d_ros ovseg3d.launch.py <the README's arguments>` in the sourced shell."""
    params = tmp_path / "retrieval.yaml"
    params.write_text(RETRIEVAL_PARAMS)
    # As the README: the sample data for the shape database, then the launch (exec: Ctrl-C reaches ros2 launch).
    command = workspace.shell(f"export OVSEG3D_DATA={data_root()}; exec {README_LAUNCH} params_file:={params}")
    with launching(command, workspace.env(), tmp_path / "launch.log") as launched:
        launched.wait_for(r"scene_node ready: world_frame=map", 120)
        launched.wait_for(rf"not loaded: OpenCLIP checkpoint {re.escape(README_CHECKPOINT)} does not exist", 30)
        launched.wait_for(r"publishing geometry in camera colours", 30)
        ready = launched.wait_for(r"retrieval_node ready: (\d+) shapes", 120)
        pids = {name: launched.pid_of(name) for name in ("scene_node", "retrieval_node")}
        for name, pid in pids.items():
            # Each node runs the install's launcher, with the install's types and the install's share.
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert str(workspace.install / "lib" / "ovseg3d_ros" / name).encode() in command_line, command_line
            mapped = Path(f"/proc/{pid}/maps").read_text()
            assert f"{workspace.site}/ovseg3d_ros/ovseg3d_ros_s__rosidl_typesupport" in mapped, name
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"PYTHONPATH={workspace.site}".encode() in environment
            profile = workspace.share / "config" / "fastdds_profile.xml"
            assert f"FASTDDS_DEFAULT_PROFILES_FILE={profile}".encode() in environment

        nodes, scene, dump, retrieve = workspace.run(
            shlex.join(["ros2", "node", "list", *CLI]),
            shlex.join(["ros2", "node", "info", "/scene_node", *CLI]),
            shlex.join(["ros2", "param", "dump", "/scene_node", "--timeout", "30", *CLI]),
            shlex.join(
                [
                    *("ros2", "service", "call", "/retrieval_node/retrieve", "ovseg3d_ros/srv/RetrieveShapes"),
                    "{text: 'a round wooden table with one central leg', k: 3, include_clouds: false}",
                ]
            ),
        )
    assert {"/scene_node", "/retrieval_node"} <= set(nodes.split()), nodes
    subscribed = node_info(scene)["Subscribers"]
    assert subscribed["/camera/color/image_raw"] == subscribed["/camera/aligned_depth_to_color/image_raw"]
    assert subscribed["/camera/color/image_raw"] == "sensor_msgs/msg/Image", subscribed
    assert subscribed["/camera/color/camera_info"] == "sensor_msgs/msg/CameraInfo"
    parameters = dumped_parameters(dump, "/scene_node")
    assert parameters["world_frame"] == "map" and parameters["segmenter.encoders.dense"] == "openclip"
    assert parameters["segmenter.encoders.checkpoint"] == README_CHECKPOINT
    assert parameters["segmenter.student_checkpoint"] == ""  # the shipped student
    # The retrieval model came from the install's share/ (checkpoint_path raises when it is missing); the
    # database it built went to the user cache directory, not into the install.
    assert int(ready[1]) == 12
    success, message = answer(retrieve)
    assert success and len(re.search(r"shape_ids=\[([^\]]*)\]", retrieve)[1].split(",")) == 3, retrieve
    assert list((workspace.home / ".cache" / "ovseg3d" / "shape_database").glob("*/index.npz")), message
    assert not list(workspace.root.joinpath("install").rglob("index.npz"))

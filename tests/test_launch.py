"""The launch files run for real: `ros2 launch` starts the nodes with their arguments, the ros2 CLI inspects them.

The set-up registers the package in the venv's ament index (launch files, config, node launchers
under ``.venv/share`` and ``.venv/lib``), so ``ros2 launch ovseg3d_ros ...`` resolves as it does
in a colcon install. ``ros2 launch`` runs in its own session and is stopped with SIGINT (SIGTERM
would leave its nodes running); the CLI runs without the daemon, which races discovery.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from ros2_cli import (
    CLI,
    PROFILE_ENV,
    SCENE_PARAMS,
    VENV,
    answer,
    dumped_parameters,
    flatten,
    node_info,
    ros2,
    ros2_launch,
    spec,
)

from conftest import REPO_ROOT

pytestmark = pytest.mark.ros

SHARE = VENV / "share" / "ovseg3d_ros"
# What each RViz display class shows; a display of another class with a topic fails the RViz test.
RVIZ_TOPIC_TYPES = {"rviz_default_plugins/PointCloud2": "sensor_msgs/msg/PointCloud2"}


def test_package_is_registered_in_the_venv_ament_index(monkeypatch):
    """`ros2 launch ovseg3d_ros` resolves the launch files, config and launchers through the ament index."""
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    monkeypatch.setenv("AMENT_PREFIX_PATH", str(VENV))
    assert Path(get_package_share_directory("ovseg3d_ros")) == SHARE, "run scripts/setup_env.sh"
    assert Path(get_package_prefix("ovseg3d_ros")) == VENV
    for name in ("ovseg3d.launch.py", "rosbag_demo.launch.py"):
        assert (SHARE / "launch" / name).resolve() == REPO_ROOT / "launch" / name
    assert (SHARE / "config" / "ovseg3d.yaml").resolve() == REPO_ROOT / "config" / "ovseg3d.yaml"
    for executable in ("scene_node", "retrieval_node", "ovseg3d-bag"):
        assert os.access(VENV / "lib" / "ovseg3d_ros" / executable, os.X_OK), executable
    (shown,) = ros2(("launch", "ovseg3d_ros", "rosbag_demo.launch.py", "--show-args"))
    # The demo's own arguments, then the included main launch file's (settable on the same command line).
    for argument in ("bag", "rate", "backend", "checkpoint", "rviz", "retrieval", "params_file", "rgb_topic"):
        assert f"'{argument}':" in shown, argument


def test_parameter_file_names_real_keys_at_their_defaults():
    """Every key of the shipped YAML is a config field (a misspelt or stale key fails) and shows the default."""
    from ovseg3d_core.config import ConfigError
    from ovseg3d_ros.nodes.retrieval_node import RetrievalNodeConfig
    from ovseg3d_ros.nodes.scene_node import SceneNodeConfig

    data = yaml.safe_load((REPO_ROOT / "config" / "ovseg3d.yaml").read_text())
    assert set(data) <= {"scene_node", "retrieval_node"}
    for node, config_type in (("scene_node", SceneNodeConfig), ("retrieval_node", RetrievalNodeConfig)):
        values = flatten(data.get(node, {}).get("ros__parameters", {}))
        config_type.from_flat(values)  # strict: an unknown key raises
        defaults = {spec.name: spec.default for spec in config_type.parameters()}
        assert {name: defaults[name] for name in values} == values, f"{node}: the YAML must show the defaults"
    with pytest.raises(ConfigError, match="unknown"):
        SceneNodeConfig.from_flat({"segmenter.encoders.openclip.checkpoint": ""})  # the key this file used to have
    scene = flatten(data["scene_node"]["ros__parameters"])
    assert scene["segmenter.encoders.dense"] == "openclip" and scene["segmenter.encoders.checkpoint"] == ""


PARAMS = """
scene_node:
  ros__parameters:
    status_period_s: 1.0
    segmenter: {{pooling: {{k: 48}}}}
retrieval_node:
  ros__parameters:
    database: {{procedural_shapes: 12, text2shape: false, cloud_points: 256, cache_dir: "{cache}"}}
"""

REMAPS = {
    "rgb_topic": ("/camera/color/image_raw", "sensor_msgs/msg/Image"),
    "depth_topic": ("/camera/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image"),
    "camera_info_topic": ("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo"),
    "pose_topic": ("/localiser/camera_pose", "geometry_msgs/msg/PoseStamped"),
    "points_topic": ("/lidar/points", "sensor_msgs/msg/PointCloud2"),
}


@pytest.mark.slow
def test_main_launch_starts_both_nodes_with_its_arguments_parameters_services_and_topics(tmp_path, ros_context):
    """Every launch argument reaches the nodes; each service answers through `ros2 service call`."""
    from ovseg3d_ros.tools.client import Ovseg3dClient

    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.format(cache=tmp_path / "database"))
    arguments = [f"{name}:={topic}" for name, (topic, _) in REMAPS.items()]
    arguments += [f"params_file:={params}", "world_frame:=odom", "semantic_topic:=/truth/semantic"]
    client = Ovseg3dClient(ros_context, name="launch_test_client")
    with ros2_launch(tmp_path, "ovseg3d.launch.py", *arguments, unset=(PROFILE_ENV,)) as launched:
        launched.wait_for(r"scene_node ready", 120)
        scene_pid = launched.pid_of("scene_node")
        node_list, scene, retrieval, dump, describe = ros2(
            ("node", "list", *CLI),
            ("node", "info", "/scene_node", *CLI),
            ("node", "info", "/retrieval_node", *CLI),
            ("param", "dump", "/scene_node", "--timeout", "30", *CLI),
            ("param", "describe", "/scene_node", "segmenter.pooling.k", "--timeout", "30", *CLI),
        )
        assert set(node_list.split()) >= {"/scene_node", "/retrieval_node"}

        info = node_info(scene)
        subscribed = info["Subscribers"]
        for topic, kind in REMAPS.values():
            assert subscribed.get(topic) == kind, (topic, subscribed)
        assert not {"/rgb/image", "/depth/image", "/truth/semantic", "/semantic/image"} & set(subscribed)  # openclip
        assert info["Publishers"]["/labeled_cloud"] == "sensor_msgs/msg/PointCloud2"
        assert info["Publishers"]["/legend"] == "ovseg3d_ros/msg/Legend"
        assert (
            info["Service Servers"].items()
            >= {
                "/scene_node/set_vocabulary": "ovseg3d_ros/srv/SetVocabulary",
                "/scene_node/query": "ovseg3d_ros/srv/QueryScene",
                "/scene_node/reset": "std_srvs/srv/Trigger",
                "/scene_node/save": "ovseg3d_ros/srv/SaveScene",
            }.items()
        )
        assert node_info(retrieval)["Service Servers"]["/retrieval_node/retrieve"] == "ovseg3d_ros/srv/RetrieveShapes"

        parameters = dumped_parameters(dump, "/scene_node")
        assert parameters["world_frame"] == "odom"
        assert (
            parameters["segmenter.encoders.dense"] == "openclip" and parameters["segmenter.encoders.checkpoint"] == ""
        )
        assert parameters["segmenter.pooling.k"] == 48 and parameters["status_period_s"] == 1.0  # from params_file
        k = spec("segmenter.pooling.k")
        assert f"Description: {k.description}" in describe
        assert f"Min value: {k.low}" in describe and f"Max value: {k.high}" in describe
        assert "Type: integer" in describe

        # The shipped large-message profile reaches the nodes through the launch file.
        node_environment = Path(f"/proc/{scene_pid}/environ").read_bytes().split(b"\0")
        assert f"{PROFILE_ENV}={SHARE / 'config' / 'fastdds_profile.xml'}".encode() in node_environment

        loaded = client.retrieve("a round table", k=1, ready_timeout=120)  # the database builds in the background
        assert loaded.success, loaded.message
        reset, vocabulary, query, save, retrieve = ros2(
            ("service", "call", "/scene_node/reset", "std_srvs/srv/Trigger"),
            ("service", "call", "/scene_node/set_vocabulary", "ovseg3d_ros/srv/SetVocabulary", "{labels: [chair]}"),
            ("service", "call", "/scene_node/query", "ovseg3d_ros/srv/QueryScene", "{text: chair, threshold: 0.5}"),
            ("service", "call", "/scene_node/save", "ovseg3d_ros/srv/SaveScene", f"{{path: {tmp_path / 'map.npz'}}}"),
            (
                "service",
                "call",
                "/retrieval_node/retrieve",
                "ovseg3d_ros/srv/RetrieveShapes",
                "{text: 'a round wooden table with one central leg', k: 3, include_clouds: false}",
            ),
        )
        assert answer(reset)[0] and answer(vocabulary)[0]
        assert answer(query) == (False, "the scene map is empty: integrate frames before purifying")  # reset
        assert answer(save)[0] and (tmp_path / "map.npz").is_file()
        assert answer(retrieve)[0] and len(re.search(r"shape_ids=\[([^\]]*)\]", retrieve)[1].split(",")) == 3
    client.close()


@pytest.mark.slow
def test_a_checkpoint_argument_the_node_cannot_load_is_named_and_the_node_keeps_mapping(tmp_path):
    """`checkpoint:=` reaches the node: a missing file is logged with its path and the node maps geometry meanwhile."""
    missing = tmp_path / "ViT-B-16-missing.pt"
    with ros2_launch(tmp_path, "ovseg3d.launch.py", f"checkpoint:={missing}", "retrieval:=false") as launched:
        launched.wait_for(rf"not loaded: OpenCLIP checkpoint {re.escape(str(missing))} does not exist", 120)
        launched.wait_for(r"publishing geometry in camera colours", 30)
        launched.wait_for(r"inputs in the last", 60)  # the node is up and reporting
    assert "process has died" not in launched.output()
    assert "retrieval_node" not in launched.output()


@pytest.mark.slow
def test_rosbag_demo_plays_a_bag_from_ovseg3d_bag_into_a_labeled_cloud_rviz_can_show(tmp_path, ros_context):
    """The demo launch file replays a ScanNet bag through the noisy oracle; RViz's displays match what is published."""
    from rclpy.qos import ReliabilityPolicy

    from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES
    from ovseg3d_ros.conversions import read_labeled_cloud
    from ovseg3d_ros.tools.client import Ovseg3dClient

    bag = tmp_path / "scannet"
    ros2(("run", "ovseg3d_ros", "ovseg3d-bag", "write", "--dataset", "scannet", "--frames", "4", str(bag)), timeout=120)
    params = tmp_path / "scene.yaml"
    params.write_text(SCENE_PARAMS)
    user_profile = str(REPO_ROOT / "config" / "fastdds_profile.xml")  # a profile of the user's own: kept
    arguments = [f"bag:={bag}", "rate:=2.0", "backend:=noisy_oracle", "rviz:=false", "retrieval:=false"]
    rviz = yaml.safe_load((REPO_ROOT / "config" / "ovseg3d.rviz").read_text())["Visualization Manager"]
    shown = [display for display in rviz["Displays"] if "Topic" in display]
    assert shown, "the RViz config shows no topic"
    client = Ovseg3dClient(ros_context, name="rosbag_demo_test_client")
    with ros2_launch(
        tmp_path, "rosbag_demo.launch.py", *arguments, f"params_file:={params}", **{PROFILE_ENV: user_profile}
    ) as launched:
        launched.wait_for(r"scene_node ready", 120)
        node_environment = Path(f"/proc/{launched.pid_of('scene_node')}/environ").read_bytes().split(b"\0")
        assert f"{PROFILE_ENV}={user_profile}".encode() in node_environment
        player = Path(f"/proc/{launched.pid_of('ovseg3d-bag')}/cmdline").read_bytes().decode().split("\0")
        assert player[player.index("play") :][:5] == ["play", str(bag), "--rate", "2.0", "--loop"]

        def labeled() -> bool:
            """The newest cloud labels most of its points with a class (the legend's last label is background)."""
            if not client.clouds or not client.legends:
                return False
            return (read_labeled_cloud(client.clouds[-1]).labels < len(client.legends[-1].labels) - 1).mean() > 0.5

        assert client.wait_for(labeled, 90), f"no labeled cloud among {len(client.clouds)} clouds"
        cloud_msg, legend = client.clouds[-1], client.legends[-1]
        node_list, scene, dump = ros2(
            ("node", "list", *CLI),
            ("node", "info", "/scene_node", *CLI),
            ("param", "dump", "/scene_node", "--timeout", "30", *CLI),
        )
        publishers = {d["Topic"]["Value"]: client.node.get_publishers_info_by_topic(d["Topic"]["Value"]) for d in shown}
    client.close()

    nodes = set(node_list.split())
    assert {"/scene_node", "/bag_player"} <= nodes and not {"/retrieval_node", "/rviz"} & nodes
    assert node_info(scene)["Subscribers"]["/semantic/image"] == "sensor_msgs/msg/Image"  # the oracle's input
    parameters = dumped_parameters(dump, "/scene_node")
    assert parameters["segmenter.encoders.dense"] == "noisy_oracle" and parameters["world_frame"] == "map"
    assert parameters["segmenter.pooling.k"] == 16  # from params_file, passed on to the included launch file

    cloud = read_labeled_cloud(cloud_msg)
    assert list(legend.labels[:-1]) == list(SCANNET20_CLASSES)
    assert cloud.labels.max() < len(legend.labels)
    colours = np.array([(c.r, c.g, c.b) for c in legend.colors])
    # Every point in its label's colour (the legend carries it as 0..1 floats).
    np.testing.assert_allclose(cloud.colors, colours[cloud.labels] * 255, atol=1)

    assert rviz["Global Options"]["Fixed Frame"] == cloud_msg.header.frame_id == "map"
    fields = {field.name for field in cloud_msg.fields}
    for display in shown:
        topic = display["Topic"]["Value"]
        infos = publishers[topic]
        assert infos, f"RViz display {display['Name']!r} shows {topic}, which no node publishes"
        assert {info.topic_type for info in infos} == {RVIZ_TOPIC_TYPES[display["Class"]]}, display["Name"]
        if display["Topic"].get("Reliability Policy") == "Reliable":  # a best-effort publisher never reaches it
            assert all(info.qos_profile.reliability == ReliabilityPolicy.RELIABLE for info in infos), topic
        if display["Class"] == "rviz_default_plugins/PointCloud2":
            assert display["Channel Name"] in fields and (display["Color Transformer"] != "RGB8" or "rgb" in fields)

"""Launch files, the parameter YAML and the RViz config declare what the nodes really accept."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

import launch_standins
from conftest import REPO_ROOT

pytestmark = pytest.mark.ros


def load_launch(name: str, monkeypatch):
    launch_standins.install(monkeypatch)
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), REPO_ROOT / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def entities(description, kind: str) -> list:
    return [entity for entity in description.args[0] if type(entity).__name__ == kind]


def node_parameter_names() -> set[str]:
    from ovseg3d_ros.scene_node import SceneNodeConfig

    return {spec.name for spec in SceneNodeConfig.parameters()}


def test_main_launch_declares_nodes_parameters_and_remappings(monkeypatch):
    description = load_launch("ovseg3d.launch.py", monkeypatch)
    arguments = {a.args[0]: a.kwargs.get("default_value") for a in entities(description, "DeclareLaunchArgument")}
    assert {"world_frame", "backend", "checkpoint", "params_file", "rgb_topic", "depth_topic"} <= set(arguments)
    assert arguments["backend"] == "noisy_oracle" and arguments["world_frame"] == "map"

    nodes = {n.kwargs["name"]: n.kwargs for n in entities(description, "Node")}
    assert set(nodes) == {"scene_node", "retrieval_node"}
    scene = nodes["scene_node"]
    assert scene["package"] == "ovseg3d_ros" and scene["executable"] == "scene_node"
    remapped = {source for source, _ in scene["remappings"]}
    assert remapped == {"rgb/image", "depth/image", "rgb/camera_info", "camera_pose", "points", "semantic/image"}
    overrides = scene["parameters"][1]
    assert set(overrides) <= node_parameter_names(), set(overrides) - node_parameter_names()
    assert overrides["world_frame"].args == ("world_frame",)
    assert overrides["segmenter.encoders.openclip.checkpoint"].args == ("checkpoint",)

    (environment,) = entities(description, "SetEnvironmentVariable")
    assert environment.args[0] == "FASTDDS_DEFAULT_PROFILES_FILE"
    assert environment.args[1].args[0][1:] == ["config", "fastdds_profile.xml"]


def test_rosbag_demo_launch_includes_the_main_launch_and_plays_the_bag(monkeypatch):
    description = load_launch("rosbag_demo.launch.py", monkeypatch)
    (include,) = entities(description, "IncludeLaunchDescription")
    assert include.args[0].args[0].args[0][1:] == ["launch", "ovseg3d.launch.py"]
    nodes = {n.kwargs["name"]: n.kwargs for n in entities(description, "Node")}
    player = nodes["bag_player"]
    assert player["executable"] == "ovseg3d-bag" and player["arguments"][0] == "play"
    assert "--loop" in player["arguments"]
    assert nodes["rviz"]["arguments"][1].args[0][1:] == ["config", "ovseg3d.rviz"]


def test_parameter_file_is_valid_for_the_scene_node():
    from ovseg3d_ros.scene_node import SceneNodeConfig

    data = yaml.safe_load((REPO_ROOT / "config" / "ovseg3d.yaml").read_text())
    config = SceneNodeConfig.from_dict(data["scene_node"]["ros__parameters"])
    assert config.segmenter.purification == "student_geometric" and config.segmenter.scene.voxel_size == 0.02


def test_rviz_config_shows_the_labeled_cloud_in_label_colours():
    rviz = yaml.safe_load((REPO_ROOT / "config" / "ovseg3d.rviz").read_text())
    manager = rviz["Visualization Manager"]
    (cloud,) = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "/labeled_cloud" and cloud["Color Transformer"] == "RGB8"
    assert cloud["Topic"]["Reliability Policy"] == "Reliable"
    assert manager["Global Options"]["Fixed Frame"] == "map"

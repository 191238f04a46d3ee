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
    assert arguments["backend"] == "openclip" and arguments["checkpoint"] == "" and arguments["world_frame"] == "map"

    nodes = {n.kwargs["name"]: n.kwargs for n in entities(description, "Node")}
    assert set(nodes) == {"scene_node", "retrieval_node"}
    scene = nodes["scene_node"]
    assert scene["package"] == "ovseg3d_ros" and scene["executable"] == "scene_node"
    remapped = {source for source, _ in scene["remappings"]}
    assert remapped == {"rgb/image", "depth/image", "rgb/camera_info", "camera_pose", "points", "semantic/image"}
    overrides = scene["parameters"][1]
    assert set(overrides) <= node_parameter_names(), set(overrides) - node_parameter_names()
    assert overrides["world_frame"].args == ("world_frame",)
    assert overrides["segmenter.encoders.checkpoint"].args == ("checkpoint",)
    assert overrides["segmenter.encoders.dense"].args == ("backend",)

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


def flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def test_parameter_file_names_real_keys_at_their_defaults():
    """Every key of the shipped YAML is a config field (a misspelt or stale key fails) and shows the default."""
    from ovseg3d_core.config import ConfigError
    from ovseg3d_ros.retrieval_node import RetrievalNodeConfig
    from ovseg3d_ros.scene_node import SceneNodeConfig

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


def test_rviz_config_shows_the_labeled_cloud_in_label_colours():
    rviz = yaml.safe_load((REPO_ROOT / "config" / "ovseg3d.rviz").read_text())
    manager = rviz["Visualization Manager"]
    (cloud,) = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "/labeled_cloud" and cloud["Color Transformer"] == "RGB8"
    assert cloud["Topic"]["Reliability Policy"] == "Reliable"
    assert manager["Global Options"]["Fixed Frame"] == "map"

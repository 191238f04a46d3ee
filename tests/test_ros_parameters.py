"""Core configs become declared ROS parameters with their descriptions and ranges."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ovseg3d_core.config import Config, ConfigError, setting

pytestmark = pytest.mark.ros


@dataclass
class PoolingExample(Config):
    k: int = setting(96, "nearest voxels per row", low=1, high=512)
    scale: float = setting(20.0, "softmax scale on cosine similarity", low=0.0)


@dataclass
class NodeExample(Config):
    backend: str = setting("noisy_oracle", "2D feature source", choices=("openclip", "noisy_oracle"))
    checkpoint: str | None = setting(None, "local weights file")
    vocabulary: list[str] = setting(["chair", "table"], "labels")
    pooling: PoolingExample = setting(PoolingExample(), "pooling")


def test_declared_parameters_carry_descriptions_ranges_and_overrides(ros_context):
    import rclpy
    from rclpy.parameter import Parameter

    from ovseg3d_ros.nodes.parameters import declare_config

    overrides = [Parameter("pooling.k", value=12), Parameter("vocabulary", value=["sofa"])]
    node = rclpy.create_node("param_probe", context=ros_context, parameter_overrides=overrides)
    try:
        config = declare_config(node, NodeExample)
        assert config == NodeExample(vocabulary=["sofa"], pooling=PoolingExample(k=12))
        k = node.describe_parameter("pooling.k")
        assert k.description == "nearest voxels per row"
        assert (k.integer_range[0].from_value, k.integer_range[0].to_value) == (1, 512)
        scale = node.describe_parameter("pooling.scale")
        assert scale.floating_point_range[0].from_value == 0.0
        assert "noisy_oracle" in node.describe_parameter("backend").additional_constraints
        assert config.checkpoint is None
        result = node.set_parameters([Parameter("pooling.k", value=0)])[0]
        assert not result.successful  # the declared range rejects it at the ROS layer
    finally:
        node.destroy_node()


def test_out_of_range_override_fails_with_the_config_message(ros_context):
    import rclpy
    from rclpy.parameter import Parameter

    from ovseg3d_ros.nodes.parameters import declare_config

    node = rclpy.create_node(
        "param_probe_bad", context=ros_context, parameter_overrides=[Parameter("backend", value="clip")]
    )
    try:
        with pytest.raises(ConfigError, match="not one of"):
            declare_config(node, NodeExample)
    finally:
        node.destroy_node()

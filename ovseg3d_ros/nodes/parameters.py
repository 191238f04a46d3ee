"""Declare a core ``Config`` as ROS parameters (descriptions, ranges) and read it back.

The nodes never restate defaults: every parameter comes from the dataclass the library uses, so
``ros2 param describe`` shows the same description and range as the Python docs.
"""

from __future__ import annotations

from typing import Any, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node

from ovseg3d_core.config import Config, ParameterSpec

C = TypeVar("C", bound=Config)

_SCALAR_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def _descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(name=spec.name, description=spec.description)
    if spec.choices is not None:
        descriptor.additional_constraints = "one of: " + ", ".join(map(str, spec.choices))
    if spec.type is list:
        descriptor.type = ParameterType.PARAMETER_STRING_ARRAY
    elif spec.type in _SCALAR_TYPES:
        descriptor.type = _SCALAR_TYPES[spec.type]
    else:
        descriptor.dynamic_typing = True
    # ROS ranges are inclusive on both ends and need both ends; open ends use the type's extremes.
    if spec.type is int and (spec.low is not None or spec.high is not None):
        low = int(spec.low) if spec.low is not None else -(2**63)
        high = int(spec.high) if spec.high is not None else 2**63 - 1
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
    elif spec.type is float and (spec.low is not None or spec.high is not None):
        low = float(spec.low) if spec.low is not None else -1.7976931348623157e308
        high = float(spec.high) if spec.high is not None else 1.7976931348623157e308
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    return descriptor


def _ros_default(spec: ParameterSpec) -> Any:
    if spec.default is None:
        return "" if spec.type is str else None
    if spec.type is list:
        return [str(v) for v in spec.default]
    return spec.default


def declare_config(node: Node, config_type: type[C], prefix: str = "") -> C:
    """Declare every leaf of ``config_type`` under ``prefix`` and return the config they give.

    Values set in a params file or on the command line override the dataclass defaults; the
    result is validated by the config itself, so an out-of-range value fails at start-up with
    the config's own message.
    """
    values: dict[str, Any] = {}
    for spec in config_type.parameters():
        name = prefix + spec.name
        default = _ros_default(spec)
        descriptor = _descriptor(spec)
        if default is None:
            descriptor.dynamic_typing = True
        node.declare_parameter(name, default, descriptor)
        value = node.get_parameter(name).value
        if spec.default is None and value in ("", None):
            value = None
        values[spec.name] = list(value) if spec.type is list and value is not None else value
    return config_type.from_flat(values)

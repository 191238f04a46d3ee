"""The synchronised inputs of one RGB-D frame: which topics, and how each becomes an RGBDFrame field.

Colour, depth and CameraInfo are what every RGB-D camera publishes. A 2D source that reads more
declares the frame fields it needs (``registry.frame_inputs``); only then does the node subscribe
to their topics, so no input a camera lacks is ever required by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from ovseg3d_ros.conversions import (
    camera_info_to_intrinsics,
    image_to_depth,
    image_to_instances,
    image_to_labels,
    image_to_rgb,
)


@dataclass(frozen=True)
class FrameInput:
    field: str  # the RGBDFrame field it fills
    msg_type: type
    topic: str
    convert: Callable[[Any], Any]
    silent_hint: str = ""  # what to check when this input stays silent while the others arrive


CAMERA_INPUTS = (
    FrameInput("color", Image, "rgb/image", image_to_rgb),
    FrameInput("depth", Image, "depth/image", image_to_depth),
    FrameInput(
        "intrinsics",
        CameraInfo,
        "rgb/camera_info",
        camera_info_to_intrinsics,
        "sensor_msgs/CameraInfo with the intrinsics of the colour and depth images",
    ),
)
EXTRA_INPUTS = {
    "labels": FrameInput(
        "labels",
        Image,
        "semantic/image",
        lambda msg: image_to_labels(msg).astype(np.int64),
        "the noisy oracle (a benchmark instrument) reads it: 16UC1 class ids aligned with depth",
    ),
    "instances": FrameInput(
        "instances",
        Image,
        "instance/image",
        image_to_instances,
        "the noisy oracle's per-object errors read it: 16UC1 object id + 1 (0 = none), aligned with depth",
    ),
}


class FrameInputError(ValueError):
    """One message of a synchronised set could not be converted; names its topic."""

    def __init__(self, topic: str, error: Exception) -> None:
        super().__init__(f"{topic}: {error}")
        self.topic, self.error = topic, error


def frame_inputs(extra_fields: Sequence[str]) -> tuple[FrameInput, ...]:
    """The camera's inputs, then those of ``extra_fields`` (a 2D source's declared needs), in callback order."""
    return (*CAMERA_INPUTS, *(EXTRA_INPUTS[field] for field in extra_fields))


def convert_frame_messages(inputs: Sequence[FrameInput], messages: Sequence[Any]) -> dict[str, Any]:
    """RGBDFrame fields from one synchronised set; raises :class:`FrameInputError` naming the bad topic."""
    fields = {}
    for spec, msg in zip(inputs, messages, strict=True):
        try:
            fields[spec.field] = spec.convert(msg)
        except Exception as error:
            raise FrameInputError(spec.topic, error) from error
    return fields


def silent_input_hints(inputs: Sequence[FrameInput], silent: Sequence[str]) -> str:
    return "".join(
        f"; {spec.topic}: {spec.silent_hint}" for spec in inputs if spec.topic in silent and spec.silent_hint
    )

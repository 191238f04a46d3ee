"""sensor_msgs/Image <-> numpy: colour (rgb8/bgr8/rgba8/bgra8), depth (16UC1 mm, 32FC1 m), class ids.

Reads honour ``step`` (row padding) and return arrays the caller owns. Depth always comes back as
float32 metres with 0 for "no measurement" (NaN, inf, negative and zero values alike), the
convention of ``ovseg3d_core.frame.RGBDFrame``.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ovseg3d_core.frame import depth_mm_to_metres, metres_to_depth_mm
from ovseg3d_ros.conversions.errors import MessageConversionError
from ovseg3d_ros.conversions.payload import message_with_payload

# encoding -> (channels, little-endian element dtype)
COLOR_ENCODINGS = {
    "rgb8": (3, np.dtype("u1")),
    "bgr8": (3, np.dtype("u1")),
    "rgba8": (4, np.dtype("u1")),
    "bgra8": (4, np.dtype("u1")),
}
DEPTH_ENCODINGS = {"16UC1": (1, np.dtype("<u2")), "mono16": (1, np.dtype("<u2")), "32FC1": (1, np.dtype("<f4"))}
LABEL_ENCODINGS = {
    "16UC1": (1, np.dtype("<u2")),
    "mono16": (1, np.dtype("<u2")),
    "8UC1": (1, np.dtype("u1")),
    "mono8": (1, np.dtype("u1")),
}


def _pixels(msg: Image, encodings: dict[str, tuple[int, np.dtype]], kind: str) -> np.ndarray:
    """An HxWxC view of the pixels after checking encoding, byte order, step and data length."""
    if msg.encoding not in encodings:
        raise MessageConversionError(
            f"unsupported {kind} image encoding {msg.encoding!r}; expected one of {sorted(encodings)}"
        )
    channels, dtype = encodings[msg.encoding]
    if msg.width <= 0 or msg.height <= 0:
        raise MessageConversionError(f"{kind} image is empty ({msg.width}x{msg.height})")
    if msg.is_bigendian and dtype.itemsize > 1:
        raise MessageConversionError(f"big-endian {msg.encoding} images are not supported (is_bigendian=1)")
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise MessageConversionError(
            f"{kind} image step {msg.step} is smaller than width {msg.width} x {channels * dtype.itemsize} bytes"
        )
    if len(msg.data) != msg.step * msg.height:
        raise MessageConversionError(
            f"{kind} image data holds {len(msg.data)} bytes but step {msg.step} x height {msg.height} "
            f"= {msg.step * msg.height}"
        )
    if msg.step % dtype.itemsize:
        raise MessageConversionError(f"{kind} image step {msg.step} is not a multiple of {dtype.itemsize} bytes")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    return np.ndarray(
        (msg.height, msg.width, channels),
        dtype=dtype,
        buffer=buffer,
        strides=(msg.step, channels * dtype.itemsize, dtype.itemsize),
    )


def _image_msg(pixels: np.ndarray, encoding: str, header: Header) -> Image:
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    step = pixels.strides[0]
    return message_with_payload(
        Image, pixels, header=header, height=height, width=width, encoding=encoding, is_bigendian=0, step=step
    )


def image_to_rgb(msg: Image) -> np.ndarray:
    """HxWx3 uint8 RGB from an rgb8, bgr8, rgba8 or bgra8 image (alpha dropped)."""
    pixels = _pixels(msg, COLOR_ENCODINGS, "colour")
    order = [2, 1, 0] if msg.encoding.startswith("bgr") else [0, 1, 2]
    return np.ascontiguousarray(pixels[:, :, order])


def rgb_to_image(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """An rgb8 or bgr8 message from HxWx3 uint8 RGB."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise MessageConversionError(f"colour must be HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if encoding not in ("rgb8", "bgr8"):
        raise MessageConversionError(f"colour images are written as rgb8 or bgr8, not {encoding!r}")
    return _image_msg(rgb if encoding == "rgb8" else rgb[:, :, ::-1], encoding, header)


def image_to_depth(msg: Image) -> np.ndarray:
    """HxW float32 metres from 16UC1/mono16 (millimetres) or 32FC1 (metres); invalid pixels become 0."""
    raw = _pixels(msg, DEPTH_ENCODINGS, "depth")[:, :, 0]
    if raw.dtype == np.uint16:
        return depth_mm_to_metres(raw, invalid=None)
    depth = raw.astype(np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def depth_to_image(depth_m: np.ndarray, header: Header, encoding: str = "16UC1") -> Image:
    """A 16UC1 (rounded millimetres, 0 = invalid, saturating at 65.534 m) or 32FC1 (metres as given) message."""
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise MessageConversionError(f"depth must be an HxW float array in metres, got {depth.shape} {depth.dtype}")
    if encoding == "32FC1":
        return _image_msg(depth.astype("<f4")[:, :, None], encoding, header)
    if encoding != "16UC1":
        raise MessageConversionError(f"depth images are written as 16UC1 or 32FC1, not {encoding!r}")
    return _image_msg(metres_to_depth_mm(depth).astype("<u2")[:, :, None], encoding, header)


def image_to_labels(msg: Image) -> np.ndarray:
    """HxW int32 class ids from a 16UC1, mono16, 8UC1 or mono8 image."""
    return _pixels(msg, LABEL_ENCODINGS, "label")[:, :, 0].astype(np.int32)


def labels_to_image(labels: np.ndarray, header: Header) -> Image:
    """A 16UC1 class-id image (the ``semantic/image`` topic)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise MessageConversionError(f"labels must be an HxW integer array, got {labels.shape} {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise MessageConversionError(f"class ids must lie in [0, 65535] for 16UC1, got {labels.min()}..{labels.max()}")
    return _image_msg(labels.astype("<u2")[:, :, None], "16UC1", header)


def image_to_instances(msg: Image) -> np.ndarray:
    """HxW int64 object ids from a 16UC1 ``instance/image``; 0 there (no object) becomes -1."""
    return image_to_labels(msg).astype(np.int64) - 1


def instances_to_image(instances: np.ndarray, header: Header) -> Image:
    """A 16UC1 object-id image: id + 1, so that 0 is "no object" (ids < 0) and unsigned pixels suffice."""
    instances = np.asarray(instances)
    if instances.ndim != 2 or not np.issubdtype(instances.dtype, np.integer):
        raise MessageConversionError(f"instances must be an HxW integer array, got {instances.shape} {instances.dtype}")
    shifted = np.where(instances < 0, 0, instances.astype(np.int64) + 1)
    if shifted.size and shifted.max() > np.iinfo(np.uint16).max:
        raise MessageConversionError(f"object ids must lie below 65535 for 16UC1, got {int(instances.max())}")
    return labels_to_image(shifted, header)

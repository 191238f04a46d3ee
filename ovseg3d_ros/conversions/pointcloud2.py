"""sensor_msgs/PointCloud2 <-> numpy through structured dtypes laid over ``msg.data``.

``sensor_msgs_py`` is an exec_depend of the package (package.xml; the development set-up builds it
from the real sources), so it is imported unconditionally. Its ``read_points`` reads every rclpy
cloud of the plain layout (packed rows, scalar fields, no trailing point padding); this module's own
view reads what it cannot: rows padded beyond ``width * point_step`` (it ignores ``row_step``),
``count > 1`` fields (it splits them into ``name_0``, ``name_1``, ...) and clouds deserialised by
``rosbags`` (it asserts an rclpy message; readers here duck-type). Either read is a view, no copy
(a 300k-point cloud reads in ~0.1 ms). Writes fill one structured array and copy it once into the
message (``message_with_payload``); tests check that everything written reads back identically
through ``read_points``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from sensor_msgs_py import point_cloud2 as sensor_msgs_py_cloud
from std_msgs.msg import Header

from ovseg3d_ros.conversions.errors import MessageConversionError
from ovseg3d_ros.conversions.payload import message_with_payload

# PointField.datatype codes (fixed by sensor_msgs/PointField.msg) -> little-endian numpy types.
POINT_FIELD_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<i1"),  # INT8
    2: np.dtype("<u1"),  # UINT8
    3: np.dtype("<i2"),  # INT16
    4: np.dtype("<u2"),  # UINT16
    5: np.dtype("<i4"),  # INT32
    6: np.dtype("<u4"),  # UINT32
    7: np.dtype("<f4"),  # FLOAT32
    8: np.dtype("<f8"),  # FLOAT64
}
_DATATYPE_OF_DTYPE = {dtype: code for code, dtype in POINT_FIELD_DTYPES.items()}

LABELED_CLOUD_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("label", "<u4"), ("score", "<f4")]
)
XYZ_RGB_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])


@dataclass
class LabeledCloud:
    """The arrays of a labeled cloud: Nx3 float32 points, Nx3 uint8 RGB, N uint32 labels, N float32 scores."""

    points: np.ndarray
    colors: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """Nx3 uint8 RGB -> N float32 whose bits are 0x00RRGGBB (the RViz / PCL ``rgb`` convention)."""
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise MessageConversionError(f"colours must be Nx3, got shape {colors.shape}")
    if colors.dtype != np.uint8:
        raise MessageConversionError(f"colours must be uint8 RGB, got {colors.dtype}")
    c = colors.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """N packed ``rgb`` values (float32 or uint32 bits 0x00RRGGBB) -> Nx3 uint8 RGB."""
    packed = np.ascontiguousarray(packed)
    if packed.dtype.itemsize != 4:
        raise MessageConversionError(f"packed rgb must be a 4-byte field, got {packed.dtype}")
    bits = packed.view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=1).astype(np.uint8)


def cloud_dtype(msg: PointCloud2) -> np.dtype:
    """The structured dtype of one point (itemsize = ``point_step``), after checking the layout."""
    if msg.is_bigendian:
        raise MessageConversionError("big-endian PointCloud2 data is not supported (is_bigendian=true)")
    n_points = msg.width * msg.height
    if n_points and msg.point_step <= 0:
        raise MessageConversionError(f"point_step must be positive for {n_points} points, got {msg.point_step}")
    names, formats, offsets = [], [], []
    for index, field in enumerate(msg.fields):
        if field.datatype not in POINT_FIELD_DTYPES:
            raise MessageConversionError(f"field {field.name!r} has unknown PointField datatype {field.datatype}")
        name = field.name or f"unnamed_field_{index}"
        if name in names:
            raise MessageConversionError(f"duplicate PointCloud2 field {name!r}")
        base = POINT_FIELD_DTYPES[field.datatype]
        fmt = base if field.count <= 1 else np.dtype((base, (field.count,)))
        if field.offset + fmt.itemsize > msg.point_step:
            raise MessageConversionError(
                f"field {name!r} (offset {field.offset}, {fmt.itemsize} bytes) exceeds point_step {msg.point_step}"
            )
        names.append(name)
        formats.append(fmt)
        offsets.append(field.offset)
    if msg.height > 1 and msg.row_step < msg.width * msg.point_step:
        raise MessageConversionError(
            f"row_step {msg.row_step} is smaller than width {msg.width} x point_step {msg.point_step}"
        )
    expected = _data_length(msg)
    if len(msg.data) != expected:
        raise MessageConversionError(
            f"PointCloud2 data holds {len(msg.data)} bytes but {msg.height} rows of {msg.width} points "
            f"(point_step {msg.point_step}, row_step {msg.row_step}) need {expected}"
        )
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(msg.point_step, 1)})


def _data_length(msg: PointCloud2) -> int:
    if msg.width * msg.height == 0:
        return 0
    if msg.height == 1:
        # A single row only needs its points; some publishers leave row_step at 0.
        return max(msg.row_step, msg.width * msg.point_step)
    return msg.row_step * msg.height


def _uses_sensor_msgs_py(msg: PointCloud2, dtype: np.dtype) -> bool:
    """Whether ``read_points`` reads ``msg`` (of structured dtype ``dtype``) correctly: see the module docstring."""
    if not isinstance(msg, PointCloud2):
        return False
    packed_rows = msg.height <= 1 or msg.row_step == msg.width * msg.point_step
    fields_end = max((dtype.fields[name][1] + dtype.fields[name][0].itemsize for name in dtype.names), default=0)
    scalar_fields = all(field.count <= 1 and field.name for field in msg.fields)
    return packed_rows and scalar_fields and fields_end == msg.point_step


def cloud_to_structured(msg: PointCloud2, field_names: list[str] | None = None) -> np.ndarray:
    """All points as a structured array of the requested fields (a read-only view when rows are packed)."""
    dtype = cloud_dtype(msg)
    if field_names is not None:
        missing = [name for name in field_names if name not in dtype.names]
        if missing:
            raise MessageConversionError(f"PointCloud2 lacks field(s) {missing}; it has {list(dtype.names)}")
    n_points = msg.width * msg.height
    if n_points == 0:
        points = np.zeros(0, dtype=dtype)
    elif _uses_sensor_msgs_py(msg, dtype):
        points = sensor_msgs_py_cloud.read_points(msg)
        points.flags.writeable = False  # a view of the message, as below
    elif msg.height <= 1 or msg.row_step == msg.width * msg.point_step:
        points = np.frombuffer(msg.data, dtype=dtype, count=n_points)
    else:
        buffer = np.frombuffer(msg.data, dtype=np.uint8)
        rows = np.ndarray((msg.height, msg.width), dtype=dtype, buffer=buffer, strides=(msg.row_step, msg.point_step))
        points = rows.reshape(-1)
    return points if field_names is None else points[list(field_names)]


def _xyz(points: np.ndarray) -> np.ndarray:
    """Nx3 float32 array owned by the caller (never a view into the message)."""
    return np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float32, copy=False)


def _finite_rows(points: np.ndarray) -> np.ndarray:
    # Column by column: np.isfinite(points).all(axis=1) is ~40x slower for Nx3.
    return np.isfinite(points[:, 0]) & np.isfinite(points[:, 1]) & np.isfinite(points[:, 2])


def cloud_to_xyz(msg: PointCloud2, skip_invalid: bool = True) -> np.ndarray:
    """Nx3 float32 x, y, z of any cloud; ``skip_invalid`` drops points with a NaN/inf coordinate."""
    points = _xyz(cloud_to_structured(msg, ["x", "y", "z"]))
    if not skip_invalid:
        return points
    keep = _finite_rows(points)
    return points if keep.all() else points[keep]


def cloud_to_xyz_rgb(msg: PointCloud2, skip_invalid: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(Nx3 float32 points, Nx3 uint8 RGB or None when the cloud has no ``rgb``/``rgba`` field)."""
    structured = cloud_to_structured(msg)
    points = _xyz(cloud_to_structured(msg, ["x", "y", "z"]))
    color_field = next((name for name in ("rgb", "rgba") if name in structured.dtype.names), None)
    colors = unpack_rgb(structured[color_field]) if color_field else None
    if skip_invalid:
        keep = _finite_rows(points)
        if not keep.all():
            points = points[keep]
            colors = colors[keep] if colors is not None else None
    return points, colors


def read_labeled_cloud(msg: PointCloud2) -> LabeledCloud:
    """The arrays of a cloud with x, y, z, rgb, label and score fields (what ``labeled_cloud`` publishes)."""
    structured = cloud_to_structured(msg, ["x", "y", "z", "rgb", "label", "score"])
    return LabeledCloud(
        points=_xyz(structured),
        colors=unpack_rgb(structured["rgb"]),
        labels=structured["label"].astype(np.uint32),
        scores=structured["score"].astype(np.float32),
    )


def structured_to_cloud(points: np.ndarray, header: Header) -> PointCloud2:
    """An unorganised (height 1) cloud whose fields, offsets and point_step are those of ``points.dtype``."""
    points = np.ascontiguousarray(points).reshape(-1)
    if points.dtype.names is None:
        raise MessageConversionError(f"expected a structured array, got dtype {points.dtype}")
    fields = []
    for name in points.dtype.names:
        field_dtype, offset = points.dtype.fields[name][:2]
        base, shape = field_dtype.base, field_dtype.shape
        if base.byteorder == ">" or base.newbyteorder("<") not in _DATATYPE_OF_DTYPE:
            raise MessageConversionError(f"field {name!r} has dtype {base}, which PointCloud2 cannot carry")
        fields.append(
            PointField(
                name=name,
                offset=offset,
                datatype=_DATATYPE_OF_DTYPE[base.newbyteorder("<")],
                count=int(np.prod(shape)) if shape else 1,
            )
        )
    is_dense = all(np.isfinite(points[axis]).all() for axis in ("x", "y", "z") if axis in points.dtype.names)
    return message_with_payload(
        PointCloud2,
        points,
        header=header,
        height=1,
        width=len(points),
        fields=fields,
        is_bigendian=False,
        point_step=points.dtype.itemsize,
        row_step=points.dtype.itemsize * len(points),
        is_dense=bool(is_dense),
    )


def _check_columns(n_points: int, **columns: np.ndarray) -> None:
    for name, column in columns.items():
        if len(column) != n_points:
            raise MessageConversionError(f"{name} has {len(column)} entries but there are {n_points} points")


def _points_array(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise MessageConversionError(f"points must be Nx3, got shape {points.shape}")
    return points


def xyz_rgb_to_cloud(points: np.ndarray, colors: np.ndarray, header: Header) -> PointCloud2:
    """A cloud with x, y, z float32 and packed rgb float32 fields."""
    points = _points_array(points)
    _check_columns(len(points), colors=colors)
    cloud = np.empty(len(points), dtype=XYZ_RGB_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = points[:, 0], points[:, 1], points[:, 2]
    cloud["rgb"] = pack_rgb(colors)
    return structured_to_cloud(cloud, header)


def labeled_cloud_to_msg(
    points: np.ndarray, colors: np.ndarray, labels: np.ndarray, scores: np.ndarray, header: Header
) -> PointCloud2:
    """The ``labeled_cloud`` message of DESIGN §6: x, y, z, rgb (packed label colour), label uint32, score."""
    points = _points_array(points)
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores).reshape(-1)
    _check_columns(len(points), colors=colors, labels=labels, scores=scores)
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 2**32 - 1):
        raise MessageConversionError(f"labels must be integers in [0, 2^32), got {labels.dtype} {labels.min()}..")
    cloud = np.empty(len(points), dtype=LABELED_CLOUD_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = points[:, 0], points[:, 1], points[:, 2]
    cloud["rgb"] = pack_rgb(colors)
    cloud["label"] = labels
    cloud["score"] = scores
    return structured_to_cloud(cloud, header)

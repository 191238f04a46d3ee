"""Text2Shape: captions CSV + 32^3 RGBA voxel grids (gzip NRRD) -> :class:`ShapeSample`.

Layout (``$OVSEG3D_DATA/text2shape_sample``): ``test_captions.csv`` with columns
``id, modelId, description, category, ...`` and ``test_shapes/<modelId>/<modelId>.nrrd``.
Captions are joined to shapes by ``modelId``; captioned ids without a shape folder are reported
with a :class:`MissingShapeWarning` and skipped. The NRRD header is parsed here (a dozen lines)
instead of adding a dependency; only what Text2Shape writes is supported: ``uint8``,
``raw``/``gzip`` encoding, an RGBA first axis and a 3-D ``space directions`` block.
"""

from __future__ import annotations

import csv
import gzip
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovseg3d_core.data.root import data_path
from ovseg3d_core.data.shapes.dataset import ShapeDataset, cached_shape_dataset
from ovseg3d_core.data.shapes.mesh import ColoredMesh, ShapeDataError
from ovseg3d_core.data.shapes.sample import ShapeSample, ShapeSampleConfig, make_shape_sample

TEXT2SHAPE_DIR = "text2shape_sample"


class MissingShapeWarning(UserWarning):
    """Some captioned model ids have no shape file; they are skipped."""


@dataclass(frozen=True)
class VoxelGrid:
    """RGBA voxels ``rgba`` X x Y x Z x 4 uint8; voxel (i, j, k) sits at ``origin + [i, j, k] @ axes``."""

    rgba: np.ndarray
    origin: np.ndarray
    axes: np.ndarray

    @property
    def occupied(self) -> np.ndarray:
        return self.rgba[..., 3] > 0

    def to_mesh(self) -> ColoredMesh:
        """Coloured surface of the occupied voxels (alpha > 0)."""
        return ColoredMesh.from_voxels(
            self.occupied, self.rgba[..., :3].astype(np.float32) / 255.0, self.origin, self.axes
        )


@dataclass(frozen=True)
class CaptionedModel:
    model_id: str
    category: str
    captions: tuple[str, ...]


_VECTOR = re.compile(r"\(([^)]*)\)")


def _parse_vector(text: str, path: Path, field: str) -> np.ndarray:
    try:
        return np.array([float(x) for x in text.split(",")], dtype=np.float64)
    except ValueError as exc:
        raise ShapeDataError(f"{path}: bad vector {text!r} in NRRD field {field!r}") from exc


def read_nrrd_voxels(path: str | Path) -> VoxelGrid:
    """Read a Text2Shape RGBA voxel NRRD (``sizes: 4 X Y Z``)."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(b"NRRD000"):
        raise ShapeDataError(f"{path}: not an NRRD file (magic {raw[:8]!r})")
    end = raw.find(b"\n\n")
    if end < 0:
        raise ShapeDataError(f"{path}: NRRD header is not terminated by a blank line")
    fields: dict[str, str] = {}
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    if fields.get("type") not in ("uint8", "uchar", "unsigned char", "uint8_t"):
        raise ShapeDataError(f"{path}: NRRD type {fields.get('type')!r} is not uint8")
    try:
        sizes = [int(s) for s in fields["sizes"].split()]
    except (KeyError, ValueError) as exc:
        raise ShapeDataError(f"{path}: NRRD 'sizes' field missing or malformed") from exc
    if len(sizes) != 4 or sizes[0] != 4:
        raise ShapeDataError(f"{path}: expected RGBA voxels with sizes '4 X Y Z', got {sizes}")
    payload = raw[end + 2 :]
    encoding = fields.get("encoding", "raw")
    if encoding in ("gzip", "gz"):
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError, zlib.error) as exc:
            raise ShapeDataError(f"{path}: corrupt gzip payload: {exc}") from exc
    elif encoding != "raw":
        raise ShapeDataError(f"{path}: NRRD encoding {encoding!r} is not supported (raw or gzip)")
    if len(payload) != int(np.prod(sizes)):
        raise ShapeDataError(f"{path}: payload has {len(payload)} bytes, header sizes {sizes} need {np.prod(sizes)}")
    # NRRD lists the fastest axis first, so the C-order array is the reversed shape; .T restores header order.
    data = np.frombuffer(payload, dtype=np.uint8).reshape(sizes[::-1]).T
    rgba = np.ascontiguousarray(np.moveaxis(data, 0, -1))

    directions = _VECTOR.findall(fields.get("space directions", ""))
    axes = np.stack([_parse_vector(d, path, "space directions") for d in directions]) if directions else np.eye(3)
    if axes.shape != (3, 3) or not np.all(np.isfinite(axes)) or abs(np.linalg.det(axes)) == 0:
        raise ShapeDataError(f"{path}: 'space directions' must give three independent 3-D vectors, got {axes.shape}")
    origin_match = _VECTOR.search(fields.get("space origin", ""))
    origin = _parse_vector(origin_match.group(1), path, "space origin") if origin_match else np.zeros(3)
    if origin.shape != (3,):
        raise ShapeDataError(f"{path}: 'space origin' must have 3 values, got {origin.shape}")
    return VoxelGrid(rgba, origin, axes)


def read_text2shape_captions(csv_path: str | Path) -> dict[str, CaptionedModel]:
    """Captions grouped by ``modelId`` in file order; the category is lower-cased (``chair``/``table``)."""
    csv_path = Path(csv_path)
    grouped: dict[str, tuple[str, list[str]]] = {}
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"modelId", "description", "category"} - set(reader.fieldnames or [])
        if missing:
            raise ShapeDataError(f"{csv_path}: missing columns {sorted(missing)}")
        for row in reader:
            model_id, text = (row["modelId"] or "").strip(), (row["description"] or "").strip()
            if not model_id or not text:
                warnings.warn(f"{csv_path}:{reader.line_num}: empty model id or caption, row skipped", stacklevel=2)
                continue
            grouped.setdefault(model_id, ((row["category"] or "").strip().lower(), []))[1].append(text)
    return {mid: CaptionedModel(mid, cat, tuple(caps)) for mid, (cat, caps) in grouped.items()}


def text2shape_voxel_path(model_id: str, root: Path) -> Path:
    return root / "test_shapes" / model_id / f"{model_id}.nrrd"


def _captioned_models(root: Path) -> list[CaptionedModel]:
    """Captioned models that have a voxel file; warns once with the ids of those that do not."""
    models = read_text2shape_captions(root / "test_captions.csv")
    missing = [mid for mid in models if not text2shape_voxel_path(mid, root).is_file()]
    if missing:
        warnings.warn(
            MissingShapeWarning(f"{len(missing)} captioned Text2Shape models have no voxel file: {missing}"),
            stacklevel=3,
        )
    return [model for mid, model in models.items() if mid not in missing]


def _model_sample(model: CaptionedModel, root: Path, config: ShapeSampleConfig | None, seed: int) -> ShapeSample:
    mesh = read_nrrd_voxels(text2shape_voxel_path(model.model_id, root)).to_mesh()
    shape_seed = zlib.crc32(model.model_id.encode()) ^ seed
    return make_shape_sample(model.model_id, model.category, mesh, model.captions, config, shape_seed)


def load_text2shape(
    root: str | Path | None = None, config: ShapeSampleConfig | None = None, seed: int = 0
) -> list[ShapeSample]:
    """Every captioned Text2Shape model whose voxel file exists, as a :class:`ShapeSample`.

    Missing shapes are reported in one :class:`MissingShapeWarning` that lists their ids.
    """
    root = Path(root) if root is not None else data_path(TEXT2SHAPE_DIR)
    return [_model_sample(model, root, config, seed) for model in _captioned_models(root)]


def text2shape_dataset(
    root: str | Path | None = None,
    config: ShapeSampleConfig | None = None,
    seed: int = 0,
    *,
    rebuild: bool = False,
    progress: bool = True,
) -> ShapeDataset:
    """The Text2Shape shapes as a cached :class:`ShapeDataset` (every shape in split ``test``)."""
    root = Path(root) if root is not None else data_path(TEXT2SHAPE_DIR)
    config = config or ShapeSampleConfig()
    models = _captioned_models(root)
    sources = sorted([root / "test_captions.csv"] + [text2shape_voxel_path(m.model_id, root) for m in models])
    params = {
        "root": str(root.resolve()),
        "seed": seed,
        "sample": config.to_dict(),
        "sources": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sources],
    }
    return cached_shape_dataset(
        "text2shape",
        params,
        lambda index: _model_sample(models[index], root, config, seed),
        ["test"] * len(models),
        rebuild=rebuild,
        progress=progress,
    )

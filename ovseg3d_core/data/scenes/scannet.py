"""A ScanNet v2 scan with per-vertex semantic labels (raw, NYU40, ScanNet20, ScanNet200).

Inputs are the files ScanNet ships per scene: the ``_vh_clean_2.ply`` mesh, its over-segmentation
(``.segs.json``), the instance aggregation (``.aggregation.json``) and the label table
``scannetv2-labels.combined.tsv`` that maps an aggregation label (``raw_category``) to the ScanNet
raw id and NYU40 id. Benchmark class ids are positions in :data:`SCANNET20_CLASSES` /
:data:`SCANNET200_CLASSES`; unlabeled vertices and classes outside a benchmark get
:data:`IGNORE_INDEX` (255, the value OpenScene and mmdetection3d use).
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovseg3d_core.data.root import DataNotFoundError, data_path
from ovseg3d_core.data.scenes.labeled_scan import IGNORE_LABEL, LabeledScan, ScanFormatError

IGNORE_INDEX = 255

# ScanNet v2 benchmark: 20 classes, defined by NYU40 ids (ScanNet BenchmarkScripts VALID_CLASS_IDS).
SCANNET20_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET20_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)  # fmt: skip
# Classes excluded by foreground metrics (wall, floor, ceiling); ScanNet20 has no ceiling class.
BACKGROUND_CLASS_NAMES = ("wall", "floor", "ceiling")

# ScanNet200 benchmark: ScanNet raw ids (the table's ``id`` column) and their names, in benchmark
# order (ScanNet BenchmarkScripts/ScanNet200/scannet200_constants.py).
SCANNET200_RAW_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 26, 27, 28, 29, 31,
    32, 33, 34, 35, 36, 38, 39, 40, 41, 42, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 57, 58, 59,
    62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 82, 84, 86, 87, 88, 89,
    90, 93, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 110, 112, 115, 116, 118, 120,
    121, 122, 125, 128, 130, 131, 132, 134, 136, 138, 139, 140, 141, 145, 148, 154, 155, 156, 157, 159,
    161, 163, 165, 166, 168, 169, 170, 177, 180, 185, 188, 191, 193, 195, 202, 208, 213, 214, 221, 229,
    230, 232, 233, 242, 250, 261, 264, 276, 283, 286, 300, 304, 312, 323, 325, 331, 342, 356, 370, 392,
    395, 399, 408, 417, 488, 540, 562, 570, 572, 581, 609, 748, 776, 1156, 1163, 1164, 1165, 1166, 1167,
    1168, 1169, 1170, 1171, 1172, 1173, 1174, 1175, 1176, 1178, 1179, 1180, 1181, 1182, 1183, 1184, 1185,
    1186, 1187, 1188, 1189, 1190, 1191,
)  # fmt: skip
SCANNET200_CLASSES = (
    "wall", "chair", "floor", "table", "door", "couch", "cabinet", "shelf", "desk", "office chair", "bed",
    "pillow", "sink", "picture", "window", "toilet", "bookshelf", "monitor", "curtain", "book", "armchair",
    "coffee table", "box", "refrigerator", "lamp", "kitchen cabinet", "towel", "clothes", "tv",
    "nightstand", "counter", "dresser", "stool", "cushion", "plant", "ceiling", "bathtub", "end table",
    "dining table", "keyboard", "bag", "backpack", "toilet paper", "printer", "tv stand", "whiteboard",
    "blanket", "shower curtain", "trash can", "closet", "stairs", "microwave", "stove", "shoe",
    "computer tower", "bottle", "bin", "ottoman", "bench", "board", "washing machine", "mirror", "copier",
    "basket", "sofa chair", "file cabinet", "fan", "laptop", "shower", "paper", "person",
    "paper towel dispenser", "oven", "blinds", "rack", "plate", "blackboard", "piano", "suitcase", "rail",
    "radiator", "recycling bin", "container", "wardrobe", "soap dispenser", "telephone", "bucket", "clock",
    "stand", "light", "laundry basket", "pipe", "clothes dryer", "guitar", "toilet paper holder", "seat",
    "speaker", "column", "bicycle", "ladder", "bathroom stall", "shower wall", "cup", "jacket",
    "storage bin", "coffee maker", "dishwasher", "paper towel roll", "machine", "mat", "windowsill", "bar",
    "toaster", "bulletin board", "ironing board", "fireplace", "soap dish", "kitchen counter", "doorframe",
    "toilet paper dispenser", "mini fridge", "fire extinguisher", "ball", "hat", "shower curtain rod",
    "water cooler", "paper cutter", "tray", "shower door", "pillar", "ledge", "toaster oven", "mouse",
    "toilet seat cover dispenser", "furniture", "cart", "storage container", "scale", "tissue box",
    "light switch", "crate", "power outlet", "decoration", "sign", "projector", "closet door",
    "vacuum cleaner", "candle", "plunger", "stuffed animal", "headphones", "dish rack", "broom",
    "guitar case", "range hood", "dustpan", "hair dryer", "water bottle", "handicap bar", "purse", "vent",
    "shower floor", "water pitcher", "mailbox", "bowl", "paper bag", "alarm clock", "music stand",
    "projector screen", "divider", "laundry detergent", "bathroom counter", "object", "bathroom vanity",
    "closet wall", "laundry hamper", "bathroom stall door", "ceiling light", "trash bin", "dumbbell",
    "stair rail", "tube", "bathroom cabinet", "cd case", "closet rod", "coffee kettle", "structure",
    "shower head", "keyboard piano", "case of water bottles", "coat rack", "storage organizer",
    "folded chair", "fire alarm", "power strip", "calendar", "poster", "potted plant", "luggage", "mattress",
)  # fmt: skip

LABEL_TABLE_COLUMNS = 17


class ScanNetFormatError(ScanFormatError):
    """A ScanNet mesh, segmentation, aggregation or label table is malformed or inconsistent."""


def background_class_ids(class_names: tuple[str, ...]) -> tuple[int, ...]:
    """Indices of wall/floor/ceiling in ``class_names`` (the classes foreground metrics leave out)."""
    return tuple(i for i, name in enumerate(class_names) if name in BACKGROUND_CLASS_NAMES)


SCANNET20_BACKGROUND_IDS = background_class_ids(SCANNET20_CLASSES)
SCANNET200_BACKGROUND_IDS = background_class_ids(SCANNET200_CLASSES)


@dataclass(frozen=True)
class LabelTableRow:
    """One row of ``scannetv2-labels.combined.tsv`` (fields stripped; missing trailing fields empty)."""

    raw_id: int
    raw_category: str
    category: str
    nyu40_id: int
    nyu40_class: str
    mpcat40: str


class ScanNetLabelTable:
    """``raw_category`` -> :class:`LabelTableRow`, tolerant of the quirks of circulating copies.

    Rows with fewer than 17 fields (this copy's ``furnace`` row lacks the two mpcat40 columns) are
    padded with empty fields; every field is stripped, so ``"wardrobe "`` reads as ``"wardrobe"``.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else data_path("scannet", "scannetv2-labels.combined.tsv")
        if not self.path.is_file():
            raise DataNotFoundError(f"label table {self.path} not found")
        with self.path.open(newline="", encoding="utf-8") as handle:
            records = list(csv.reader(handle, delimiter="\t"))
        if not records:
            raise ScanNetFormatError(f"{self.path} is empty")
        header = [field.strip() for field in records[0]]
        try:
            column = {name: header.index(name) for name in ("id", "raw_category", "category", "nyu40id")}
        except ValueError as error:
            raise ScanNetFormatError(f"{self.path}: header lacks a required column: {error}") from error
        optional = {name: header.index(name) if name in header else None for name in ("nyu40class", "mpcat40")}
        self.rows: dict[str, LabelTableRow] = {}
        self.short_rows: list[int] = []
        for line_number, record in enumerate(records[1:], start=2):
            if not any(field.strip() for field in record):
                continue
            if len(record) < len(header):
                self.short_rows.append(line_number)
                record = record + [""] * (len(header) - len(record))
            fields = [field.strip() for field in record]
            try:
                row = LabelTableRow(
                    raw_id=int(fields[column["id"]]),
                    raw_category=fields[column["raw_category"]],
                    category=fields[column["category"]],
                    nyu40_id=int(fields[column["nyu40id"]] or 0),
                    nyu40_class=fields[optional["nyu40class"]] if optional["nyu40class"] is not None else "",
                    mpcat40=fields[optional["mpcat40"]] if optional["mpcat40"] is not None else "",
                )
            except (ValueError, IndexError) as error:
                raise ScanNetFormatError(f"{self.path}:{line_number}: bad id field: {error}") from error
            self.rows.setdefault(row.raw_category, row)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, raw_category: str) -> bool:
        return raw_category.strip() in self.rows

    def __getitem__(self, raw_category: str) -> LabelTableRow:
        try:
            return self.rows[raw_category.strip()]
        except KeyError:
            raise KeyError(f"label {raw_category!r} is not a raw_category of {self.path}") from None

    def category_of_raw_id(self, raw_id: int) -> str | None:
        """The ``category`` of the first row with this ScanNet raw id, if any."""
        return next((row.category for row in self.rows.values() if row.raw_id == raw_id), None)


def _index_lookup(ids: tuple[int, ...], size: int) -> np.ndarray:
    """Dense array mapping an id in [0, size) to its position in ``ids``, else IGNORE_INDEX."""
    lookup = np.full(size, IGNORE_INDEX, dtype=np.int64)
    lookup[np.asarray(ids)] = np.arange(len(ids))
    return lookup


@dataclass
class ScanNetScan:
    """A labeled ScanNet mesh; every per-vertex array has one entry per mesh vertex.

    ``raw_labels`` are aggregation labels ("" when unlabeled), ``raw_ids`` and ``nyu40_ids`` are 0
    when unlabeled, ``scannet20_ids`` / ``scannet200_ids`` are benchmark class indices or
    :data:`IGNORE_INDEX`, ``instance_ids`` index ``instance_labels`` or are -1.
    """

    name: str
    vertices: np.ndarray
    colors: np.ndarray
    triangles: np.ndarray
    segment_ids: np.ndarray
    instance_ids: np.ndarray
    instance_labels: list[str]
    raw_labels: np.ndarray
    raw_ids: np.ndarray
    nyu40_ids: np.ndarray
    scannet20_ids: np.ndarray
    scannet200_ids: np.ndarray

    def to_open3d(self):
        """The mesh as an ``open3d.geometry.TriangleMesh`` with vertex colours in [0, 1]."""
        import open3d as o3d

        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(self.vertices.astype(np.float64)),
            o3d.utility.Vector3iVector(self.triangles.astype(np.int32)),
        )
        mesh.vertex_colors = o3d.utility.Vector3dVector(self.colors.astype(np.float64) / 255.0)
        return mesh

    def vertex_normals(self) -> np.ndarray:
        """Unit float32 normals: the area-weighted sum of the normals of the triangles at each vertex.

        Pointcept's ScanNet preprocessing derives ``normal.npy`` this way
        (pointcept/datasets/preprocessing/scannet/preprocess_scannet.py, ``vertex_normal``), so the
        two layouts carry the same normals. A vertex on no triangle gets a zero vector, as there.
        """
        corners = self.vertices.astype(np.float64)[self.triangles]
        # The cross product's length is twice the triangle's area: summing it weights by area.
        weighted = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        per_corner = np.repeat(weighted, 3, axis=0)
        vertex_ids = self.triangles.reshape(-1)
        sums = np.stack(
            [np.bincount(vertex_ids, per_corner[:, axis], minlength=len(self.vertices)) for axis in range(3)], axis=1
        )
        lengths = np.linalg.norm(sums, axis=1, keepdims=True)
        return np.divide(sums, lengths, out=np.zeros_like(sums), where=lengths > 0).astype(np.float32)

    def to_labeled_scan(self) -> LabeledScan:
        """This scan as the layout-independent :class:`LabeledScan`, with its mesh faces.

        The labels are derived as Pointcept's ScanNet preprocessing derives them (see
        :meth:`vertex_normals` for the file): ScanNet20 from the label table's NYU40 id, ScanNet200
        from its raw ``id``, a segment in several groups keeps the last, and unlabeled points or
        classes outside a benchmark get -1 (here :data:`IGNORE_INDEX` becomes -1). Instance ids are
        positions in ``segGroups``, which equal the groups' object ``id`` (what Pointcept stores) in
        ScanNet's aggregation files.
        """
        return LabeledScan(
            name=self.name,
            points=self.vertices.astype(np.float32),
            colors=self.colors.astype(np.uint8),
            normals=self.vertex_normals(),
            segment20=np.where(self.scannet20_ids == IGNORE_INDEX, IGNORE_LABEL, self.scannet20_ids),
            segment200=np.where(self.scannet200_ids == IGNORE_INDEX, IGNORE_LABEL, self.scannet200_ids),
            instance=self.instance_ids.astype(np.int64),
            faces=self.triangles.astype(np.int32),
        )


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import open3d as o3d

    if not path.is_file():
        raise DataNotFoundError(f"mesh {path} not found")
    mesh = o3d.io.read_triangle_mesh(str(path))
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    if len(vertices) == 0 or len(mesh.triangles) == 0:
        raise ScanNetFormatError(f"{path} holds no triangle mesh")
    if not mesh.has_vertex_colors():
        raise ScanNetFormatError(f"{path} has no vertex colours")
    colors = np.clip(np.rint(np.asarray(mesh.vertex_colors) * 255.0), 0, 255).astype(np.uint8)
    return vertices, colors, np.asarray(mesh.triangles, dtype=np.int32)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ScanNetFormatError(f"{path} is not valid JSON: {error}") from error


def load_scannet_scan(
    scene_dir: Path | None = None, label_table: ScanNetLabelTable | Path | None = None
) -> ScanNetScan:
    """Load ``<scene>_vh_clean_2.ply`` with its segments, aggregation and the label table.

    Defaults to the sample ``scannet/scene0000_00`` and the table beside it. A segment claimed by
    several instances keeps the last one (ScanNet's own export order); an aggregation label missing
    from the table warns and leaves its vertices without NYU40/benchmark ids.
    """
    scene_dir = Path(scene_dir) if scene_dir is not None else data_path("scannet", "scene0000_00")
    name = scene_dir.name
    if not isinstance(label_table, ScanNetLabelTable):
        table_path = label_table if label_table is not None else scene_dir.parent / "scannetv2-labels.combined.tsv"
        label_table = ScanNetLabelTable(Path(table_path))
    vertices, colors, triangles = _read_mesh(scene_dir / f"{name}_vh_clean_2.ply")

    segs_path = next(iter(sorted(scene_dir.glob(f"{name}_vh_clean_2.*.segs.json"))), None)
    if segs_path is None:
        raise DataNotFoundError(f"no {name}_vh_clean_2.*.segs.json in {scene_dir}")
    segment_ids = np.asarray(_read_json(segs_path).get("segIndices", []), dtype=np.int64)
    if len(segment_ids) != len(vertices):
        raise ScanNetFormatError(f"{segs_path} has {len(segment_ids)} segment ids for {len(vertices)} vertices")

    aggregation_path = scene_dir / f"{name}_vh_clean.aggregation.json"
    groups = _read_json(aggregation_path).get("segGroups")
    if not isinstance(groups, list):
        raise ScanNetFormatError(f"{aggregation_path} has no segGroups list")
    instance_of_segment: dict[int, int] = {}
    instance_labels: list[str] = []
    for instance, group in enumerate(groups):
        instance_labels.append(str(group.get("label", "")).strip())
        for segment in group.get("segments", []):
            instance_of_segment[int(segment)] = instance
    unique_segments, inverse = np.unique(segment_ids, return_inverse=True)
    instance_ids = np.array([instance_of_segment.get(int(s), -1) for s in unique_segments], dtype=np.int64)[inverse]

    raw_id_of_instance = np.zeros(len(groups) + 1, dtype=np.int64)  # last slot: unlabeled (-1)
    nyu40_of_instance = np.zeros(len(groups) + 1, dtype=np.int64)
    for instance, label in enumerate(instance_labels):
        if label in label_table:
            row = label_table[label]
            raw_id_of_instance[instance], nyu40_of_instance[instance] = row.raw_id, row.nyu40_id
        else:
            warnings.warn(
                f"{name}: label {label!r} is not in {label_table.path}; its vertices stay unlabeled", stacklevel=2
            )
    raw_ids = raw_id_of_instance[instance_ids]
    nyu40_ids = nyu40_of_instance[instance_ids]
    raw_labels = np.array([*instance_labels, ""], dtype=object)[instance_ids]

    scannet20 = _index_lookup(SCANNET20_NYU40_IDS, 41)[np.clip(nyu40_ids, 0, 40)]
    scannet200_lookup = _index_lookup(SCANNET200_RAW_IDS, max(SCANNET200_RAW_IDS) + 1)
    in_range = (raw_ids > 0) & (raw_ids < len(scannet200_lookup))
    scannet200 = np.full(len(raw_ids), IGNORE_INDEX, dtype=np.int64)
    scannet200[in_range] = scannet200_lookup[raw_ids[in_range]]
    return ScanNetScan(
        name=name,
        vertices=vertices,
        colors=colors,
        triangles=triangles,
        segment_ids=segment_ids,
        instance_ids=instance_ids,
        instance_labels=instance_labels,
        raw_labels=raw_labels,
        raw_ids=raw_ids,
        nyu40_ids=nyu40_ids,
        scannet20_ids=scannet20,
        scannet200_ids=scannet200,
    )

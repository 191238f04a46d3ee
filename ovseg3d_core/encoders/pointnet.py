"""PointNet trained on ModelNet40 (learning3d's ``best_ptnet_model.t7`` / ``best_model.t7``, shipped in
the shared data): the frozen point encoder of retrieval, of zero-shot classification and of the
``pointnet_patch`` distillation teacher. Layer names match learning3d exactly so the checkpoints
load strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ovseg3d_core.data.root import data_path
from ovseg3d_core.encoders.base import EncoderError, WeightsNotFoundError

MODELNET40_CLASSES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink",
    "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # fmt: skip
"""ModelNet40 class names in the sorted order the learning3d classifier's 40 outputs use."""

POINTNET_DIM = 1024


def default_pointnet_path(classifier: bool = False) -> Path:
    name = "best_model.t7" if classifier else "best_ptnet_model.t7"
    return data_path("weights", "pointnet_modelnet40", name)


class PointNetFeatures(nn.Module):
    """learning3d ``PointNet(emb_dims=1024, use_bn=True)``: five shared MLPs (1x1 convs) with BN + ReLU."""

    def __init__(self, emb_dims: int = POINTNET_DIM) -> None:
        super().__init__()
        widths = [3, 64, 64, 64, 128, emb_dims]
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv1d(widths[i], widths[i + 1], 1))
            setattr(self, f"bn{i + 1}", nn.BatchNorm1d(widths[i + 1]))
        self.emb_dims = emb_dims

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """B x N x 3 points -> B x N x emb_dims per-point features (max over N is the global feature)."""
        if points.ndim != 3 or points.shape[-1] != 3:
            raise EncoderError(f"PointNet expects B x N x 3 points, got {tuple(points.shape)}")
        x = points.transpose(1, 2)
        for i in range(1, 6):
            x = torch.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        return x.transpose(1, 2)


class PointNetClassifier(nn.Module):
    """learning3d ``Classifier(PointNet)``: max-pooled global feature -> 512 -> 256 -> 40 ModelNet40 logits."""

    def __init__(self, num_classes: int = len(MODELNET40_CLASSES)) -> None:
        super().__init__()
        self.feature_model = PointNetFeatures()
        self.linear1 = nn.Linear(POINTNET_DIM, 512)
        self.bn1 = nn.BatchNorm1d(512)
        self.linear2 = nn.Linear(512, 256)
        self.bn2 = nn.BatchNorm1d(256)
        self.linear3 = nn.Linear(256, num_classes)

    def head(self, global_feature: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.linear1(global_feature)))
        x = torch.relu(self.bn2(self.linear2(x)))
        return self.linear3(x)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_model(points).amax(dim=1))


def _load_strict(module: nn.Module, path: Path) -> nn.Module:
    if not path.is_file():
        raise WeightsNotFoundError(f"PointNet checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, KeyError) as exc:
        raise WeightsNotFoundError(f"{path} is not a learning3d {type(module).__name__} state dict: {exc}") from exc
    return module.eval().requires_grad_(False)


def load_pointnet_features(path: str | Path | None = None) -> PointNetFeatures:
    """The frozen ModelNet40 PointNet feature extractor, loaded strictly, in eval mode."""
    return _load_strict(PointNetFeatures(), Path(path) if path else default_pointnet_path())


def load_pointnet_classifier(path: str | Path | None = None) -> PointNetClassifier:
    """The full ModelNet40 classifier (``best_model.t7``), loaded strictly, in eval mode."""
    return _load_strict(PointNetClassifier(), Path(path) if path else default_pointnet_path(classifier=True))

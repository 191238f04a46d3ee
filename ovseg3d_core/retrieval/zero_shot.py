"""Zero-shot text<->shape baseline from the frozen encoders alone (no training on shape-text pairs).

The frozen encoders live in different spaces (PointNet 1024-d, EfficientNet 1280-d, MiniLM
384-d), so their raw features cannot be compared. What they do share is class vocabularies:
EfficientNet predicts ImageNet classes per view and PointNet ModelNet40 classes per cloud. The
bridge maps each shape to the probability-weighted MiniLM embedding of those class names, a
vector in the caption space. This is the honest "no training" reference the trained adapters
must beat.
"""

from __future__ import annotations

import numpy as np

import ovseg3d_core.encoders.torchvision_compat  # noqa: F401  (before torchvision, on CPU-only torch)
from ovseg3d_core.encoders.base import l2_normalise
from ovseg3d_core.encoders.pointnet import MODELNET40_CLASSES, load_pointnet_classifier
from ovseg3d_core.retrieval.feature_cache import ShapeFeatures
from ovseg3d_core.retrieval.frozen_encoders import ViewEncoder


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names (from torchvision's weight metadata, no download)."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class ClassNameBridge:
    """Shape features -> caption-space (MiniLM) vectors via predicted class names of views and points."""

    def __init__(self, text_encoder, view_encoder: ViewEncoder | None = None, pointnet_weights: str | None = None):
        import torch

        self._torch = torch
        self.view_encoder = view_encoder or ViewEncoder()
        self.classifier = load_pointnet_classifier(pointnet_weights)
        self.imagenet_text = text_encoder.encode([f"a {name}" for name in imagenet_class_names()])
        self.modelnet_text = text_encoder.encode([f"a {name.replace('_', ' ')}" for name in MODELNET40_CLASSES])

    def embed_shapes(self, features: ShapeFeatures, n_views: int | None = None) -> np.ndarray:
        """S x 384 unit vectors: mean of the view-class and point-class name embeddings."""
        torch = self._torch
        views = features.views if n_views is None else features.views[:, :n_views]
        view_probs = _softmax(self.view_encoder.imagenet_logits(views.reshape(-1, views.shape[-1])))
        view_vec = (view_probs @ self.imagenet_text).reshape(len(features), -1, self.imagenet_text.shape[1]).mean(1)
        global_feature = torch.from_numpy(features.point_tokens.max(axis=1).astype(np.float32))
        with torch.inference_mode():
            point_probs = _softmax(self.classifier.head(global_feature).numpy())
        point_vec = point_probs @ self.modelnet_text
        return l2_normalise(l2_normalise(view_vec) + l2_normalise(point_vec))

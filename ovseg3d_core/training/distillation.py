"""Label-free distillation of teacher affinities into the student (DESIGN §3, the official recipe).

Per scene: random anchors; each anchor's positive is the point most similar to it in teacher
space anywhere in the scene (itself excluded); its negatives are the points least similar to it
globally plus the least similar among its nearest spatial neighbours (hard *local* negatives teach
the student where boundaries are); the student is trained with InfoNCE over (positive, negatives).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ovseg3d_core.config import Config, setting
from ovseg3d_core.geometry import knn


class DistillationError(ValueError):
    """A scene cannot be sampled (too few points, non-finite teacher embeddings, shape mismatch)."""


@dataclass
class DistillationConfig(Config):
    """Sampler and loss constants of GeoPurify's contrastive distillation."""

    anchors: int = setting(4096, "random anchor points per scene and step", low=1)
    global_negatives: int = setting(48, "least teacher-similar points of the whole scene per anchor", low=0)
    local_negatives: int = setting(15, "least teacher-similar points among the anchor's spatial neighbours", low=0)
    local_neighbours: int = setting(96, "spatial neighbourhood size for the local negatives", low=1)
    temperature: float = setting(0.07, "InfoNCE temperature", low=1e-4, high=10.0)
    chunk: int = setting(512, "anchors per similarity block (bounds memory to chunk x N floats)", low=1)

    def validate(self) -> None:
        super().validate()
        if self.local_negatives > self.local_neighbours:
            raise DistillationError(
                f"local_negatives {self.local_negatives} exceeds local_neighbours {self.local_neighbours}"
            )
        if self.global_negatives + self.local_negatives < 1:
            raise DistillationError("InfoNCE needs at least one negative per anchor")

    @property
    def negatives(self) -> int:
        return self.global_negatives + self.local_negatives

    @property
    def min_points(self) -> int:
        """Smallest scene the sampler accepts: an anchor, its full neighbourhood, and enough global negatives."""
        return max(self.local_neighbours, self.global_negatives + 1) + 1


@dataclass(frozen=True)
class ContrastiveSample:
    """Indices into the scene's points: ``anchors`` (A), ``positives`` (A), ``negatives`` (A x 63)."""

    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray


def sample_contrastive(
    teacher_embeddings: np.ndarray,
    points: np.ndarray,
    config: DistillationConfig | None = None,
    rng: np.random.Generator | None = None,
) -> ContrastiveSample:
    """Draw anchors and their teacher-defined positive and negatives (cosine similarity in teacher space)."""
    cfg = config or DistillationConfig()
    rng = rng or np.random.default_rng()
    teacher = np.asarray(teacher_embeddings, dtype=np.float32)
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise DistillationError(f"points must be N x 3, got {points.shape}")
    if teacher.ndim != 2 or len(teacher) != n:
        raise DistillationError(f"teacher embeddings must be {n} x E, got {teacher.shape}")
    if n < cfg.min_points:
        raise DistillationError(
            f"scene has {n} points; the sampler needs at least {cfg.min_points} "
            f"({cfg.local_neighbours} spatial neighbours and {cfg.global_negatives} global negatives per anchor)"
        )
    if not (np.isfinite(teacher).all() and np.isfinite(points).all()):
        raise DistillationError("teacher embeddings or points contain NaN/inf")

    anchors = np.sort(rng.choice(n, size=min(cfg.anchors, n), replace=False))
    unit = torch.nn.functional.normalize(torch.from_numpy(teacher), dim=1)
    _, neighbours = knn(points, cfg.local_neighbours + 1, queries=points[anchors])
    neighbours = _drop_self(neighbours, anchors, cfg.local_neighbours)

    positives = np.empty(len(anchors), dtype=np.int64)
    negatives = np.empty((len(anchors), cfg.negatives), dtype=np.int64)
    rows = torch.arange(cfg.chunk)
    for start in range(0, len(anchors), cfg.chunk):
        block = torch.from_numpy(anchors[start : start + cfg.chunk])
        sim = unit[block] @ unit.T
        r = rows[: len(block)]
        # Self-similarity is 1 (or 0 for an all-zero teacher row): mask it out of both searches.
        sim[r, block] = float("inf")
        negatives[start : start + len(block), : cfg.global_negatives] = sim.topk(
            cfg.global_negatives, dim=1, largest=False
        ).indices.numpy()
        sim[r, block] = -float("inf")
        positives[start : start + len(block)] = sim.argmax(dim=1).numpy()
        if cfg.local_negatives:
            local = torch.from_numpy(neighbours[start : start + len(block)])
            local_sim = sim.gather(1, local)
            pick = local_sim.topk(cfg.local_negatives, dim=1, largest=False).indices
            negatives[start : start + len(block), cfg.global_negatives :] = local.gather(1, pick).numpy()
    return ContrastiveSample(anchors=anchors, positives=positives, negatives=negatives)


def _drop_self(neighbours: np.ndarray, anchors: np.ndarray, k: int) -> np.ndarray:
    """Remove each anchor from its own k+1 neighbour row (duplicates may put it anywhere, or nowhere)."""
    own = neighbours == anchors[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(len(anchors)), drop] = False
    return neighbours[keep].reshape(len(anchors), k)


def info_nce_loss(embeddings: torch.Tensor, sample: ContrastiveSample, temperature: float = 0.07) -> torch.Tensor:
    """InfoNCE over student embeddings (N x C, unit rows): the positive is class 0 among 1 + negatives."""
    anchors = torch.as_tensor(sample.anchors, device=embeddings.device)
    candidates = torch.cat(
        [
            torch.as_tensor(sample.positives, device=embeddings.device)[:, None],
            torch.as_tensor(sample.negatives, device=embeddings.device),
        ],
        dim=1,
    )
    logits = torch.einsum("ac,akc->ak", embeddings[anchors], embeddings[candidates]) / temperature
    target = torch.zeros(len(anchors), dtype=torch.long, device=embeddings.device)
    return torch.nn.functional.cross_entropy(logits, target)


def teacher_agreement(embeddings: np.ndarray, sample: ContrastiveSample) -> float:
    """Fraction of anchors whose student similarity ranks the positive above every negative (a training metric)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    a = emb[sample.anchors]
    pos = np.einsum("ac,ac->a", a, emb[sample.positives])
    neg = np.einsum("ac,akc->ak", a, emb[sample.negatives])
    return float((pos[:, None] > neg).all(axis=1).mean())

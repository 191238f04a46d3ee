"""Text<->shape retrieval metrics as the Text2Shape reference evaluation computes them.

- RR@k: fraction of queries whose *first* relevant item ranks within the top k.
- NDCG@5: binary relevance; DCG = sum over the top 5 of rel_r / log2(r + 2) (r from 0); the ideal
  DCG puts min(#relevant, 5) relevant items first. Text->shape has one relevant shape per caption;
  shape->text has all captions of that shape.
- The gallery holds each shape once: embeddings repeated per caption (one row per pair, as a data
  loader yields them) are de-duplicated by shape id before ranking.
- Ties rank pessimistically: an item tied in score with an irrelevant item ranks after it. A stable
  sort would rank whichever came first in the gallery first, which flatters items that happen to
  come early (and a collapsed model scoring everything equally); this way the result never
  depends on the input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class RetrievalMetricError(ValueError):
    """Inputs to the retrieval metrics are inconsistent (shapes, ids or relevance)."""


@dataclass(frozen=True)
class RetrievalScores:
    """Both directions, each metric a fraction in [0, 1]."""

    s2t_rr1: float
    s2t_rr5: float
    s2t_ndcg5: float
    t2s_rr1: float
    t2s_rr5: float
    t2s_ndcg5: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def _ranks_of_relevant(scores: np.ndarray, relevant: np.ndarray) -> list[np.ndarray]:
    """For each query row, the 0-based ranks of its relevant columns under descending score.

    Within equal scores irrelevant columns come first (pessimistic ties); tied columns of equal
    relevance are interchangeable for every metric here, so the ranks do not depend on column order.
    """
    order = np.lexsort((relevant, -scores), axis=1)
    rank_of = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    rank_of[rows, order] = np.arange(scores.shape[1])[None, :]
    return [np.sort(rank_of[i, relevant[i]]) for i in range(scores.shape[0])]


def ranking_metrics(scores: np.ndarray, relevant: np.ndarray, k_values: Sequence[int] = (1, 5)) -> dict[str, float]:
    """RR@k for ``k_values`` and NDCG@5 for a Q x G score matrix and a Q x G boolean relevance mask."""
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise RetrievalMetricError(f"scores {scores.shape} and relevance {relevant.shape} must be equal Q x G")
    if scores.shape[0] == 0:
        raise RetrievalMetricError("no queries to evaluate")
    if not relevant.any(axis=1).all():
        raise RetrievalMetricError("every query needs at least one relevant gallery item")
    if not np.isfinite(scores).all():
        raise RetrievalMetricError("scores contain NaN or inf")
    ranks = _ranks_of_relevant(scores, relevant)
    first = np.array([r[0] for r in ranks])
    out = {f"rr{k}": float(np.mean(first < k)) for k in k_values}
    discounts = 1.0 / np.log2(np.arange(5) + 2.0)
    ndcg = []
    for r in ranks:
        dcg = discounts[r[r < 5]].sum()
        ideal = discounts[: min(len(r), 5)].sum()
        ndcg.append(dcg / ideal)
    out["ndcg5"] = float(np.mean(ndcg))
    return out


def retrieval_scores(
    text_emb: np.ndarray, text_shape_ids: Sequence[str], shape_emb: np.ndarray, shape_ids: Sequence[str]
) -> RetrievalScores:
    """Both directions from caption embeddings (one per caption) and shape embeddings.

    ``text_shape_ids[i]`` is the shape caption i describes. ``shape_ids`` may repeat (one row per
    caption pair); the first row of each id is kept, the rest dropped from the gallery. Shapes
    without captions stay in the gallery as distractors but are not shape->text queries.
    Embeddings are compared by cosine similarity.
    """
    text_emb = np.asarray(text_emb, dtype=np.float64)
    shape_emb = np.asarray(shape_emb, dtype=np.float64)
    if text_emb.ndim != 2 or shape_emb.ndim != 2 or text_emb.shape[1] != shape_emb.shape[1]:
        raise RetrievalMetricError(f"embeddings must be 2-D with equal width, got {text_emb.shape}, {shape_emb.shape}")
    if len(text_shape_ids) != len(text_emb) or len(shape_ids) != len(shape_emb):
        raise RetrievalMetricError("each embedding row needs exactly one id")
    _, first_rows = np.unique(np.asarray(shape_ids, dtype=object), return_index=True)
    keep = np.sort(first_rows)
    gallery_ids = [shape_ids[i] for i in keep]
    column = {sid: j for j, sid in enumerate(gallery_ids)}
    missing = sorted({sid for sid in text_shape_ids if sid not in column})
    if missing:
        raise RetrievalMetricError(f"captions refer to shapes not in the gallery: {missing[:5]}")
    gallery = shape_emb[keep]
    gallery = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    texts = text_emb / np.maximum(np.linalg.norm(text_emb, axis=1, keepdims=True), 1e-12)
    sim = texts @ gallery.T
    relevant = np.zeros(sim.shape, dtype=bool)
    relevant[np.arange(len(texts)), [column[s] for s in text_shape_ids]] = True
    t2s = ranking_metrics(sim, relevant)
    queried = relevant.any(axis=0)
    s2t = ranking_metrics(sim.T[queried], relevant.T[queried])
    return RetrievalScores(
        s2t_rr1=s2t["rr1"],
        s2t_rr5=s2t["rr5"],
        s2t_ndcg5=s2t["ndcg5"],
        t2s_rr1=t2s["rr1"],
        t2s_rr5=t2s["rr5"],
        t2s_ndcg5=t2s["ndcg5"],
    )

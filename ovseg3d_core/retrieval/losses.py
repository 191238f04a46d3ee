"""Retrieval losses of the tri-modal paper: HN-NCE (hard-negative InfoNCE) and the reconstruction terms.

HN-NCE (Radenovic et al., CVPR 2023) re-weights each in-batch negative by
``w_ij = (n - 1) exp(beta s_ij / tau) / sum_{k != i} exp(beta s_ik / tau)`` so the negatives most
similar to the anchor count more; with ``beta = 0`` every weight is 1 and it is plain InfoNCE.
The weights act as importance weights and are not differentiated through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _weighted_nce_rows(logits: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-row ``-log(e^{l_ii} / (e^{l_ii} + sum_{j != i} w_ij e^{l_ij}))`` for a square logit matrix."""
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    negatives = logits.masked_fill(eye, float("-inf"))
    if beta == 0.0 or n < 2:
        log_weights = torch.zeros_like(logits)
    else:
        scaled = (beta * negatives).detach()
        log_weights = torch.log(torch.tensor(float(n - 1), dtype=logits.dtype)) + scaled - scaled.logsumexp(1, True)
    positive = logits.diagonal()
    denominator = torch.cat([positive[:, None], (negatives + log_weights).masked_fill(eye, float("-inf"))], dim=1)
    return denominator.logsumexp(1) - positive


def hn_nce_loss(
    shape_emb: torch.Tensor, text_emb: torch.Tensor, temperature: torch.Tensor, beta: float
) -> torch.Tensor:
    """Symmetric shape<->text HN-NCE over a batch of matching pairs (row i of each is one pair).

    Embeddings are compared by cosine similarity; the result is the mean over pairs of the
    shape->text and text->shape terms (the paper sums; the mean keeps the scale batch-independent).
    """
    if shape_emb.shape != text_emb.shape or shape_emb.ndim != 2:
        raise ValueError(f"expected two B x D embeddings of equal shape, got {shape_emb.shape} and {text_emb.shape}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    sim = F.normalize(shape_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    logits = sim / temperature
    return _weighted_nce_rows(logits, beta).mean() + _weighted_nce_rows(logits.T, beta).mean()


def info_nce_loss(shape_emb: torch.Tensor, text_emb: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE, written independently of :func:`hn_nce_loss` (cross-entropy on the diagonal)."""
    sim = F.normalize(shape_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    logits = sim / temperature
    target = torch.arange(len(logits), device=logits.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def reconstruction_loss(reconstructed: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance ``||target - reconstructed||_2`` between B x D rows (paper eq. 2)."""
    if reconstructed.shape != target.shape:
        raise ValueError(f"reconstruction shape {reconstructed.shape} != target shape {target.shape}")
    return (target - reconstructed).norm(dim=-1).mean()

"""The tri-modal retrieval model (ICME 2025, DESIGN §4) on top of frozen, pre-computed encoder features.

Trainable parts only: MLP adapters that map point tokens (+ a small colour branch), view features
and text features to a common width D; tri-modal reconstruction heads
(I_hat = MLP([mean P; T]), P_hat = MLP([mean I; T])); the context-query-attention 2D-3D fusion;
and the learnable temperature of the contrastive loss. Every ablation of the paper's Table V is a
config switch, so the benchmark trains each variant from the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovseg3d_core.atomic_file import atomic_torch_save
from ovseg3d_core.config import Config, setting
from ovseg3d_core.data.shapes.procedural_dataset import ProceduralDatasetConfig
from ovseg3d_core.encoders.pointnet import POINTNET_DIM
from ovseg3d_core.retrieval.frozen_encoders import TOKEN_GEOMETRY_DIM, VIEW_DIM, FrozenEncoderConfig
from ovseg3d_core.retrieval.losses import hn_nce_loss, reconstruction_loss

CHECKPOINT_FORMAT = "ovseg3d.retrieval_model"
CHECKPOINT_VERSION = 2
"""Version 2 adds :class:`CheckpointInfo`; version 1 files (weights only) still load as models."""


class RetrievalModelError(ValueError):
    """Model inputs or a checkpoint do not match the model configuration."""


@dataclass
class CheckpointInfo(Config):
    """What inference needs beside the weights, so that a checkpoint alone can build its shape database."""

    encoders: FrozenEncoderConfig = setting(
        FrozenEncoderConfig(), "frozen encoders whose features the model was trained on; queries must use the same"
    )
    corpus: ProceduralDatasetConfig = setting(
        ProceduralDatasetConfig(),
        "procedural corpus the model was trained on; its sample settings (points, views) apply to every shape",
    )
    held_out: list[int] = setting([], "corpus shape indices that training never saw, in database order")


@dataclass
class RetrievalConfig(Config):
    """Model and loss settings; paper defaults where CPU training allows (paper: D = 1024)."""

    dim: int = setting(256, "common embedding width D of all adapters", low=8, high=4096)
    hidden: int = setting(512, "hidden width of every MLP", low=8, high=8192)
    colour_dim: int = setting(32, "width of the trainable colour branch appended to each point token", low=0, high=512)
    dropout: float = setting(0.1, "dropout inside the adapters while training", low=0.0, high=0.9)
    point_dim: int = setting(POINTNET_DIM, "frozen point-token feature width (PointNet: 1024)", low=1)
    view_dim: int = setting(VIEW_DIM, "frozen view feature width (EfficientNet-Lite0: 1280)", low=1)
    text_dim: int = setting(384, "frozen text feature width (MiniLM: 384)", low=1)
    n_views: int = setting(6, "views used per shape, evenly spaced on the render ring (paper: 6)", low=1, high=12)
    fusion: str = setting("cqa", "2D-3D fusion: context-query attention or max-pool + MLP", choices=("cqa", "mlp"))
    loss: str = setting("hnnce", "contrastive loss: hard-negative NCE or plain InfoNCE", choices=("hnnce", "infonce"))
    beta: float = setting(0.5, "HN-NCE concentration beta (0 = InfoNCE)", low=0.0, high=10.0)
    temperature_init: float = setting(0.07, "initial contrastive temperature (learnable)", low=1e-3, high=1.0)
    reconstruction: str = setting(
        "tri", "reconstruction: text-guided (tri), single-modality (bi) or none", choices=("tri", "bi", "none")
    )
    reconstruction_weight: float = setting(1.0, "weight of each reconstruction term (paper: 1)", low=0.0, high=100.0)
    reconstruction_stop_gradient: bool = setting(
        False,
        "no reconstruction gradient into the pooled targets (mean P for I->P, mean I for P->I); with it they "
        "can make the task trivial by collapsing towards one shared direction",
    )


def mlp(inputs: int, hidden: int, outputs: int, dropout: float = 0.0) -> nn.Sequential:
    """Two-layer ReLU MLP, the paper's adapter and head building block."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))


def view_subset(total: int, wanted: int) -> np.ndarray:
    """Indices of ``wanted`` views spread evenly over a ring of ``total`` renders."""
    if not 1 <= wanted <= total:
        raise RetrievalModelError(f"asked for {wanted} views but the features hold {total}")
    return np.floor(np.arange(wanted) * total / wanted).astype(np.int64)


class ContextQueryFusion(nn.Module):
    """Context-query attention (QANet) between point tokens P (B x N x D) and views I (B x M x D).

    S = W0[p; i; p*i] (trilinear), S_r / S_c row / column softmax, A = S_r I, B = S_r S_c^T P,
    shape = max over N of MLP([P; A; P*A; P*B]).
    """

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.w_point = nn.Parameter(torch.empty(dim).uniform_(-(dim**-0.5), dim**-0.5))
        self.w_view = nn.Parameter(torch.empty(dim).uniform_(-(dim**-0.5), dim**-0.5))
        self.w_joint = nn.Parameter(torch.empty(dim).uniform_(-(dim**-0.5), dim**-0.5))
        self.out = mlp(4 * dim, hidden, dim, dropout)

    def similarity(self, points: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Trilinear similarity B x N x M."""
        return (
            (points @ self.w_point)[:, :, None]
            + (views @ self.w_view)[:, None, :]
            + (points * self.w_joint) @ views.transpose(1, 2)
        )

    def forward(self, points: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        sim = self.similarity(points, views)
        rows = sim.softmax(dim=2)
        cols = sim.softmax(dim=1)
        a = rows @ views
        b = rows @ (cols.transpose(1, 2) @ points)
        return self.out(torch.cat([points, a, points * a, points * b], dim=-1)).amax(dim=1)


class MaxPoolFusion(nn.Module):
    """Table V's simple alternative: concatenate max-pooled P and I, then an MLP."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.out = mlp(2 * dim, hidden, dim, dropout)

    def forward(self, points: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([points.amax(dim=1), views.amax(dim=1)], dim=-1))


class TriModalRetrievalModel(nn.Module):
    """Adapters + fusion + reconstruction over frozen features; shape and text embeddings are unit-norm."""

    def __init__(self, config: RetrievalConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or RetrievalConfig()
        d, h = cfg.dim, cfg.hidden
        self.colour_branch = mlp(TOKEN_GEOMETRY_DIM, h // 4, cfg.colour_dim) if cfg.colour_dim else None
        self.point_adapter = mlp(cfg.point_dim + cfg.colour_dim, h, d, cfg.dropout)
        self.view_adapter = mlp(cfg.view_dim, h, d, cfg.dropout)
        self.text_adapter = mlp(cfg.text_dim, h, d, cfg.dropout)
        fusion = ContextQueryFusion if cfg.fusion == "cqa" else MaxPoolFusion
        self.fusion = fusion(d, h, cfg.dropout)
        guide = d if cfg.reconstruction == "tri" else 0
        self.reconstruct_views = mlp(d + guide, h, d) if cfg.reconstruction != "none" else None
        self.reconstruct_points = mlp(d + guide, h, d) if cfg.reconstruction != "none" else None
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(cfg.temperature_init))))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(min=0.01, max=1.0)

    def _check(self, point_tokens: torch.Tensor, token_geometry: torch.Tensor, views: torch.Tensor) -> None:
        cfg = self.config
        if point_tokens.ndim != 3 or point_tokens.shape[-1] != cfg.point_dim:
            raise RetrievalModelError(f"point tokens must be B x N x {cfg.point_dim}, got {tuple(point_tokens.shape)}")
        if token_geometry.shape != (*point_tokens.shape[:2], TOKEN_GEOMETRY_DIM):
            raise RetrievalModelError(f"token geometry must be B x N x {TOKEN_GEOMETRY_DIM}")
        if views.ndim != 3 or views.shape[-1] != cfg.view_dim or views.shape[0] != point_tokens.shape[0]:
            raise RetrievalModelError(f"views must be B x M x {cfg.view_dim}, got {tuple(views.shape)}")

    def adapt_shape(
        self, point_tokens: torch.Tensor, token_geometry: torch.Tensor, views: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features -> adapted P (B x N x D) and I (B x n_views x D)."""
        self._check(point_tokens, token_geometry, views)
        views = views[:, torch.from_numpy(view_subset(views.shape[1], self.config.n_views))]
        point_in = point_tokens
        if self.colour_branch is not None:
            point_in = torch.cat([point_tokens, self.colour_branch(token_geometry)], dim=-1)
        return self.point_adapter(point_in), self.view_adapter(views)

    def encode_shape(
        self, point_tokens: torch.Tensor, token_geometry: torch.Tensor, views: torch.Tensor
    ) -> torch.Tensor:
        points, views_d = self.adapt_shape(point_tokens, token_geometry, views)
        return F.normalize(self.fusion(points, views_d), dim=-1)

    def encode_text(self, text_features: torch.Tensor) -> torch.Tensor:
        if text_features.ndim != 2 or text_features.shape[-1] != self.config.text_dim:
            raise RetrievalModelError(f"text features must be B x {self.config.text_dim}")
        return F.normalize(self.text_adapter(text_features), dim=-1)

    def losses(
        self, point_tokens: torch.Tensor, token_geometry: torch.Tensor, views: torch.Tensor, text: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Loss terms for a batch of matching (shape, caption) pairs; ``total`` is what to minimise."""
        cfg = self.config
        points, views_d = self.adapt_shape(point_tokens, token_geometry, views)
        shape = self.fusion(points, views_d)
        text_d = self.text_adapter(text)
        beta = cfg.beta if cfg.loss == "hnnce" else 0.0
        out = {"retrieval": hn_nce_loss(shape, text_d, self.temperature, beta)}
        if self.reconstruct_views is not None and self.reconstruct_points is not None:
            # Pooled targets are unit-normalised so the adapters cannot shrink them to fake a low error.
            mean_p = F.normalize(points.mean(dim=1), dim=-1)
            mean_i = F.normalize(views_d.mean(dim=1), dim=-1)
            guide = [F.normalize(text_d, dim=-1)] if cfg.reconstruction == "tri" else []
            view_hat = self.reconstruct_views(torch.cat([mean_p, *guide], dim=-1))
            point_hat = self.reconstruct_points(torch.cat([mean_i, *guide], dim=-1))
            target_i, target_p = (
                (mean_i.detach(), mean_p.detach()) if cfg.reconstruction_stop_gradient else (mean_i, mean_p)
            )
            out["rec_p2i"] = cfg.reconstruction_weight * reconstruction_loss(view_hat, target_i)
            out["rec_i2p"] = cfg.reconstruction_weight * reconstruction_loss(point_hat, target_p)
        out["total"] = sum(out.values())
        return out

    def forward(
        self, point_tokens: torch.Tensor, token_geometry: torch.Tensor, views: torch.Tensor, text: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Same as :meth:`losses`; DDP synchronises gradients only through ``forward``."""
        return self.losses(point_tokens, token_geometry, views, text)


def save_model(
    model: TriModalRetrievalModel, path: str | Path, *, info: CheckpointInfo, extra: dict | None = None
) -> Path:
    """Write a small, self-describing checkpoint (config, weights, inference settings) atomically."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": info.to_dict(),
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(state, path)


def read_checkpoint(path: str | Path) -> dict:
    """The raw contents of a retrieval checkpoint of any readable version, checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"retrieval checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RetrievalModelError(f"{path} is not an ovseg3d retrieval checkpoint")
    if state.get("version") not in (1, CHECKPOINT_VERSION):
        raise RetrievalModelError(
            f"{path} has checkpoint version {state.get('version')}, expected 1 to {CHECKPOINT_VERSION}"
        )
    return state


def load_model(path: str | Path) -> TriModalRetrievalModel:
    """Load a checkpoint written by :func:`save_model` (strict), in eval mode."""
    state = read_checkpoint(path)
    model = TriModalRetrievalModel(RetrievalConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"], strict=True)
    return model.eval()


def load_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """The inference settings :func:`save_model` stored beside the weights (version 2 and later)."""
    state = read_checkpoint(path)
    if "info" not in state:
        raise RetrievalModelError(
            f"{path} is a version-1 retrieval checkpoint: it holds the weights but not the encoder and corpus "
            "settings a shape database needs; add them with the retrieval trainer's upgrade_checkpoint(checkpoint, "
            "config.yaml of its training run)"
        )
    return CheckpointInfo.from_dict(state["info"])

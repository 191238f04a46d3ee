"""PNG panel of text->shape retrieval: each row is a query text followed by its top-k renders.

Ground-truth hits get a green frame, misses a grey one, so a reader sees at a glance where the
right shape ranked (as in the paper's Fig. 6).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def save_retrieval_panel(
    queries: Sequence[str],
    renders: Sequence[Sequence[np.ndarray]],
    path: str | Path,
    scores: Sequence[Sequence[float]] | None = None,
    correct: Sequence[Sequence[bool]] | None = None,
    title: str = "",
) -> Path:
    """Write the panel; ``renders[q][r]`` is the H x W x 3 uint8 image of query q's rank-r shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(queries) == 0 or len(queries) != len(renders):
        raise ValueError(f"need one list of renders per query, got {len(queries)} queries, {len(renders)} lists")
    k = max(len(r) for r in renders)
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(2.0 * (k + 1.6), 2.1 * len(queries)), squeeze=False)
    for q, query in enumerate(queries):
        text_ax = axes[q, 0]
        text_ax.axis("off")
        text_ax.text(0.0, 0.5, "\n".join(textwrap.wrap(query, 28)[:8]), va="center", ha="left", fontsize=8)
        for r in range(k):
            ax = axes[q, r + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if r >= len(renders[q]):
                ax.axis("off")
                continue
            ax.imshow(renders[q][r])
            hit = bool(correct[q][r]) if correct is not None else False
            for spine in ax.spines.values():
                spine.set_edgecolor("#2ca02c" if hit else "#bbbbbb")
                spine.set_linewidth(3.0 if hit else 1.0)
            label = f"#{r + 1}"
            if scores is not None:
                label += f"  {scores[q][r]:.2f}"
            if hit:
                label += "  GT"
            ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Let torchvision import on CPU-only torch builds (open_clip and transformers both import it).

The torchvision wheel that pip pairs with a CPU torch has no loadable C++ ops, and its import
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms``, which fails with
"operator torchvision::nms does not exist". Defining those two schemas first is enough: nothing
in this project calls them. Import this module before open_clip or transformers.
"""

from __future__ import annotations

import torch

_MISSING_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def apply() -> bool:
    """Define the missing schemas on CUDA-less torch when absent; return whether anything changed."""
    global _library
    if torch.version.cuda is not None or _library is not None:
        return False
    missing = [name for name in _MISSING_SCHEMAS if not _has_op(name)]
    if not missing:
        return False
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _library.define(_MISSING_SCHEMAS[name])
    return True


apply()

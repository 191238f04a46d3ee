"""Where the sample data lives: ``$OVSEG3D_DATA``, else ``../shared/data`` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

from ovseg3d_core.paths import SOURCE_ROOT

DATA_ENV = "OVSEG3D_DATA"


class DataNotFoundError(FileNotFoundError):
    """The sample data folder, or a file inside it, is missing."""


def data_root() -> Path:
    """Return the sample-data folder, raising a clear error that names ``$OVSEG3D_DATA``."""
    configured = os.environ.get(DATA_ENV)
    root = Path(configured).expanduser() if configured else SOURCE_ROOT.parent / "shared" / "data"
    if not root.is_dir():
        source = f"${DATA_ENV}={configured}" if configured else f"the default {root} (set ${DATA_ENV} to override)"
        raise DataNotFoundError(f"sample data folder not found: {source}")
    return root


def data_path(*parts: str) -> Path:
    """Return a path inside the sample data, raising if it does not exist."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise DataNotFoundError(f"{path} not found in the sample data (${DATA_ENV} selects the folder)")
    return path

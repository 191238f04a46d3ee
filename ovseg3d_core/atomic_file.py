"""Atomic file writes: a temporary sibling, fsync, then ``os.replace``.

Readers never see a partial file, and an interrupted write (crash, SIGTERM, full disk) leaves the
previous file intact: scene maps, feature caches, shape indexes and checkpoints all rely on it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` and move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` (uncompressed, no pickles needed to read it back) written atomically."""
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 ``text`` written atomically (reports that a reader may open while they are rewritten)."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))

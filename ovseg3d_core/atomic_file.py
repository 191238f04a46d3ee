"""Atomic writes of every kind: a temporary sibling (file or folder), then ``os.replace``.

Readers never see a partial file or folder, and an interrupted write (crash, SIGTERM, full disk)
leaves the previous one intact: scene maps, feature caches, shape indexes and databases, converted
scans, bags and checkpoints all rely on it. torch loads lazily (only checkpoints need it).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` and move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # os.open rather than mkstemp: the file gets the umask's usual mode (mkstemp's is 0600, which
    # would leave checkpoints and maps unreadable to other users of an install).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` written atomically (checkpoints)."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


@contextmanager
def atomic_folder(path: str | Path, create: bool = True) -> Iterator[Path]:
    """Yield a staging folder beside ``path`` (made unless ``create`` is false, for writers that make
    their own) and move it into place when the block ends without an error; on an error it is removed.

    An existing empty folder at ``path`` is replaced, a non-empty one refused (``OSError``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    if create:
        staging.mkdir()
    try:
        yield staging
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

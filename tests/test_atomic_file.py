"""Atomic writes: all or nothing, readable by other users as any file would be, folders likewise."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from ovseg3d_core.atomic_file import atomic_folder, atomic_savez, atomic_torch_save, atomic_write


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "map.npz"
    atomic_savez(path, values=np.arange(3))

    def fail(handle):
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    with np.load(path) as data:
        assert data["values"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.npz"]


def test_written_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        npz = atomic_savez(tmp_path / "a.npz", values=np.zeros(2))
        checkpoint = atomic_torch_save({"weights": [1.0]}, tmp_path / "b.pt")
    finally:
        os.umask(previous)
    for path in (npz, checkpoint):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "database"
    with atomic_folder(target) as staging:
        (staging / "index.npz").write_bytes(b"index")
        assert not target.exists()
    assert (target / "index.npz").read_bytes() == b"index"

    failed = tmp_path / "other"
    with pytest.raises(RuntimeError, match="interrupted"), atomic_folder(failed) as staging:
        (staging / "index.npz").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database"]


def test_a_folder_writer_that_makes_its_own_folder(tmp_path):
    with atomic_folder(tmp_path / "bag", create=False) as staging:
        assert not staging.exists()
        staging.mkdir()
        (staging / "metadata.yaml").write_text("ok")
    assert (tmp_path / "bag" / "metadata.yaml").read_text() == "ok"

"""The sample data is found via $OVSEG3D_DATA or ../shared/data, with a clear error otherwise."""

from __future__ import annotations

import pytest

from ovseg3d_core.data.root import DATA_ENV, DataNotFoundError, data_path, data_root


def test_default_root_holds_the_sample_data():
    assert (data_root() / "README.md").is_file()
    assert data_path("7scenes", "camera-intrinsics.txt").is_file()


def test_env_variable_selects_the_folder(monkeypatch, tmp_path):
    (tmp_path / "marker").write_text("x")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_root() == tmp_path
    assert data_path("marker").read_text() == "x"


def test_missing_folder_error_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match=DATA_ENV):
        data_root()


def test_missing_file_error_names_the_file():
    with pytest.raises(DataNotFoundError, match="no_such_file"):
        data_path("no_such_file")

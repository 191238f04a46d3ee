"""Shipped checkpoints and the cache are found in a checkout and in an install layout (the real one:
tests/test_colcon_build.py)."""

from __future__ import annotations

import importlib.util
import shutil

from ovseg3d_core import paths

from conftest import REPO_ROOT


def test_checkout_uses_training_checkpoints_and_dot_cache(monkeypatch):
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    assert paths.shipped_checkpoints() == REPO_ROOT / "training" / "checkpoints"
    assert (paths.shipped_checkpoints() / "student" / "geometry_fpfh_normals.pt").is_file()
    assert (paths.shipped_checkpoints() / "retrieval" / "model.pt").is_file()
    assert paths.cache_dir() == REPO_ROOT / ".cache"


def test_cache_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    assert paths.cache_dir() == tmp_path


def test_install_layout_finds_share_and_caches_in_the_user_cache(monkeypatch, tmp_path):
    """paths.py placed as colcon installs it: checkpoints from share/, the cache outside the prefix."""
    package = tmp_path / "prefix" / "lib" / "python3.11" / "site-packages" / "ovseg3d_core"
    package.mkdir(parents=True)
    shutil.copy(paths.__file__, package / "paths.py")
    shipped = tmp_path / "prefix" / "share" / "ovseg3d_ros" / "checkpoints"
    shipped.mkdir(parents=True)
    spec = importlib.util.spec_from_file_location("installed_paths", package / "paths.py")
    installed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installed)
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user_cache"))
    assert installed.shipped_checkpoints() == shipped
    assert installed.cache_dir() == tmp_path / "user_cache" / "ovseg3d"

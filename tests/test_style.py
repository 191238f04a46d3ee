"""The tree is ruff-clean (lint and format), as the project's style requires."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

RUFF = Path(sys.executable).with_name("ruff")


def test_ruff_lint_is_clean():
    result = subprocess.run([str(RUFF), "check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:]


def test_ruff_format_is_clean():
    result = subprocess.run([str(RUFF), "format", "--check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:]

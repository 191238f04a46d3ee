"""ovseg3d_core is a pure library: importing any of it never loads rclpy."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO_ROOT

CORE = REPO_ROOT / "ovseg3d_core"


def test_no_core_source_imports_rclpy():
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(REPO_ROOT)}: {n}" for n in names if n.split(".")[0] in ("rclpy", "ovseg3d_ros")
            ]
    assert not offenders, offenders


def test_importing_every_core_module_loads_no_rclpy():
    probe = (
        "import importlib, pkgutil, sys, ovseg3d_core\n"
        "for m in pkgutil.walk_packages(ovseg3d_core.__path__, 'ovseg3d_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'rclpy'))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_core_package_import_is_light():
    heavy = ("torch", "open3d", "spconv", "transformers")
    probe = f"import sys, ovseg3d_core; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

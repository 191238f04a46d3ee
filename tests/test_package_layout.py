"""ovseg3d_core is a pure library: importing any of it never loads rclpy."""

from __future__ import annotations

import ast
import subprocess
import sys

import ovseg3d_core

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


def _first_party_imports() -> dict[str, set[str]]:
    """Module -> the first-party modules it imports anywhere in its source (functions included)."""
    files = {
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for package in ("ovseg3d_core", "ovseg3d_ros")
        for path in (REPO_ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        graph[module] = {t for t in targets if t in files and t != module and not module.startswith(f"{t}.")}
    return graph


def test_nothing_outside_training_imports_it():
    offenders = [
        f"{module} -> {target}"
        for module, targets in _first_party_imports().items()
        if not module.startswith("ovseg3d_core.training")
        for target in targets
        if target.startswith("ovseg3d_core.training")
    ]
    assert not offenders, offenders


def test_first_party_modules_import_no_circle():
    graph = _first_party_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, circles


def test_public_surface_resolves_lazily():
    probe = (
        "import sys, ovseg3d_core\n"
        "assert 'ovseg3d_core.segmenter' not in sys.modules\n"
        "print(sorted(n for n in ovseg3d_core.__all__ if getattr(ovseg3d_core, n).__name__ != n))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
    assert {"SceneSegmenter", "OnlineSegmenter", "RGBDFrame", "ShapeDatabase"} <= set(ovseg3d_core.__all__)

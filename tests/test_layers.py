"""The layer rules of ../shared/STYLE.md, checked on the import statements of every module.

Layers talk through narrow seams: ``data_pipeline`` writes the price store, ``ml_lifecycle``
reads it and writes the registry, ``app`` reads both; what they share lives in ``common``.
So no layer imports another layer, and ``common`` imports none of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("common", "data_pipeline", "ml_lifecycle", "app")
#: What each package may import from the project (itself included).
ALLOWED: dict[str, set[str]] = {
    "common": {"common"},
    "data_pipeline": {"common", "data_pipeline"},
    "ml_lifecycle": {"common", "ml_lifecycle"},
    "app": {"common", "app"},
}


def project_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every import of a project package in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in LAYERS]
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_a_layer_imports_only_itself_and_common(package: str) -> None:
    violations = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {imported}"
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        for line, imported in project_imports(path)
        if imported not in ALLOWED[package]
    ]
    assert violations == [], "layer rule broken (see ../shared/STYLE.md):\n" + "\n".join(violations)


def test_the_checker_sees_a_cross_layer_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text(
        "import os\ndef f():\n    from data_pipeline.storage.upsert import upsert_bars\n"
    )
    assert project_imports(module) == [(3, "data_pipeline")]

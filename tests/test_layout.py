"""The repository's layering: the library stands alone, its clients import it, and no code
edits ``sys.path`` (tests find the repository root through pytest's ``pythonpath``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIENTS = ("paper_figures", "experiments")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _imported_roots(path: Path) -> set[str]:
    """Top-level packages a file imports (absolute imports, anywhere in the file)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_library_never_imports_its_clients():
    sources = _sources("memjax")
    assert len(sources) > 10
    offending = {p.relative_to(REPO).as_posix(): sorted(_imported_roots(p) & set(CLIENTS))
                 for p in sources}  # fmt: skip
    assert {k: v for k, v in offending.items() if v} == {}


@pytest.mark.parametrize("folder", ["memjax", *CLIENTS, "tests"])
def test_no_code_edits_sys_path(folder):
    edits = []
    for path in _sources(folder):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            path_attr = isinstance(node, ast.Attribute) and node.attr == "path"
            if path_attr and isinstance(node.value, ast.Name) and node.value.id == "sys":
                edits.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "syspath_prepend":
                edits.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert edits == []

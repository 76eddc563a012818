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


# ---------------------------------------------------------------- the package's stage order
# One folder per pipeline stage; a module imports other stages only through their public
# face (no `_private` module or name) and only from stages earlier in this order. The top
# modules (leaves) come first; `memjax/__init__.py` and `__main__.py` are the public face.
STAGES = (
    "leaves", "models", "train", "estimators", "privacy", "analysis", "study", "theory",
    "report", "cli",
)  # fmt: skip
FACE = ("memjax", "memjax.__main__")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or parts[1:] and parts[1] in STAGES else "leaves"


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name or None) of every memjax import in a file, wherever it sits (in a
    function too), except under ``if TYPE_CHECKING:``; ``from P import m`` of a submodule is
    an import of ``P.m``."""
    tree = ast.parse(path.read_text(), str(path))
    skip = {id(n) for i in ast.walk(tree) if isinstance(i, ast.If) and _is_type_checking(i)
            for n in ast.walk(i)}  # fmt: skip
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names if a.name.startswith("memjax")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "memjax":
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if _module_file(sub) is not None:
                    out.append((node.lineno, sub, None))
                else:
                    out.append((node.lineno, node.module, a.name))
    return out


def _module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _library() -> dict[str, Path]:
    return {_module_name(p): p for p in _sources("memjax")}


def test_every_memjax_import_names_a_module_of_this_tree():
    """No import of a moved or removed module (an installed older copy would hide it)."""
    missing = [
        f"{p.relative_to(REPO)}:{line} {module}"
        for p in _sources("memjax", *CLIENTS, "tests", "docs")
        for line, module, _ in _imports(p)
        if _module_file(module) is None
    ]
    assert missing == []


def test_imports_follow_the_stage_order_through_public_faces():
    wrong = []
    for name, path in _library().items():
        if name in FACE:
            continue
        here = _stage(name)
        for line, module, imported in _imports(path):
            there = _stage(module)
            where = f"{path.relative_to(REPO)}:{line} {module}" + (f".{imported}" * bool(imported))
            if module in FACE:
                wrong.append(f"{where}: imports the package face")
            elif STAGES.index(there) > STAGES.index(here):
                wrong.append(f"{where}: {here} imports the later stage {there}")
            elif there != here and there != "leaves":
                private = [p for p in module.split(".")[2:] if p.startswith("_")]
                if private or (imported or "").startswith("_"):
                    wrong.append(f"{where}: private to {there}")
    assert wrong == []


def test_leaves_import_no_private_name_of_another_leaf():
    wrong = [
        f"{path.relative_to(REPO)}:{line} {module}.{imported}"
        for name, path in _library().items()
        if _stage(name) == "leaves" and name not in FACE
        for line, module, imported in _imports(path)
        if _stage(module) == "leaves" and module != name and (imported or "").startswith("_")
        and imported != "__version__"
    ]  # fmt: skip
    assert wrong == []


def test_no_import_cycle_in_the_library():
    """Module-level and deferred imports alike: a cycle hidden inside a function is one."""
    graph = {name: set() for name in _library()}
    for name, path in _library().items():
        for _, module, _ in _imports(path):
            if module in graph and module != name:
                graph[name].add(module)
    cycles, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    # the face imports its stages, which never import it back: no edge into FACE is allowed
    assert [c for c in cycles if not set(c) & set(FACE)] == []
    assert not any(set(FACE) & graph[name] for name in graph if name not in FACE)


DOCUMENTS = ("README.md", "docs", "experiments", "paper_figures", "../shared/DESIGN.md")
FILE_SUFFIXES = {"py", "md", "yaml", "json", "csv", "png", "pdf", "html", "sbatch", "npz"}


def _documented_names() -> set[str]:
    """Every ``mj.<name>...`` or ``memjax.<name>...`` that the README, DESIGN.md and the
    docs mention, and that the code (its docstrings too) writes."""
    import re

    paths = _sources("memjax", *CLIENTS, "tests", "docs")
    for name in DOCUMENTS:
        path = (REPO / name).resolve()
        paths += sorted(path.rglob("*.md")) if path.is_dir() else [path] * path.is_file()
    found = set()
    for path in paths:
        for m in re.finditer(r"\b(?:mj|memjax)((?:\.[A-Za-z_]\w*)+)", path.read_text()):
            last = m.group(1).rsplit(".", 1)[-1]
            if last not in FILE_SUFFIXES and "__main__" not in m.group(1):  # importing runs it
                found.add("memjax" + m.group(1))
    return found


def test_every_documented_name_resolves():
    import importlib

    unresolved = []
    for name in sorted(_documented_names()):
        parts = name.split(".")
        obj, path = importlib.import_module("memjax"), "memjax"
        for part in parts[1:]:
            if hasattr(obj, part):
                obj = getattr(obj, part)
            elif _module_file(f"{path}.{part}") is not None:  # a module of this tree only
                obj = importlib.import_module(f"{path}.{part}")
            else:
                unresolved.append(name)
                break
            path = f"{path}.{part}"
    assert len(_documented_names()) > 50
    assert unresolved == []

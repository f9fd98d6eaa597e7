"""The house's floors: which package may import which, and no import circles anywhere.

Every import counts, function-local ones included (a lazy import is still a dependency). The
floors, bottom to top: the SDK (`latentwire`), then the hub daemon and the model side
(`latentwire.agents`), then tinyworld (tiny models that use the agents' adapters), then the
training jobs, then the benchmarks, which may use everything. The CLI (`latentwire.cli`) is the
one module of the SDK's folder that sits on top: it dispatches to every floor's commands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"sdk": "latentwire", "hub": "latentwire.hub", "agents": "latentwire.agents",
           "tinyworld": "latentwire.tinyworld", "training": "latentwire.training",
           "benchmarks": "latentwire.benchmarks"}
# What each floor may import besides itself.
ALLOWED = {
    "latentwire": set(),
    "latentwire.hub": {"latentwire"},
    "latentwire.agents": {"latentwire"},
    "latentwire.tinyworld": {"latentwire", "latentwire.agents"},
    "latentwire.training": {"latentwire", "latentwire.agents", "latentwire.tinyworld"},
    "latentwire.benchmarks": set(FOLDERS.values()),
}
TOP = {"latentwire.cli"}  # may import every floor


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every latentwire module ``name`` imports, absolute or relative, at any depth."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found |= {f"{stem}.{a.name}" for a in node.names}
    return {m for m in found if m == "latentwire" or m.startswith("latentwire.")}


def _floor(module: str) -> str:
    for package in sorted(FOLDERS.values(), key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return "latentwire"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # Keep only names that are modules (``from x import y`` may name a function).
        graph[name] = {m for m in _imports(name, path) if m in modules and m != name}
    return graph


def test_every_floor_imports_only_the_floors_below_it() -> None:
    wrong = []
    for module, targets in _graph().items():
        if module in TOP:
            continue
        floor = _floor(module)
        for target in targets:
            other = _floor(target)
            if other != floor and other not in ALLOWED[floor]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(sorted(wrong))


def test_there_are_no_import_circles() -> None:
    graph = _graph()
    # A package imports its own submodules through __init__ re-exports; those edges are
    # containment, not dependency, so they do not count as circles.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("folder", ["hub", "agents", "tinyworld", "training", "benchmarks"])
def test_imports_that_cross_mapped_folders_are_absolute(folder: str) -> None:
    """``from ..x import`` out of a mapped folder hides where the import goes (the folders are
    mapped into one package by pyproject's package-dir)."""
    wrong = []
    for path in (ROOT / folder).rglob("*.py"):
        depth = len(path.relative_to(ROOT / folder).parts) - 1  # 0 for a file at the folder's top
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > depth + 1:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not wrong, "relative imports that leave their folder:\n" + "\n".join(wrong)


def test_documented_import_paths_still_work() -> None:
    # docs/security.md names these; they moved (tokens) or stayed (reload_policy) in the split.
    from latentwire.hub import auth, tokens

    assert auth.hash_token is tokens.hash_token
    assert callable(auth.reload_policy)

"""The bus's layers, read from the source: the SDK sits below the hub, and the hub's modules
import one another without circles (every import counts: function-local, TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"sdk": "latentwire", "hub": "latentwire.hub"}


def imports_of(folder: str) -> dict[str, set[str]]:
    """Module name -> the latentwire modules (or packages) it imports, for every module in ``folder``."""
    package = FOLDERS[folder]
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT / folder).with_suffix("").parts
        if "_proto" in parts:
            continue  # generated
        is_package = parts[-1] == "__init__"
        name = ".".join([package, *(p for p in parts if p != "__init__")])
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)
        graph[name] = {t for t in targets if t.startswith("latentwire")}
    return graph


def test_the_sdk_imports_the_hub_only_in_the_command_line() -> None:
    # cli.py composes the layers (its `hub` and `hash-token` commands run the hub's code);
    # the scheme table names latentwire.hub.inproc as a string, not an import.
    reach = {m: sorted(t for t in ts if t.startswith("latentwire.hub")) for m, ts in imports_of("sdk").items()}
    assert {m: ts for m, ts in reach.items() if ts and m != "latentwire.cli"} == {}


def test_the_hub_has_no_import_circles() -> None:
    graph = imports_of("hub")
    modules = set(graph)

    def module_of(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {t for t in map(module_of, ts) if t and t != m and not m.startswith(t + ".")}
             for m, ts in graph.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("import circle in hub/: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for target in sorted(edges[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])


def test_documented_import_paths_still_work() -> None:
    # docs/security.md names these; they moved (tokens) or stayed (reload_policy) in the split.
    from latentwire.hub import auth, tokens

    assert auth.hash_token is tokens.hash_token
    assert callable(auth.reload_policy)

"""The package's imports point down only: a walk over every ``import`` in ``chatkit/``.

Every import counts, also those under ``if TYPE_CHECKING:`` and inside
functions: a lazy import is still a dependency, and hiding a cycle behind one
is what this test is here to catch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import chatkit

PACKAGE = Path(chatkit.__file__).parent


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = ["chatkit", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``module -> {chatkit modules it imports}`` from the source, without importing anything."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                # ``from . import protocol`` imports a module; ``from .hub import Hub`` a name.
                targets = [
                    f"{origin}.{a.name}" if f"{origin}.{a.name}" in files else origin for a in node.names
                ]
            for target in targets:
                while target and target not in files:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, …, a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_walk_sees_the_real_imports():
    """The graph is not vacuous: known edges, lazy and relative ones included."""
    graph = import_graph()
    assert {"chatkit.http", "chatkit.ws", "chatkit.hub", "chatkit.endpoints"} <= graph["chatkit.server"]
    assert "chatkit.protocol" in graph["chatkit.hub"]  # from . import protocol
    assert "chatkit.llm.openai" in graph["chatkit.llm"]  # imported inside a function
    assert "chatkit.errors" in graph["chatkit.llm.openai"]  # from ..errors import
    assert graph["chatkit.protocol"] == {"chatkit.errors"}


def test_transport_neutral_http_depends_on_store_and_protocol_only():
    graph = import_graph()
    store_layer = {"chatkit.storage", "chatkit.store", "chatkit.store_pg"}
    assert graph["chatkit.endpoints"] <= {"chatkit.storage", "chatkit.protocol"}
    assert not (graph["chatkit.storage"] - store_layer - {"chatkit.protocol"})
    assert "chatkit.server" not in graph["chatkit.http"]
    assert "chatkit.server" not in graph["chatkit.ws"]


def test_the_walk_finds_the_cycle_this_test_was_written_for(tmp_path):
    """``http`` importing ``server`` inside a function while ``server`` imports ``http``."""
    pkg = tmp_path / "chatkit"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "server.py").write_text("def start():\n    from .http import HTTPServer\n")
    (pkg / "http.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .server import ChatServer\n"
    )
    assert find_cycle(import_graph(pkg)) == ["chatkit.http", "chatkit.server", "chatkit.http"]


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None

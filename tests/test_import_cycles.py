"""No import cycles inside the package (issue 11): dependencies point one way.

Every module under redis_consumer/ is parsed (no import runs) and its imports of other
redis_consumer modules become graph edges. Two graphs are checked:
- module level (everything not inside a def, `if TYPE_CHECKING:` blocks included, since a cycle
  there is still a design cycle), which must have no cycle at all;
- module level plus imports inside functions, whose cycles are allowed only when listed in
  DEFERRED below with the reason (a function-level import that closes a cycle is the usual way
  to hide one, so each must be justified).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "redis_consumer"

#: Cycles that exist only through imports inside functions, each with why it is fine.
DEFERRED: dict[frozenset[str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(current: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> set[str]:
    """Package modules named by one import statement."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in MODULES:
                found.add(alias.name)
        return found
    if node.level:
        base = current.split(".") if is_package else current.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in MODULES:
            found.add(sub)  # `from pkg import submodule`
        elif target in MODULES:
            found.add(target)
    return found


def imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(module-level, inside-function) package imports of one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top: set[str] = set()
    deferred: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (deferred if in_function else top).update(resolve(name, is_package, child) - {name})
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, deferred


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_the_walk_sees_the_package():
    assert len(MODULES) > 40 and "redis_consumer.tfserving.calls" in MODULES
    top, _ = GRAPH["redis_consumer.tfserving.batching"]
    assert "redis_consumer.tfserving.calls" in top and "redis_consumer.tfserving.client" not in top


def test_no_module_level_import_cycle():
    found = cycles({name: top for name, (top, _) in GRAPH.items()})
    assert not found, f"module-level import cycles: {found}"


def test_function_level_imports_close_no_unlisted_cycle():
    found = cycles({name: top | deferred for name, (top, deferred) in GRAPH.items()})
    unlisted = [c for c in found if frozenset(c) not in DEFERRED]
    assert not unlisted, f"import cycles through imports inside functions: {unlisted}"


@pytest.mark.parametrize("edges,expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected

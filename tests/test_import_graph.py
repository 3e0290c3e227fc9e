"""No import cycles between anetrain's subpackages (``anetrain.<name>``), counting every import
statement in the source, including the lazy ones inside functions."""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import anetrain

ROOT = Path(anetrain.__file__).parent


def unit(module: str) -> str:
    """``anetrain.runtime.sim.kernel`` -> ``anetrain.runtime``; top-level modules stay whole."""
    return ".".join(module.split(".")[:2])


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, dict[str, str]]:
    """unit -> {imported unit -> one 'file: import' that makes the edge}."""
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(ROOT.rglob("*.py")):
        source_unit = unit(module_name(path))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
                if node.module == "anetrain":  # from anetrain import runtime
                    names = [f"anetrain.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = unit(name)
                if name.startswith("anetrain.") and target != source_unit:
                    rel = path.relative_to(ROOT.parent)
                    edges[source_unit].setdefault(target, f"{rel}:{node.lineno}")
    return edges


def find_cycle(edges: dict[str, dict[str, str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, {}):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_cycles_between_subpackages() -> None:
    edges = import_graph()
    cycle = find_cycle(edges)
    if cycle:
        where = [f"{a} -> {b} ({edges[a][b]})" for a, b in itertools.pairwise(cycle)]
        raise AssertionError("import cycle between subpackages:\n  " + "\n  ".join(where))


def test_the_checker_finds_a_cycle() -> None:
    edges = {"a": {"b": "x"}, "b": {"c": "y"}, "c": {"a": "z"}, "d": {"a": "w"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": "x"}, "b": {}}) is None


def test_the_graph_sees_the_runtime_edges() -> None:
    """Sanity of the scan: known edges are found, and the simulator does not reach perfmodel."""
    edges = import_graph()
    assert "anetrain.mil" in edges["anetrain.runtime"]
    assert "anetrain.perfmodel" not in edges["anetrain.runtime"]
    # chip facts come from the hardware leaf, which imports only the root error module
    assert "anetrain.hardware" in edges["anetrain.perfmodel"]
    assert "anetrain.runtime" not in edges["anetrain.perfmodel"]
    assert set(edges.get("anetrain.hardware", {})) <= {"anetrain.errors"}

"""The package's layering: arrows point down, and no module imports itself back through others.

Every `import` and `from ... import` in graphprune/, module level or inside a function, is an
arrow from one module to another. A module belongs to the *room* named by its first package under
graphprune (graphprune.plan.budget -> plan; graphprune.api -> api). Rooms are ordered as data flows
(docs/DESIGN.md, "The house"); an arrow may point into its own room or a lower one, never up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parent.parent / "graphprune"

# lowest first; rooms on one line share a level and may import each other (but not in a circle)
LEVELS = (
    ("errors", "reasons"),
    ("rules", "data"),
    ("capture",),
    ("importance", "cost"),
    ("plan",),
    ("rewrite",),
    ("check", "measure"),
    ("onnx", "io"),
    ("depth", "recovery", "report"),
    ("search", "explain"),
    ("pipeline",),
    ("api", ""),  # "" is graphprune/__init__.py, the public names
    ("cli",),
)
LEVEL = {room: i for i, rooms in enumerate(LEVELS) for room in rooms}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ("graphprune", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.startswith("graphprune")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if base.startswith("graphprune"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
    return {t for t in targets if t != name}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.fixture(scope="module")
def arrows() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {t for t in _imports(name, path, modules) if t in modules} for name, path in modules.items()}


def test_every_module_has_a_room(arrows):
    assert sorted({_room(m) for m in arrows} - set(LEVEL)) == []


def test_arrows_point_down(arrows):
    upward = sorted(f"{a} -> {b}" for a, targets in arrows.items() for b in targets
                    if LEVEL[_room(b)] > LEVEL[_room(a)])
    assert upward == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    names = sorted(set(edges) | {t for ts in edges.values() for t in ts})
    index = {n: i for i, n in enumerate(names)}
    rows = [index[a] for a, ts in edges.items() for _ in ts]
    cols = [index[b] for ts in edges.values() for b in ts]
    matrix = csr_matrix(([1] * len(rows), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(matrix, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for name, label in zip(names, labels, strict=True):
        groups.setdefault(int(label), []).append(name)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def test_no_module_imports_itself_back(arrows):
    # a package's __init__ that re-exports its modules is not a cycle: the modules never need it
    edges = {a: {b for b in ts if not a.startswith(b + ".")} for a, ts in arrows.items()}
    assert _cycles(edges) == []


def test_no_room_imports_itself_back(arrows):
    rooms: dict[str, set[str]] = {}
    for a, targets in arrows.items():
        rooms.setdefault(_room(a), set()).update(_room(b) for b in targets if _room(b) != _room(a))
    assert _cycles(rooms) == []


def test_the_checker_sees_an_upward_arrow_and_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert LEVEL["plan"] < LEVEL["recovery"] and LEVEL["cli"] == max(LEVEL.values())

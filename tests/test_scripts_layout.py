"""The layout outside the package: scripts run as modules and share a small library, nothing imports the tests.

Rule (docs/DESIGN.md, "The house"): a module of scripts/ never edits `sys.path` and never imports
`tests`; it may import the library part of scripts/ (modules without an `if __name__ == "__main__":`
guard) but no program (`python -m scripts.NAME`, a module with one). `fixtures/` and `models/`
import neither `tests` nor `scripts`. Every import is read, module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # `from scripts import common` imports scripts.common
            names |= {f"{node.module}.{alias.name}" for alias in node.names if node.module == "scripts"}
    return names


def _is_program(source: str) -> bool:
    return 'if __name__ == "__main__":' in source


def _library() -> set[str]:
    """scripts and its modules that are not programs: what any script may import."""
    return {"scripts"} | {f"scripts.{p.stem}" for p in _files("scripts") if not _is_program(p.read_text())}


def _edits_sys_path(tree: ast.AST) -> bool:
    """`sys.path.insert/append/extend(...)`, or `sys.path` assigned or augmented."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            if inner.attr == "path" and isinstance(inner.value, ast.Name) and inner.value.id == "sys":
                if node.attr in {"insert", "append", "extend"}:
                    return True
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t) == "sys.path" for t in targets):
                return True
    return False


def _bad_imports(path: Path, allowed_scripts: set[str]) -> list[str]:
    names = _imports(ast.parse(path.read_text()))
    bad = [n for n in names if n == "tests" or n.startswith("tests.")]
    bad += [n for n in names if (n == "scripts" or n.startswith("scripts.")) and n not in allowed_scripts]
    return sorted(bad)


@pytest.mark.parametrize("path", _files("scripts"), ids=lambda p: p.name)
def test_script_imports_only_the_library_and_leaves_sys_path(path):
    tree = ast.parse(path.read_text())
    assert not _edits_sys_path(tree), f"{path.name} edits sys.path; run it as `python -m scripts.{path.stem}`"
    assert _bad_imports(path, _library()) == [], f"{path.name} imports another program or the tests"


@pytest.mark.parametrize("path", _files("fixtures") + _files("models"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixtures_and_models_import_neither_tests_nor_scripts(path):
    assert _bad_imports(path, set()) == []
    assert not _edits_sys_path(ast.parse(path.read_text()))


def test_the_checks_can_fail():
    """The readers above see what they must refuse."""
    tree = ast.parse("import sys\nsys.path.insert(0, 'x')\nfrom scripts.criteria import tp_row\nimport tests.archs\n")
    assert _edits_sys_path(tree)
    assert _edits_sys_path(ast.parse("import sys\nsys.path = ['x']\n"))
    assert not _edits_sys_path(ast.parse("import sys\nprint(sys.path)\n"))
    assert _imports(tree) - {"sys"} == {"scripts.criteria", "tests.archs"}
    assert _imports(ast.parse("from scripts import criteria\n")) == {"scripts", "scripts.criteria"}
    library = _library()
    assert {"scripts.common", "scripts.docsection"} <= library and "scripts.criteria" not in library

"""Importing what a user names on the command line (`--arch pkg.mod:factory`, `--data pkg.mod:factory`,
a pickled model's classes), with the current folder importable for that import only.

The folder goes on `sys.path` for the duration of the import and comes off after, so a user's file
never shadows a module for the rest of the process; what was imported stays in `sys.modules`.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def cwd_importable() -> Iterator[None]:
    """The current folder on sys.path inside the block (unless it is there already)."""
    here = str(Path.cwd())
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        yield
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


def import_attr(module: str, name: str):
    """`module.name`, the module imported with the current folder importable; ImportError or
    AttributeError as importlib and getattr raise them."""
    with cwd_importable():
        return getattr(importlib.import_module(module), name)

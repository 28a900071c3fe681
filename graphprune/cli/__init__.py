"""The `graphprune` command line (graphprune.cli.main); `python -m graphprune.cli` runs it."""

from graphprune.cli.main import app, main

__all__ = ["app", "main"]

"""The `graphprune` command line: a thin layer over graphprune.api, one module per command.

Importing a command's module registers it on the app (graphprune.cli.app); the order here is the
order of `graphprune --help`.
"""

from __future__ import annotations

import sys

from graphprune.cli import bench, evaluate, explain, export, finetune, inspect, shrink  # noqa: F401 - registers the commands
from graphprune.cli.app import app, console


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("[bold red]error:[/bold red] interrupted; nothing was written")
        sys.exit(130)


if __name__ == "__main__":
    main()

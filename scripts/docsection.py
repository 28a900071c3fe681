"""Marked sections of the Markdown files under docs/.

Each benchmark or coverage script owns one section of a shared file, between
`<!-- NAME:start -->` and `<!-- NAME:end -->`, and rewrites only that: the rest of the file,
other scripts' figures included, is kept byte for byte. A file or section that does not exist
yet is created; the file is replaced atomically, so an interrupted run leaves the old one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# the first lines of docs/BENCHMARKS.md, for the script that finds it missing
BENCHMARKS_HEADER = "# Benchmarks\n\nMeasured numbers; each section records the command and machine that produced it.\n"


def produced_by(module: str, argv: list[str]) -> str:
    """A section's closing line: the command that made it (`python -m MODULE ARGV`), the machine, torch and
    OMP_NUM_THREADS."""
    import platform
    import shlex

    import torch

    return (f"Produced by `python -m {module} {shlex.join(argv)}`".rstrip() + f" on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}.")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with section `name` holding `body` (appended at the end when there is no such section)."""
    start, end = markers(name)
    block = f"{start}\n{body.rstrip(chr(10))}\n{end}"
    i, j = text.find(start), text.find(end)
    if i == -1 and j == -1:
        return text.rstrip("\n") + "\n\n" + block + "\n" if text.strip() else block + "\n"
    if i == -1 or j < i:
        raise ValueError(f"the file has a broken {start} ... {end} pair; fix or remove the markers by hand")
    return text[:i] + block + (text[j + len(end):] or "\n")


def write_section(path: Path, name: str, body: str, header: str = "") -> None:
    """Rewrite section `name` of `path` (a new file starts with `header`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else header
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(replace_section(old, name, body))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise

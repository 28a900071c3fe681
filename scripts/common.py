"""What the scripts share: the repository root, the machine description, the CLI runner, error lines.

Scripts run as modules from the repository root (`python -m scripts.NAME`), so `graphprune`,
`models` and `fixtures` import without changing `sys.path`. Marked docs sections are
scripts/docsection.py's.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from graphprune.errors import first_line

ROOT = Path(__file__).resolve().parent.parent


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message` (200 characters at most), or `Type` when it has none."""
    message = first_line(exc, 200) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}".rstrip(": ")


def machine(threads: int, packages: tuple[str, ...] = (), load_average: bool = False) -> dict:
    """The machine and library versions a benchmark's JSON records: `packages` are distribution
    names (`torch-pruning` is recorded as `torch_pruning`); `load_average` adds the load at the end."""
    import onnxruntime as ort
    import torch

    import graphprune

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    facts = {"platform": platform.platform(), "cpu": names[0] if names else platform.processor() or "unknown",
             "cores": os.cpu_count(), "threads": threads}
    if load_average:
        facts["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    facts |= {"python": platform.python_version(), "onnxruntime": ort.__version__, "torch": torch.__version__}
    facts |= {name.replace("-", "_"): version(name) for name in packages}
    return facts | {"graphprune": graphprune.__version__}


def run_cli(args: list[str]) -> float:
    """Run `graphprune ARGS` in a fresh process from the repository root; its wall time in seconds.
    A failure ends the script with the command and the end of its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "graphprune.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"graphprune {shlex.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0

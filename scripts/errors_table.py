"""Write docs/ERRORS.md: what the `graphprune` CLI prints for every input it must refuse.

    python -m scripts.errors_table                    # writes docs/ERRORS.md
    python -m scripts.errors_table --out /tmp/errors.md

The cases are fixtures/cli_cases.py, the list tests/test_cli.py checks. Each one runs as a new
user would run it: `graphprune ARGS` (through typer's CliRunner) inside a fresh temporary
folder holding the files `make_files` writes. Every exit code and message in the table is
what that run printed; nothing is typed by hand. The test column is the pytest node id,
checked against `pytest --collect-only`. Exit status 1 when a case breaks the rule
(exit 2, one `error:` line with its key words, no traceback, nothing written) without being
marked as a known bug.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from typer.testing import CliRunner

from fixtures.cli_cases import CASES, TEST, Case, make_files
from graphprune.cli import app
from scripts.common import ROOT

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    message: str  # the `error:` line, else the last line printed; "" if none
    crash: str  # the uncaught exception (the user sees a traceback); "" if none
    others: int  # how many other non-blank lines were printed
    written: tuple[str, ...]  # files the run added or changed
    problems: tuple[str, ...]  # how the run breaks the rule; empty when it holds


def listing(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def run_case(case: Case, runner: CliRunner) -> Outcome:
    """Run one case in a fresh folder and hold it to the rule."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_files(Path(tmp))
        before = listing(folder)
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            result = runner.invoke(app, list(case.argv))
        finally:
            os.chdir(cwd)
        after = listing(folder)
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    others = [line for line in lines if not line.startswith("error:")]
    crash = ""
    if crashed:
        first = str(result.exception).strip().splitlines()
        crash = f"{type(result.exception).__name__}: {first[0] if first else ''}"
    message = errors[0] if errors else (others.pop() if others and not crashed else "")
    written = tuple(sorted(n for n in after if before.get(n) != after[n]))
    problems = []
    if result.exit_code != 2:
        problems.append(f"exit code {result.exit_code}, not 2")
    if crashed or "Traceback" in result.output:
        problems.append("traceback")
    if len(errors) != 1:
        problems.append(f"{len(errors)} `error:` lines")
    missing = [w for w in case.words if not errors or w not in errors[0]]
    if missing:
        problems.append("missing key words " + ", ".join(f"`{w}`" for w in missing))
    if written:
        problems.append("wrote " + ", ".join(written))
    return Outcome(result.exit_code, message, crash, len(others), written, tuple(problems))


def collected_ids() -> set[str]:
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/test_cli.py"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"pytest --collect-only failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return {line.strip() for line in proc.stdout.splitlines() if "::" in line}


def cell(text: str) -> str:
    """`text` as a Markdown code span that survives inside a table row."""
    ticks = "`" * (max((len(m) for m in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text.replace('|', chr(92) + '|')}{pad}{ticks}"


def message_cell(case: Case, out: Outcome) -> str:
    parts = [cell(out.message)] if out.message else []
    if out.crash:
        parts.append(f"*no `error:` line: an uncaught exception, so the user sees a traceback:* {cell(out.crash)}")
    if out.others:
        parts.append(f"(after {out.others} other line{'s' if out.others > 1 else ''} of output)")
    if out.written:
        parts.append("*files added:* " + ", ".join(cell(n) for n in out.written))
    if case.non_root and IS_ROOT:
        parts.append("*run as root, which ignores file permissions: the file was read; another user gets the refusal*")
    return " ".join(parts)


def test_cell(case: Case, node: str) -> str:
    note = ""
    if case.bug:
        note = f" xfail (strict): {case.bug}"
    elif case.non_root:
        note = " skipped when run as root"
    return cell(node) + note


def markdown(rows: list[tuple[Case, Outcome, str]]) -> str:
    broken = [(c, o) for c, o, _ in rows if o.problems]
    lines = [
        "`python -m scripts.errors_table` wrote this file; run it again rather than editing it.",
        "",
        "# What graphprune says when it refuses an input",
        "",
        f"graphprune CLI, torch {torch.__version__}, Python {sys.version.split()[0]}, "
        f"{'as root' if IS_ROOT else 'as a normal user'}. Each command ran through typer's CliRunner inside a fresh "
        "temporary folder holding `m.pt` (a tiny conv net saved with `torch.save(model)`), its state_dict `sd.pt`, "
        "`m.pt2` (`torch.export.save`), `notes.txt`, a pickled list, truncated and corrupted copies, an unreadable "
        "copy, a model whose forward branches on a tensor value, small ONNX files (`m.onnx`, the token model "
        "`tokens.onnx`, `bad_op.onnx` with an op no runtime has), `wrong_keys.pt` (inputs under a name no model "
        "takes), `stale.onnx.data` (the weights file of an earlier export), a 4-class image classifier `cls.pt`, "
        "one of 10 classes `cls10.pt`, `pruned_cls.pt` (`cls.pt` pruned by graphprune, carrying its example input), "
        "its data `cls.npz` and the data it must refuse (`oob.npz` labels beyond its classes, `nan.npz`, "
        "`empty.npz`, `big.npz` images of another size) and `f64.pt` (a float64 example input) "
        "(fixtures/cli_cases.py `make_files`). "
        "The message is the line printed, as printed.",
        "",
        "The rule (tests/test_cli.py): exit code 2, one `error:` line that names the cause and the fix, no "
        "traceback, and no file written.",
        "",
        "| case | command | exit code | message | test that covers it |",
        "|---|---|---|---|---|",
    ]
    for case, out, node in rows:
        command = cell("graphprune " + shlex.join(case.argv))
        lines.append(f"| {case.title} | {command} | {out.exit_code} | {message_cell(case, out)} | {test_cell(case, node)} |")
    lines += ["", f"## Cases that break the rule ({len(broken)} of {len(rows)})", ""]
    for case, out in broken:
        why = case.bug or ("root ignores file permissions" if case.non_root and IS_ROOT else "not known: a regression")
        lines.append(f"* `{case.name}`: {'; '.join(out.problems)}. Cause: {why}.")
    if not broken:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ERRORS.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    ids = collected_ids()
    rows = []
    for case in CASES:
        node = f"{TEST}[{case.name}]"
        if node not in ids:
            raise SystemExit(f"no test covers case {case.name!r}: {node} is not collected")
        out = run_case(case, CliRunner())
        print(f"{case.name}: exit {out.exit_code}: {out.message or out.crash}", flush=True)
        rows.append((case, out, node))
    args.out.write_text(markdown(rows))
    print(f"wrote {args.out}")
    unexpected = [c.name for c, o, _ in rows if o.problems and not c.bug and not (c.non_root and IS_ROOT)]
    if unexpected:
        print("cases that break the rule without a known bug: " + ", ".join(unexpected), file=sys.stderr)
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())

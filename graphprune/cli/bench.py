"""`graphprune bench`: ONNX models timed interleaved in ONNX Runtime."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from graphprune.cli.app import (
    VerboseOpt,
    app,
    console,
    guard,
    out_console,
)
from graphprune.io import files as io


@app.command()
@guard
def bench(
    models: list[Path] = typer.Argument(..., help="ONNX files; the first is the baseline"),
    batch: list[int] = typer.Option([1, 32], "--batch", "-b", help="batch sizes (repeat the option)"),
    repeats: int = typer.Option(30, "--repeats"),
    warmup: int = typer.Option(5, "--warmup"),
    threads: int = typer.Option(2, "--threads", help="intra-op threads for the CPU provider"),
    example_input: Path | None = typer.Option(
        None, "--example-input", help="torch.save'd inputs (as for shrink), tiled to each --batch; needed for token models"
    ),
    json_out: Path | None = typer.Option(None, "--json", help="also write the results as JSON"),
    force: bool = typer.Option(False, "--force", help="replace the --json file if it exists (never an input)"),
    verbose: bool = VerboseOpt,
) -> None:
    """Time ONNX models interleaved in ONNX Runtime on every available execution provider."""
    from graphprune.onnx.bench import bench as run_bench
    from graphprune.onnx.bench_table import render as render_bench
    from graphprune.onnx.feeds import example_arrays

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if json_out:
        io.check_output(json_out, [*models, example_input], force, option="--json")
    for m in models:
        io.check_onnx(m)
    inputs = example_arrays(io.load_example(example_input, None), list(models)) if example_input else None
    with console.status("benchmarking"):
        res = run_bench(list(models), batch_sizes=tuple(batch), repeats=repeats, warmup=warmup, threads=threads, inputs=inputs)
    out_console.print(render_bench(res))
    if json_out:
        io.save_text(json.dumps(res.to_dict(), indent=2, default=str), json_out)

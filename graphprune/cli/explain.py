"""`graphprune explain ORIGINAL PRUNED --data DATA`: the command (registered by graphprune.cli).

The example input that fits DATA to the models comes from --example-input / --input-shape, else
from a .pt2 file (which stores one), else from the pruned graph's own inputs (a model graphprune
wrote), else from DATA's first inputs when DATA is positional (an .npz 'x', a saved tensor).
Outputs are checked before any work: never an input, never an existing file without --force.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

from graphprune.cli.app import app, guard
from graphprune.cli.options import BatchOpt, ImageSizeOpt, MeanOpt, StdOpt, TokenizerOpt, open_data
from graphprune.errors import InputError
from graphprune.io import files as io

console = Console(stderr=True)
out_console = Console()


def _example(original, pruned, stored: tuple, example_input: Path | None, input_shape: str | None, tokenizer, data: str):
    from graphprune.explain.inputs import example_of_data, example_of_graph

    if example_input or input_shape:
        return io.load_example(example_input, input_shape)
    tok = _tokenizer(tokenizer) if tokenizer else None
    for found in (*stored, example_of_graph(pruned, tok), example_of_graph(original, tok)):
        if found is not None:
            return found
    found = example_of_data(data, original, tokenizer)
    if found is not None:
        return found
    raise InputError("cannot tell the models' input layout from the files; pass --example-input x.pt "
                     "(a saved input) or --input-shape 1,3,224,224")


def _tokenizer(folder: str):
    from graphprune.explain.run import load_tokenizer

    return load_tokenizer(folder)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, transient=True)
    task = bar.add_task("starting", total=None)

    def step(what: str, done: int, total: int) -> None:
        bar.update(task, description=what, completed=done, total=total or None)

    return bar, step


def explain_command(
    original: Path = typer.Argument(..., help="the original model (.pt from torch.save, .pt2, or a state_dict with --arch)"),
    pruned: Path = typer.Argument(..., help="the pruned model (.pt or .pt2); a shrink report beside it (stem + .json) is used"),
    data: str = typer.Option(..., "--data", help="inputs (and labels): .npz, image folder, saved tensors, text, module:factory"),
    output: Path | None = typer.Option(None, "-o", "--output", help="HTML report (default: PRUNED stem + .explain.html); "
                                       "its figures go beside it with .json"),
    samples: int = typer.Option(8, "--samples", help="inputs to explain with attributions (changed decisions first)"),
    batch_size: int = BatchOpt,
    tokenizer: Path | None = TokenizerOpt,
    image_size: int | None = ImageSizeOpt,
    mean: str | None = MeanOpt,
    std: str | None = StdOpt,
    input_shape: str | None = typer.Option(None, "--input-shape", help="shape of one float example input, e.g. 1,3,224,224"),
    example_input: Path | None = typer.Option(None, "--example-input", help="torch.save'd example input (tensor, tuple or dict)"),
    output_kind: str = typer.Option("auto", "--output-kind", help="auto, classes (scores [N, C]) or embedding (pooled)"),
    arch: str | None = typer.Option(None, "--arch", help="package.module:factory for ORIGINAL when it is a state_dict"),
    safe: bool = typer.Option(False, "--safe", help="refuse pickled models (they run code when loaded)"),
    force: bool = typer.Option(False, "--force", help="replace existing outputs (never an input)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Compare PRUNED with ORIGINAL: structure, decisions on every input, and their explanations (HTML + JSON)."""
    from graphprune.check.inputs import check_data, check_models
    from graphprune.data import check_labels
    from graphprune.explain import explain
    from graphprune.explain.structure import report_beside
    from graphprune.explain.write import json_path
    from graphprune.importance.calibration import first_output, is_class_scores

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    out = output or pruned.with_name(pruned.name.rsplit(".", 1)[0] + ".explain.html")
    inputs = [p for p in (original, pruned, example_input, Path(data)) if p is not None]
    for path in (out, json_path(out)):
        io.check_output(path, inputs, force)
    if samples < 0:
        raise InputError(f"--samples {samples} must be 0 or more")
    first, stored_a = io.load_model(original, arch=arch, safe=safe)
    second, stored_b = io.load_model(pruned, safe=safe)
    tok = str(tokenizer) if tokenizer else None
    example = _example(first, second, (stored_a, stored_b), example_input, input_shape, tok, data)
    reference = check_models([(f"ORIGINAL {original}", first), (f"PRUNED {pruned}", second)], example)[0]
    dataset = open_data(data, example, batch_size=batch_size, tokenizer=tokenizer, image_size=image_size, mean=mean, std=std)
    check_data([(f"ORIGINAL {original}", first), (f"PRUNED {pruned}", second)], dataset)
    if dataset.has_labels and is_class_scores(first_output(reference)):
        check_labels(dataset, reference)
    bar, step = _progress()
    with bar:
        result = explain(first, second, dataset, samples=samples, out=out, force=force, report=report_beside(pruned),
                         tokenizer=tok, output_kind=output_kind, progress=step, sources=(str(original), str(pruned)))
    d = result.to_dict()
    head = (f"top-1 agreement {d['top1_agreement']:.4f}" if d["top1_agreement"] is not None
            else f"output cosine {d['output_cosine']:.4f}")
    out_console.print(f"wrote {out} and {json_path(out)}: {head} on {d['decisions']['num_inputs']} inputs")


def check_explain_outputs(data: str | None, out: Path, inputs: list, force: bool) -> None:
    """`shrink --explain`: refuse it without --data, and its outputs where shrink refuses its own."""
    from graphprune.explain.write import json_path

    if data is None:
        raise InputError("--explain compares the two models on data; pass --data (e.g. test.npz)")
    for path in (out, json_path(out)):
        io.check_output(path, [p for p in inputs if p is not None], force)


def explain_pair(original, pruned, data, report: dict, status, tokenizer: str | None):
    """`shrink --explain`: the explanation of the pair shrink just made, progress shown on its status line."""
    import json

    from graphprune.explain import explain

    def step(what: str, done: int, total: int) -> None:
        status(f"explain: {what} ({done}/{total})")

    return explain(original, pruned, data, report=json.loads(json.dumps(report, default=str)), tokenizer=tokenizer,
                   progress=step)


app.command("explain")(guard(explain_command))

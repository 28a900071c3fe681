"""`graphprune export`: a model file to a checked ONNX file."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from graphprune.cli.app import VerboseOpt, app, console, default_out, guard, out_console
from graphprune.cli.groups import ModelSource, with_groups
from graphprune.io import files as io


@app.command()
@guard
@with_groups("model input_shape example_input output")  # --help's order
def export(
    source: ModelSource,
    output: Path | None = typer.Option(None, "-o", "--output", help="ONNX file [default: MODEL.onnx]"),
    force: bool = typer.Option(False, "--force", help="replace OUTPUT (and OUTPUT.data) if it exists"),
    verbose: bool = VerboseOpt,
) -> None:
    """Export MODEL to ONNX (dynamic batch), simplify it, and check parity in ONNX Runtime."""
    from graphprune.capture.trace import normalize_inputs
    from graphprune.check.inputs import check_models
    from graphprune.onnx.export import export_onnx
    from graphprune.onnx.files import data_path

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    out = output or default_out(source.model, ".onnx")
    if out.suffix != ".onnx":
        raise io.InputError(f"-o {out}: export writes an ONNX model; name it .onnx (shrink -o writes PyTorch models)")
    for file in (out, data_path(out)):
        io.check_output(file, [source.model, source.example_input], force)
    module, example = source.load()
    check_models([(str(source.model), module)], example, same_outputs=False)
    args, kwargs = normalize_inputs(example)
    with console.status("exporting"):
        result = export_onnx(module, args, kwargs, out)
    out_console.print(
        f"wrote {out} ({result.exporter} exporter, simplified={result.simplified}); parity in ONNX Runtime: "
        f"max abs error {result.max_abs_error:.3g}, max rel error {result.max_rel_error:.3g}"
        + (f"; {result.notes[0]}" if result.source_dtype else "")
    )

"""`graphprune eval`: accuracy, F1, agreement, params and MACs of model files on data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from graphprune.cli.app import (
    ArchOpt,
    ExampleOpt,
    SafeOpt,
    ShapeOpt,
    app,
    console,
    guard,
    out_console,
)
from graphprune.cli.options import BatchOpt, ImageSizeOpt, MeanOpt, StdOpt, TokenizerOpt, open_data
from graphprune.io import files as io


@app.command("eval")
@guard
def eval_(
    models: list[Path] = typer.Argument(..., help="model files; agreement is measured with the first"),
    data: str = typer.Option(..., "--data",
                             help="data with labels (accuracy, F1, ...) or without (agreement; causal LM text: perplexity)"),
    input_shape: str | None = ShapeOpt,
    example_input: Path | None = ExampleOpt,
    batch_size: int = BatchOpt,
    tokenizer: Path | None = TokenizerOpt,
    image_size: int | None = ImageSizeOpt,
    mean: str | None = MeanOpt,
    std: str | None = StdOpt,
    arch: str | None = ArchOpt,
    safe: bool = SafeOpt,
    json_out: Path | None = typer.Option(None, "--json", help="also write the table as JSON"),
    force: bool = typer.Option(False, "--force", help="replace --json OUT if it exists (never an input)"),
) -> None:
    """Accuracy, macro F1, precision, recall and loss (with labels), agreement with the first model,
    params and MACs of every MODEL on DATA."""
    from graphprune.check.inputs import check_data, check_models
    from graphprune.data import infer_example, taken_by
    from graphprune.measure.evaluate import evaluate, render

    if json_out is not None:
        io.check_output(json_out, [*models, Path(data), example_input], force)
    loaded = [io.load_model(m, arch=arch, safe=safe) for m in models]
    example = None
    if input_shape or example_input:
        example = io.load_example(example_input, input_shape)
    else:
        example = next((stored for _, stored in loaded if stored is not None), None)  # a tensor: no `or`
        if example is None:  # one sample of the data, keeping the inputs the first model's forward takes
            example = taken_by(loaded[0][0], infer_example(data, str(tokenizer) if tokenizer else None))
    if example is None:
        raise io.InputError(f"cannot tell the model's input from --data {data}; pass --input-shape or --example-input")
    check_models([(str(m), module) for m, (module, _) in zip(models, loaded, strict=True)], example)
    batches = open_data(data, example, batch_size=batch_size, tokenizer=tokenizer, image_size=image_size, mean=mean, std=std)
    check_data([(str(m), module) for m, (module, _) in zip(models, loaded, strict=True)], batches)
    with console.status("evaluating"):
        rows = evaluate([(str(m), module) for m, (module, _) in zip(models, loaded, strict=True)], batches)
    render(rows, out_console)
    if json_out is not None:
        io.save_text(json.dumps({"data": data, "models": [r.to_dict() for r in rows]}, indent=2), json_out)

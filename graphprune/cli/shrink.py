"""`graphprune shrink`: prune a model file and write the smaller model, its report and what was asked beside it."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import typer

from graphprune.cli.app import app, beside, console, default_out, guard, out_console
from graphprune.cli.finetune import other_rank, shrink_and_recover, training_options
from graphprune.cli.groups import ModelSource, with_groups
from graphprune.cli.options import DataFlags
from graphprune.cli.shrink_options import (
    CalibrationFlags,
    DepthFlags,
    OutputFlags,
    PlanFlags,
    SearchFlags,
    check_applies,
    shrink_options,
)
from graphprune.io import files as io

# --help's order (then the search's flags, --finetune-epochs, --steps and the training options)
ORDER = """model ratio input_shape example_input output target_macs target_params threshold global_ranking round_to
criterion data batch_size calib_batches tokenizer image_size mean std recalibrate bias_correction reconstruct
remove_blocks block_criterion prune_heads prune_head_dim prune_hidden arch safe force onnx bench explain verbose"""


@with_groups(ORDER)
def shrink(
    source: ModelSource,
    plan: PlanFlags,
    dataset: DataFlags,
    calibration: CalibrationFlags,
    depth: DepthFlags,
    outputs: OutputFlags,
    searching: SearchFlags,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="recover on --data for E epochs (original = teacher)"),
    steps: int = typer.Option(1, "--steps", help="reach the target in N steps, recovering between them"),
    recovery=None,  # graphprune.cli.finetune.Recovery: the data and training options (training_options adds them)
) -> None:
    """Prune MODEL and write the smaller dense model plus a JSON report beside it.

    With --target-latency or --speedup, per-group widths are searched under that budget, measured in
    ONNX Runtime; a plot of the search is written beside the report."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    request = searching.request(plan.round_to, dataset.data)
    if request and steps > 1:
        raise io.InputError("--steps does not combine with --speedup/--target-latency yet; drop one of them")
    paths = _Outputs.checked(source, outputs, search=bool(request), data=dataset.data)
    options = shrink_options(plan, calibration, depth, seed=searching.seed, has_data=dataset.data is not None,
                             search=request)
    check_applies(plan, options["depth"], outputs, searching, request, paths.model)
    module, example = source.load()
    data = dataset.open(example)
    if recovery is not None and recovery.val_data:  # the held-out slice: every choice is judged on it
        options["held_out"] = recovery.load(recovery.val_data, example)
    if searching.search_finetune:
        from graphprune.search.command import candidate_finetune

        request = replace(request, finetune=candidate_finetune(module, data, searching.search_finetune))
    with tempfile.TemporaryDirectory(dir=paths.model.parent, prefix=".graphprune.") as tmp:
        with console.status("starting") as status:
            pruned, report, extra = shrink_and_recover(
                module, example, options | {"data": data, "search": request},
                recovery, finetune_epochs, steps, paths.model, outputs.force, status)
            if other_rank():  # under torchrun only rank 0 writes
                return
            if outputs.onnx:
                status.update("exporting to ONNX and checking parity in ONNX Runtime")
                macs = (report.macs_before, report.macs_after)
                extra["onnx"] = _export_pair(module, pruned, example, Path(tmp) / paths.onnx.name, outputs.bench, macs,
                                             paths.onnx)
            explained = None
            if outputs.explain:
                from graphprune.cli.explain import explain_pair

                explained = explain_pair(module, pruned, data, report.to_dict() | extra, status.update,
                                         str(dataset.tokenizer) if dataset.tokenizer else None)
        _write(paths, source.model, pruned, example, report, extra, explained)


@dataclass(frozen=True)
class _Outputs:
    """Every file `shrink` writes; each refused before anything runs if it exists (without --force)
    or is one of the inputs."""

    model: Path
    report: Path
    onnx: Path | None
    plot: Path | None
    explain: Path | None

    @classmethod
    def checked(cls, source: ModelSource, flags: OutputFlags, *, search: bool, data) -> _Outputs:
        out = flags.output or default_out(source.model, ".pruned.pt")
        onnx, explain, force = flags.onnx, flags.explain, flags.force
        paths = cls(out, beside(out, ".json"), beside(out, ".onnx") if onnx else None,
                    beside(out, ".search.png") if search else None, beside(out, ".explain.html") if explain else None)
        inputs = [source.model, source.example_input]
        for file in (paths.model, paths.report, paths.plot):
            if file is not None:
                io.check_output(file, inputs, force)
        if onnx:
            from graphprune.onnx.files import data_path  # onnx loads only for --onnx

            for file in (paths.onnx, data_path(paths.onnx)):
                io.check_output(file, inputs, force)
        if explain:
            from graphprune.cli.explain import check_explain_outputs

            check_explain_outputs(data, paths.explain, inputs, force)
        return paths


def _write(paths: _Outputs, source: Path, pruned, example, report, extra: dict, explained) -> None:
    """Print the report, then write every output together (all appear, or none)."""
    from graphprune.capture.trace import normalize_inputs
    from graphprune.io.program import save_model
    from graphprune.report.report import render

    render(report, out_console)
    staged = extra["onnx"].pop("staged") if paths.onnx else None
    with io.atomic_outputs() as stage:
        save_model(pruned, *normalize_inputs(example), stage(paths.model), paths.model.suffix)
        stage(paths.report).write_text(json.dumps(report.to_dict() | extra, indent=2, default=str))
        if staged:
            from graphprune.onnx.files import stage_onnx

            stage_onnx(Path(staged), paths.onnx, stage)
        if paths.plot:
            from graphprune.search.plot import plot_search

            plot_search(report.search, stage(paths.plot))
        if paths.explain:
            from graphprune.explain.write import stage as stage_explanation

            stage_explanation(explained, paths.explain, stage, sources=(str(source), str(paths.model)))
    written = [p for p in (paths.model, paths.report, paths.onnx, paths.explain, paths.plot) if p is not None]
    out_console.print("wrote " + " and ".join(str(p) for p in written))


def _export_pair(original, pruned, example, onnx_path: Path, bench: bool, macs: tuple[int, int], final: Path) -> dict:
    """Export the pruned model to `onnx_path` (staged; the report names `final`); with `bench`, also
    the original, and time both (MACs from the report: eager fast paths, e.g. nn.TransformerEncoder's,
    hide MACs from torch's counter)."""
    from graphprune.capture.trace import normalize_inputs
    from graphprune.onnx.export import export_onnx

    args, kwargs = normalize_inputs(example)
    result = export_onnx(pruned, args, kwargs, onnx_path)
    if result.source_dtype:  # a bf16/fp16 model: the file is float32, and the user must know it
        out_console.print(f"onnx: {result.notes[0]}")
    info = {"pruned": result.__dict__ | {"path": str(final)}, "staged": str(result.path)}
    if bench:
        import tempfile

        from graphprune.onnx.bench import bench as run_bench
        from graphprune.onnx.bench_table import render as render_bench
        from graphprune.onnx.feeds import example_arrays

        with tempfile.TemporaryDirectory() as tmp:
            base = export_onnx(original, args, kwargs, Path(tmp) / "original.onnx")
            paths = [base.path, result.path]
            res = run_bench(paths, inputs=example_arrays(example, paths))
            out_console.print(render_bench(res, macs=list(macs) if all(macs) else None))
            names = {str(base.path): "original (exported for the benchmark, not kept)", str(result.path): str(final)}
            info["bench"] = res.to_dict() | {"models": [names[m] for m in res.models]}
            for row in info["bench"]["rows"]:
                row["model"] = names[row["model"]]
    return info


app.command("shrink")(guard(training_options(shrink)))

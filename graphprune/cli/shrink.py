"""`graphprune shrink`: prune a model file and write the smaller model, its report and what was asked beside it."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import typer

from graphprune.cli.app import (
    ArchOpt,
    ExampleOpt,
    ModelArg,
    SafeOpt,
    ShapeOpt,
    app,
    beside,
    console,
    default_out,
    guard,
    load_inputs,
    out_console,
)
from graphprune.cli.finetune import other_rank, shrink_and_recover, training_options
from graphprune.cli.options import BatchOpt, CalibOpt, DataOpt, ImageSizeOpt, MeanOpt, StdOpt, TokenizerOpt, open_data
from graphprune.io import files as io
from graphprune.search.command import options as search_options

SEARCH = search_options()


def shrink(
    model: Path = ModelArg,
    ratio: float = typer.Option(0.4, "--ratio", "-r", help="fraction of each prunable group to remove, in [0, 1)"),
    input_shape: str | None = ShapeOpt,
    example_input: Path | None = ExampleOpt,
    output: Path | None = typer.Option(
        None, "-o", "--output",
        help="pruned model file [default: MODEL.pruned.pt, a pickle]; a .pt2 name writes a torch.export program (no pickle)",
    ),
    target_macs: float | None = typer.Option(
        None, "--target-macs", help="budget: keep this fraction of the original's MACs, in (0, 1) (instead of --ratio)"),
    target_params: float | None = typer.Option(
        None, "--target-params", help="budget: keep this fraction of the original's parameters, in (0, 1)"),
    threshold: str | None = typer.Option(
        None, "--threshold", help="remove channels scoring below: mean, percentile:P or sigma:K (mu - K sigma); "
        "per group, or over all groups with --global"),
    global_ranking: bool = typer.Option(False, "--global", help="rank channels across groups (normalised scores, per-group cap)"),
    round_to: int | None = typer.Option(
        None, "--round-to", help="round each pruned group's width to a multiple of N [default: 8, ONNX Runtime CPU's "
        "block size; a latency search defaults to the provider's channel block: 16 on AVX-512 CPUs]"
    ),
    criterion: str | None = typer.Option(
        None, "--criterion", help="importance: l1, l2, bn, random (no data); taylor, gradient, fisher, act-mean, "
        "act-var, act-entropy, apoz (need --data); auto: the best of these on held-out data [default: auto with "
        "--data, else l2]; formulas in docs/CRITERIA.md"),
    data: str | None = DataOpt,
    batch_size: int = BatchOpt,
    calib_batches: int = CalibOpt,
    tokenizer: Path | None = TokenizerOpt,
    image_size: int | None = ImageSizeOpt,
    mean: str | None = MeanOpt,
    std: str | None = StdOpt,
    recalibrate: bool = typer.Option(
        True, "--recalibrate/--no-recalibrate", help="with --data: re-estimate BatchNorm statistics of the pruned model"),
    bias_correction: bool = typer.Option(
        True, "--bias-correction/--no-bias-correction", help="fold the removed channels' expected inputs (from "
        "BatchNorm statistics) into the next layer's bias; with --data kept only if held-out fidelity allows"),
    reconstruct: bool = typer.Option(
        True, "--reconstruct/--no-reconstruct", help="with --data: refit the layers that lost inputs by least squares "
        "to the original's outputs (kept only where held-out calibration error drops)"),
    remove_blocks: str = typer.Option(
        "0", "--remove-blocks", help="first remove K whole blocks (repeated residual layers, residual branches; "
        "inspect lists them): a count, or a fraction in (0, 1) of those found; ranked on --data, which it needs"),
    block_criterion: str = typer.Option(
        "loss", "--block-criterion", help="rank blocks by loss (the loss increase when the block alone is bypassed) "
        "or influence (1 - cos(block input, block output); one pass)"),
    prune_heads: bool = typer.Option(True, "--prune-heads/--no-prune-heads", help="remove whole attention heads"),
    prune_head_dim: bool = typer.Option(
        False, "--prune-head-dim", help="narrow every attention head instead of removing heads (implies --no-prune-heads)"
    ),
    prune_hidden: bool = typer.Option(
        True, "--prune-hidden/--no-prune-hidden",
        help="also prune widths normalised by LayerNorm/RMSNorm (a transformer's residual stream); this changes values",
    ),
    arch: str | None = ArchOpt,
    safe: bool = SafeOpt,
    force: bool = typer.Option(False, "--force", help="replace OUTPUT if it exists (never the input)"),
    onnx: bool = typer.Option(False, "--onnx", help="also export the pruned model to ONNX and check parity in ONNX Runtime"),
    bench: bool = typer.Option(False, "--bench", help="with --onnx: benchmark original vs pruned in ONNX Runtime"),
    explain: bool = typer.Option(False, "--explain", help="with --data: also write OUTPUT's stem + .explain.html and "
                                 ".explain.json, what pruning did to decisions and explanations (graphprune explain)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    target_latency: float | None = SEARCH["target_latency"],
    speedup: float | None = SEARCH["speedup"],
    search: str | None = SEARCH["search"],
    max_drop: float | None = SEARCH["max_drop"],
    provider: str = SEARCH["provider"],
    latency_batch: int | None = SEARCH["latency_batch"],
    threads: int | None = SEARCH["threads"],
    samples: int = SEARCH["samples"],
    seed: int = SEARCH["seed"],
    search_blocks: bool = SEARCH["search_blocks"],
    search_finetune: int = SEARCH["search_finetune"],
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="recover on --data for E epochs (original = teacher)"),
    steps: int = typer.Option(1, "--steps", help="reach the target in N steps, recovering between them"),
    recovery=None,  # graphprune.cli.finetune.Recovery: the data and training options (training_options adds them)
) -> None:
    """Prune MODEL and write the smaller dense model plus a JSON report beside it.

    With --target-latency or --speedup, per-group widths are searched under that budget, measured in
    ONNX Runtime; a plot of the search is written beside the report."""
    from graphprune.search.command import check_extras as check_search_extras
    from graphprune.search.command import request_from_options

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    request = request_from_options(target_latency=target_latency, speedup=speedup, strategy=search, max_drop=max_drop,
                                   provider=provider, latency_batch=latency_batch, threads=threads, samples=samples,
                                   seed=seed, round_to=round_to, blocks=search_blocks)
    check_search_extras(request, search_blocks, search_finetune, data)
    if request and steps > 1:
        raise io.InputError("--steps does not combine with --speedup/--target-latency yet; drop one of them")
    paths = _Outputs.checked(model, example_input, output, force, onnx=onnx, search=bool(request), explain=explain,
                             data=data)
    out = paths.model
    criterion = criterion or ("auto" if data is not None and not request else "l2")
    options = _shrink_options(ratio, global_ranking, round_to, criterion, threshold, target_macs, target_params,
                              prune_hidden, prune_heads, prune_head_dim, calib_batches, recalibrate, reconstruct, seed,
                              remove_blocks, block_criterion, has_data=data is not None, compensate=bias_correction)
    _check_applies(ratio=ratio, budget=target_macs is not None or target_params is not None, threshold=threshold,
                   search=request, bench=bench, onnx=onnx, out=out, blocks=options["depth"].blocks,
                   block_criterion=block_criterion,
                   unsearched={"--provider": provider != "cpu", "--latency-batch": latency_batch is not None,
                               "--threads": threads is not None}, samples=samples, strategy=search)
    module, example = load_inputs(model, arch, safe, example_input, input_shape)
    calibration = open_data(data, example, batch_size=batch_size, tokenizer=tokenizer, image_size=image_size,
                            mean=mean, std=std)
    if recovery is not None and recovery.val_data:  # the held-out slice: every choice is judged on it
        options["held_out"] = recovery.load(recovery.val_data, example)
    if search_finetune:
        from dataclasses import replace

        from graphprune.search.command import candidate_finetune

        request = replace(request, finetune=candidate_finetune(module, calibration, search_finetune))
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".graphprune.") as tmp:
        with console.status("starting") as status:
            pruned, report, extra = shrink_and_recover(
                module, example, options | {"data": calibration, "search": request},
                recovery, finetune_epochs, steps, out, force, status)
            if other_rank():  # under torchrun only rank 0 writes
                return
            if onnx:
                status.update("exporting to ONNX and checking parity in ONNX Runtime")
                macs = (report.macs_before, report.macs_after)
                extra["onnx"] = _export_pair(module, pruned, example, Path(tmp) / paths.onnx.name, bench, macs, paths.onnx)
            explained = None
            if explain:
                from graphprune.cli.explain import explain_pair

                explained = explain_pair(module, pruned, calibration, report.to_dict() | extra, status.update,
                                         str(tokenizer) if tokenizer else None)
        _write(paths, model, pruned, example, report, extra, explained)


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
    def checked(cls, source: Path, example_input, output, force: bool, *, onnx: bool, search: bool, explain: bool,
                data) -> _Outputs:
        out = output or default_out(source, ".pruned.pt")
        paths = cls(out, beside(out, ".json"), beside(out, ".onnx") if onnx else None,
                    beside(out, ".search.png") if search else None, beside(out, ".explain.html") if explain else None)
        inputs = [source, example_input]
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


def _check_applies(*, ratio: float, budget: bool, threshold, search, bench: bool, onnx: bool, out: Path, blocks,
                   block_criterion: str, unsearched: dict, samples: int, strategy: str | None) -> None:
    """Options that another option overrides, or that apply only with one not given, are refused, never ignored."""
    rules = [name for name, on in (("--target-macs/--target-params", budget), ("--threshold", threshold is not None),
                                   ("--speedup/--target-latency", search is not None)) if on]
    if len(rules) > 1:
        raise io.InputError(f"{' and '.join(rules)} both decide what goes; pass one")
    if rules and ratio != 0.4:
        raise io.InputError(f"--ratio and {rules[0]} both decide how much goes; pass one")
    if bench and not onnx:
        raise io.InputError("--bench times the ONNX export of both models; add --onnx")
    if not blocks and block_criterion != "loss":
        raise io.InputError(f"--block-criterion ranks the blocks --remove-blocks removes; add --remove-blocks K or drop "
                            f"--block-criterion {block_criterion}")
    given = [flag for flag, on in unsearched.items() if on]
    if given and search is None:
        raise io.InputError(f"{' and '.join(given)} set how a latency search measures; add --speedup X or "
                            f"--target-latency F, or drop {' and '.join(given)}")
    if samples != 16 and (search is None or (strategy or "greedy") != "random"):
        raise io.InputError("--samples is how many configurations --search random tries; add --search random "
                            "(with --speedup X) or drop --samples")
    if out.suffix == ".onnx":
        raise io.InputError(f"-o {out} would hold the pruned PyTorch model, not ONNX; name it .pt or .pt2 and add "
                            "--onnx, which writes the ONNX file beside it")


def _shrink_options(ratio, global_ranking, round_to, criterion, threshold, target_macs, target_params, prune_hidden,
                    prune_heads, prune_head_dim, calib_batches, recalibrate, reconstruct, seed, remove_blocks,
                    block_criterion, has_data: bool, compensate: bool = True) -> dict:
    """graphprune.api.shrink's option objects from the flags, checked before anything is loaded."""
    from graphprune.data.options import CalibrationOptions
    from graphprune.depth import parse_count
    from graphprune.depth.options import DepthOptions
    from graphprune.pipeline.shrink import check
    from graphprune.plan.types import PlanOptions

    plan = PlanOptions(ratio=ratio, global_ranking=global_ranking, round_to=8 if round_to is None else round_to,
                       criterion=criterion, threshold=threshold, target_macs=target_macs, target_params=target_params,
                       prune_hidden=prune_hidden,
                       attention="head-dim" if prune_head_dim else "heads" if prune_heads else "none")
    calibration = CalibrationOptions(batches=calib_batches, recalibrate=recalibrate, reconstruct=reconstruct, seed=seed,
                                     compensate=compensate)
    depth = DepthOptions(blocks=parse_count(remove_blocks), criterion=block_criterion)
    check(plan, calibration, depth, has_data=has_data)
    return {"plan": plan, "calibration": calibration, "depth": depth}


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

"""The `graphprune` command line: a thin layer over graphprune.api.

Exit codes: 0 success, 2 a refused input or a check that failed (one line on stderr
names the cause and the fix), 130 interrupted. Nothing is written unless the whole
step succeeds.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from graphprune import io
from graphprune.cli_options import BatchOpt, CalibOpt, DataOpt, ImageSizeOpt, MeanOpt, StdOpt, TokenizerOpt, open_data
from graphprune.errors import GraphPruneError, first_line
from graphprune.search.command import options as search_options

PICKLE_WARNING = (
    "MODEL is a file written by torch.save(model) or torch.export.save (.pt2). Loading a pickled "
    "module (torch.save) RUNS CODE FROM THE FILE: only use files you trust. Safe formats: .pt2, or "
    "--arch package.module:factory with a state_dict; --safe refuses pickles."
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Structured pruning for PyTorch models. " + PICKLE_WARNING)
console = Console(stderr=True)
out_console = Console()

ModelArg = typer.Argument(..., help="model file (.pt from torch.save, or .pt2 from torch.export.save)")
ShapeOpt = typer.Option(None, "--input-shape", help="shape of one float example input, e.g. 1,3,224,224")
ExampleOpt = typer.Option(None, "--example-input", help="torch.save'd tensor, tuple (positional) or dict (keyword) of inputs")
ArchOpt = typer.Option(None, "--arch", help="package.module:factory that builds the model; MODEL is then a state_dict (safe)")
SafeOpt = typer.Option(False, "--safe", help="refuse pickled models (they run code when loaded)")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="log progress; on an unexpected error, print its traceback")


SEARCH = search_options()


def _fail(message: str, code: int = 2) -> None:
    console.print("[bold red]error:[/bold red] " + escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(model: Path, arch, safe, example, shape):
    module, stored = io.load_model(model, arch=arch, safe=safe)
    return module, io.load_example(example, shape, fallback=stored)


def _beside(out: Path, suffix: str) -> Path:
    """OUT with another suffix, never OUT itself (-o model.json keeps its report apart)."""
    other = out.with_suffix(suffix)
    return other if other != out else out.with_name(out.name + ".report" + suffix)


def _default_out(model: Path, suffix: str) -> Path:
    return model.with_name(model.name.rsplit(".", 1)[0] + suffix)


def _guard(fn):
    """Every failure ends in one `error:` line and exit code 2 (Ctrl-C: 130), nothing written.

    graphprune's own errors say the cause and the fix; any other exception is a graphprune bug,
    named by its type and first line. `--verbose` prints its traceback first.
    """
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except GraphPruneError as exc:
            _fail(" ".join(str(exc).split()) or type(exc).__name__)
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written", 130)
        except OSError as exc:
            _fail(f"cannot write or read a file: {first_line(exc)}; check the path and free disk space")
        except Exception as exc:  # noqa: BLE001 - anything else is a bug: still one line, exit 2
            if kwargs.get("verbose"):
                console.print_exception()
            _fail(f"unexpected {type(exc).__name__}: {first_line(exc)}; nothing was written. This is a graphprune bug: "
                  "rerun with --verbose for the traceback and report it")

    return wrapper


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
    criterion: str = typer.Option(
        "l2", "--criterion", help="importance: l1, l2, bn, random (no data); taylor, gradient, fisher, act-mean, "
        "act-var, act-entropy, apoz (need --data); formulas in docs/CRITERIA.md"),
    data: str | None = DataOpt,
    batch_size: int = BatchOpt,
    calib_batches: int = CalibOpt,
    tokenizer: Path | None = TokenizerOpt,
    image_size: int | None = ImageSizeOpt,
    mean: str | None = MeanOpt,
    std: str | None = StdOpt,
    recalibrate: bool = typer.Option(
        True, "--recalibrate/--no-recalibrate", help="with --data: re-estimate BatchNorm statistics of the pruned model"),
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
    recovery=None,  # graphprune.cli_finetune.Recovery: the data and training options (training_options adds them)
) -> None:
    """Prune MODEL and write the smaller dense model plus a JSON report beside it.

    With --target-latency or --speedup, per-group widths are searched under that budget, measured in
    ONNX Runtime; a plot of the search is written beside the report."""
    from graphprune.api import shrink as run_shrink
    from graphprune.capture import normalize_inputs
    from graphprune.export import data_path, stage_onnx
    from graphprune.program import save_model
    from graphprune.search.command import check_extras as check_search_extras
    from graphprune.search.command import request_from_options

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    request = request_from_options(target_latency=target_latency, speedup=speedup, strategy=search, max_drop=max_drop,
                                   provider=provider, latency_batch=latency_batch, threads=threads, samples=samples,
                                   seed=seed, round_to=round_to, blocks=search_blocks)
    check_search_extras(request, search_blocks, search_finetune, data)
    out = output or _default_out(model, ".pruned.pt")
    report_path = _beside(out, ".json")
    onnx_path = _beside(out, ".onnx")
    plot_path = _beside(out, ".search.png")
    io.check_output(out, [model, example_input], force)
    io.check_output(report_path, [model, example_input], force)
    if onnx:
        for file in (onnx_path, data_path(onnx_path)):
            io.check_output(file, [model, example_input], force)
    if request:
        io.check_output(plot_path, [model, example_input], force)
        if steps > 1:
            raise io.InputError("--steps does not combine with --speedup/--target-latency yet; drop one of them")
    explain_path = _beside(out, ".explain.html")
    if explain:
        from graphprune.explain.cli import check_explain_outputs

        check_explain_outputs(data, explain_path, [model, example_input], force)
    if not 0.0 <= ratio < 1.0:
        raise io.InputError(f"--ratio {ratio} is outside [0, 1); e.g. --ratio 0.4 removes 40% of each group")
    if round_to is not None and round_to < 1:
        raise io.InputError(f"--round-to {round_to} must be 1 or more (1 turns rounding off)")
    _check_targets(target_macs, target_params, threshold, criterion, data, calib_batches)
    blocks = _check_blocks(remove_blocks, block_criterion, data)
    module, example = _load(model, arch, safe, example_input, input_shape)
    calibration = open_data(data, example, batch_size=batch_size, tokenizer=tokenizer, image_size=image_size,
                            mean=mean, std=std)
    if search_finetune:
        from dataclasses import replace

        from graphprune.search.command import candidate_finetune

        request = replace(request, finetune=candidate_finetune(module, calibration, search_finetune))
    import tempfile

    from graphprune.report import render

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".graphprune.") as tmp:
        with console.status("starting") as status:
            attention = "head-dim" if prune_head_dim else "heads" if prune_heads else "none"
            pruned, report, extra = cli_finetune.shrink_and_recover(
                run_shrink, module, example, ratio,
                dict(global_ranking=global_ranking, round_to=8 if round_to is None else round_to, criterion=criterion,
                     prune_hidden=prune_hidden,
                     attention=attention, data=calibration, calib_batches=calib_batches, recalibrate=recalibrate,
                     reconstruct=reconstruct,
                     threshold=threshold, target_macs=target_macs, target_params=target_params,
                     remove_blocks=blocks, block_criterion=block_criterion) | ({"search": request} if request else {}),
                recovery, finetune_epochs, steps, out, force, status)
            if cli_finetune.other_rank():  # under torchrun only rank 0 writes
                return
            if onnx:
                status.update("exporting to ONNX and checking parity in ONNX Runtime")
                macs = (report.macs_before, report.macs_after)
                extra["onnx"] = _export_pair(module, pruned, example, Path(tmp) / onnx_path.name, bench, macs, onnx_path)
            if explain:
                from graphprune.explain.cli import explain_pair

                explained = explain_pair(module, pruned, calibration, report.to_dict() | extra, status.update,
                                         str(tokenizer) if tokenizer else None)
        render(report, out_console)
        staged = extra["onnx"].pop("staged") if onnx else None
        with io.atomic_outputs() as stage:  # all three appear together, or none
            save_model(pruned, *normalize_inputs(example), stage(out), out.suffix)
            stage(report_path).write_text(json.dumps(report.to_dict() | extra, indent=2, default=str))
            if staged:
                stage_onnx(Path(staged), onnx_path, stage)
            if request:
                from graphprune.search.plot import plot_search

                plot_search(report.search, stage(plot_path))
            if explain:
                from graphprune.explain.write import stage as stage_explanation

                stage_explanation(explained, explain_path, stage, sources=(str(model), str(out)))
    out_console.print(f"wrote {out} and {report_path}" + (f" and {onnx_path}" if onnx else "")
                      + (f" and {explain_path}" if explain else "") + (f" and {plot_path}" if request else ""))


def _check_blocks(remove_blocks: str, criterion: str, data) -> float:
    """--remove-blocks K as a count or fraction, refused before anything is loaded when unusable."""
    from graphprune.depth import CRITERIA, parse_count

    count = parse_count(remove_blocks)
    if criterion not in CRITERIA:
        raise io.InputError(f"unknown --block-criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    if count and data is None:
        raise io.InputError("--remove-blocks ranks blocks on calibration data; pass --data FILE (inputs, labels optional)")
    return count


def _check_targets(target_macs, target_params, threshold, criterion, data, calib_batches) -> None:
    """Refuse impossible combinations of cut options before anything is loaded."""
    from graphprune.importance import CRITERIA

    for flag, value in (("--target-macs", target_macs), ("--target-params", target_params)):
        if value is not None and not 0.0 < value < 1.0:
            raise io.InputError(f"{flag} {value} is outside (0, 1): it is the fraction of the original to keep, e.g. 0.5")
    if target_macs is not None and target_params is not None:
        raise io.InputError("pass one budget: --target-macs or --target-params, not both")
    if threshold is not None and (target_macs is not None or target_params is not None):
        raise io.InputError("--threshold and a --target-* budget both decide how much goes; pass one")
    if criterion not in CRITERIA:
        raise io.InputError(f"unknown criterion {criterion!r} (--criterion); choose from {', '.join(sorted(CRITERIA))}")
    if CRITERIA[criterion].needs_data and data is None:
        raise io.InputError(f"--criterion {criterion} is measured on data; pass --data (e.g. train.npz)")
    if calib_batches < 1:
        raise io.InputError(f"--calib-batches {calib_batches} must be 1 or more")
    if threshold is not None:
        from graphprune.cuts import parse_threshold

        parse_threshold(threshold)


def _export_pair(original, pruned, example, onnx_path: Path, bench: bool, macs: tuple[int, int], final: Path) -> dict:
    """Export the pruned model to `onnx_path` (staged; the report names `final`); with `bench`, also
    the original, and time both (MACs from the report: eager fast paths, e.g. nn.TransformerEncoder's,
    hide MACs from torch's counter)."""
    from graphprune.capture import normalize_inputs
    from graphprune.export import export_onnx

    args, kwargs = normalize_inputs(example)
    result = export_onnx(pruned, args, kwargs, onnx_path)
    if result.source_dtype:  # a bf16/fp16 model: the file is float32, and the user must know it
        out_console.print(f"onnx: {result.notes[0]}")
    info = {"pruned": result.__dict__ | {"path": str(final)}, "staged": str(result.path)}
    if bench:
        import tempfile

        from graphprune.bench import bench as run_bench
        from graphprune.bench import render as render_bench
        from graphprune.feeds import example_arrays

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


@app.command()
@_guard
def inspect(
    model: Path = ModelArg,
    input_shape: str | None = ShapeOpt,
    example_input: Path | None = ExampleOpt,
    arch: str | None = ArchOpt,
    safe: bool = SafeOpt,
    show_all: bool = typer.Option(False, "--all", help="also list groups frozen by shape-only dims"),
    verbose: bool = VerboseOpt,
) -> None:
    """Print the prunable groups of MODEL and what froze the others, without pruning."""
    from rich.table import Table

    from graphprune.api import analyze
    from graphprune.planner import PlanOptions, plan
    from graphprune.report import interesting

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    module, example = _load(model, arch, safe, example_input, input_shape)
    with console.status("capturing and analysing"):
        graph = analyze(module, example)
        decisions = plan(graph, PlanOptions(ratio=0.0)).decisions
    shown = list(decisions) if show_all else interesting(decisions)
    table = Table(title=f"{len(shown)} groups ({len(decisions)} in all); dynamic batch: {graph.captured.dynamic_batch}"
                  + (f"; dynamic sequence: {graph.captured.dynamic_sequence}" if graph.captured.dynamic_sequence else ""))
    for col in ("group", "width", "prunable channels", "frozen channels / why"):
        table.add_column(col, overflow="fold")
    by_name = {g.name: g for g in graph.groups}
    for d in shown:
        g = by_name.get(d.group)
        table.add_row(d.group, str(d.width_before), str(d.candidates),
                      f"{g.frozen_channels}: {g.reason}" if g and g.frozen_channels else "")
    out_console.print(table)
    for op in graph.unknown:
        out_console.print(f"no rule, frozen: {op}")
    from graphprune.depth import listing
    from graphprune.depth.show import removable_table

    blocks = listing(graph.captured)
    out_console.print(removable_table(blocks) if blocks else
                      "0 removable blocks (no repeated residual layers or residual branches)")


@app.command()
@_guard
def export(
    model: Path = ModelArg,
    input_shape: str | None = ShapeOpt,
    example_input: Path | None = ExampleOpt,
    output: Path | None = typer.Option(None, "-o", "--output", help="ONNX file [default: MODEL.onnx]"),
    arch: str | None = ArchOpt,
    safe: bool = SafeOpt,
    force: bool = typer.Option(False, "--force", help="replace OUTPUT (and OUTPUT.data) if it exists"),
    verbose: bool = VerboseOpt,
) -> None:
    """Export MODEL to ONNX (dynamic batch), simplify it, and check parity in ONNX Runtime."""
    from graphprune.capture import normalize_inputs
    from graphprune.export import data_path, export_onnx

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    out = output or _default_out(model, ".onnx")
    for file in (out, data_path(out)):
        io.check_output(file, [model, example_input], force)
    module, example = _load(model, arch, safe, example_input, input_shape)
    args, kwargs = normalize_inputs(example)
    with console.status("exporting"):
        result = export_onnx(module, args, kwargs, out)
    out_console.print(
        f"wrote {out} ({result.exporter} exporter, simplified={result.simplified}); parity in ONNX Runtime: "
        f"max abs error {result.max_abs_error:.3g}, max rel error {result.max_rel_error:.3g}"
        + (f"; {result.notes[0]}" if result.source_dtype else "")
    )


@app.command()
@_guard
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
    from graphprune.bench import bench as run_bench
    from graphprune.bench import render as render_bench
    from graphprune.feeds import example_arrays

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


@app.command("eval")
@_guard
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
    from graphprune.data import infer_example
    from graphprune.evaluate import evaluate, render

    if json_out is not None:
        io.check_output(json_out, [*models, Path(data), example_input], force)
    loaded = [io.load_model(m, arch=arch, safe=safe) for m in models]
    example = None
    if input_shape or example_input:
        example = io.load_example(example_input, input_shape)
    else:
        example = next((stored for _, stored in loaded if stored is not None), None) or \
            infer_example(data, str(tokenizer) if tokenizer else None)
    if example is None:
        raise io.InputError(f"cannot tell the model's input from --data {data}; pass --input-shape or --example-input")
    batches = open_data(data, example, batch_size=batch_size, tokenizer=tokenizer, image_size=image_size, mean=mean, std=std)
    with console.status("evaluating"):
        rows = evaluate([(str(m), module) for m, (module, _) in zip(models, loaded, strict=True)], batches)
    render(rows, out_console)
    if json_out is not None:
        io.save_text(json.dumps({"data": data, "models": [r.to_dict() for r in rows]}, indent=2), json_out)


from graphprune.explain.cli import explain_command  # noqa: E402 - the command's body lives with its package

app.command("explain")(_guard(explain_command))

from graphprune import cli_finetune  # noqa: E402 - after app, _guard, _fail: it uses them

cli_finetune.register(sys.modules[__name__])
app.command("shrink")(_guard(cli_finetune.training_options(shrink)))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("[bold red]error:[/bold red] interrupted; nothing was written")
        sys.exit(130)


if __name__ == "__main__":
    main()

"""`graphprune shrink`'s flags by concern (graphprune.cli.groups), and the option objects they make.

Each group builds what graphprune.api.shrink takes (PlanOptions, CalibrationOptions, DepthOptions,
a SearchRequest); `shrink_options` builds them all and checks them before anything is loaded, and
`check_applies` refuses a flag that another one overrides or that would be ignored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from graphprune.cli.groups import flag
from graphprune.io import files as io
from graphprune.search.command import options as search_options

SEARCH = search_options()


@dataclasses.dataclass(frozen=True)
class PlanFlags:
    """How much goes and how channels are ranked: graphprune.plan.types.PlanOptions."""

    ratio: float = flag(typer.Option(0.4, "--ratio", "-r", help="fraction of each prunable group to remove, in [0, 1)"))
    target_macs: float | None = flag(typer.Option(
        None, "--target-macs", help="budget: keep this fraction of the original's MACs, in (0, 1) (instead of --ratio)"))
    target_params: float | None = flag(typer.Option(
        None, "--target-params", help="budget: keep this fraction of the original's parameters, in (0, 1)"))
    threshold: str | None = flag(typer.Option(
        None, "--threshold", help="remove channels scoring below: mean, percentile:P or sigma:K (mu - K sigma); "
        "per group, or over all groups with --global"))
    global_ranking: bool = flag(typer.Option(
        False, "--global", help="rank channels across groups (normalised scores, per-group cap)"))
    round_to: int | None = flag(typer.Option(
        None, "--round-to", help="round each pruned group's width to a multiple of N [default: 8, ONNX Runtime CPU's "
        "block size; a latency search defaults to the provider's channel block: 16 on AVX-512 CPUs]"))
    criterion: str | None = flag(typer.Option(
        None, "--criterion", help="importance: l1, l2, bn, share, random (no data); taylor, gradient, fisher, "
        "act-mean, act-var, act-entropy, apoz (need --data); auto: with --data the best of these on held-out data, "
        "without it share [default: auto; l2 with --speedup or --target-latency]; formulas in docs/CRITERIA.md"))
    prune_heads: bool = flag(typer.Option(True, "--prune-heads/--no-prune-heads", help="remove whole attention heads"))
    prune_head_dim: bool = flag(typer.Option(
        False, "--prune-head-dim", help="narrow every attention head instead of removing heads (implies --no-prune-heads)"))
    prune_hidden: bool = flag(typer.Option(
        True, "--prune-hidden/--no-prune-hidden",
        help="also prune widths normalised by LayerNorm/RMSNorm (a transformer's residual stream); this changes values"))

    def options(self, criterion: str):
        """PlanOptions with `criterion` where --criterion was not given."""
        from graphprune.plan.types import PlanOptions

        return PlanOptions(ratio=self.ratio, global_ranking=self.global_ranking,
                           round_to=8 if self.round_to is None else self.round_to,
                           criterion=self.criterion or criterion, threshold=self.threshold,
                           target_macs=self.target_macs, target_params=self.target_params,
                           prune_hidden=self.prune_hidden,
                           attention="head-dim" if self.prune_head_dim else "heads" if self.prune_heads else "none")


@dataclasses.dataclass(frozen=True)
class CalibrationFlags:
    """What the data stages after the cut do: graphprune.data.options.CalibrationOptions."""

    calib_batches: int = flag(typer.Option(16, "--calib-batches", help="batches of --data read by every stage that uses "
                                      "data: scoring, allocation, refit, BatchNorm re-estimation"))
    recalibrate: bool = flag(typer.Option(
        True, "--recalibrate/--no-recalibrate", help="with --data: re-estimate BatchNorm statistics of the pruned model"))
    bias_correction: bool = flag(typer.Option(
        True, "--bias-correction/--no-bias-correction", help="fold the removed channels' expected inputs (from "
        "BatchNorm statistics) into the next layer's bias; with --data kept only if held-out fidelity allows"))
    reconstruct: bool = flag(typer.Option(
        True, "--reconstruct/--no-reconstruct", help="with --data: refit the layers that lost inputs by least squares "
        "to the original's outputs (kept only where held-out calibration error drops)"))

    def options(self, seed: int):
        from graphprune.data.options import CalibrationOptions

        return CalibrationOptions(batches=self.calib_batches, recalibrate=self.recalibrate,
                                  reconstruct=self.reconstruct, seed=seed, compensate=self.bias_correction)


@dataclasses.dataclass(frozen=True)
class DepthFlags:
    """Whole blocks removed first: graphprune.depth.options.DepthOptions."""

    remove_blocks: str = flag(typer.Option(
        "0", "--remove-blocks", help="first remove K whole blocks (repeated residual layers, residual branches; "
        "inspect lists them): a count, or a fraction in (0, 1) of those found; ranked on --data, which it needs; "
        "under a --target-* budget, kept only if held-out data finds them better than widths alone"))
    block_criterion: str = flag(typer.Option(
        "loss", "--block-criterion", help="rank blocks by loss (the loss increase when the block alone is bypassed) "
        "or influence (1 - cos(block input, block output); one pass)"))

    def options(self):
        from graphprune.depth import parse_count
        from graphprune.depth.options import DepthOptions

        return DepthOptions(blocks=parse_count(self.remove_blocks), criterion=self.block_criterion)


@dataclasses.dataclass(frozen=True)
class OutputFlags:
    """What shrink writes besides the report, and whether it may replace files."""

    output: Path | None = flag(typer.Option(
        None, "-o", "--output",
        help="pruned model file [default: MODEL.pruned.pt, a pickle]; a .pt2 name writes a torch.export program (no pickle)"))
    force: bool = flag(typer.Option(False, "--force", help="replace OUTPUT if it exists (never the input)"))
    onnx: bool = flag(typer.Option(
        False, "--onnx", help="also export the pruned model to ONNX and check parity in ONNX Runtime"))
    bench: bool = flag(typer.Option(False, "--bench", help="with --onnx: benchmark original vs pruned in ONNX Runtime"))
    explain: bool = flag(typer.Option(False, "--explain", help="with --data: also write OUTPUT's stem + .explain.html and "
                                 ".explain.json, what pruning did to decisions and explanations (graphprune explain)"))


@dataclasses.dataclass(frozen=True)
class SearchFlags:
    """A latency budget and how it is searched (graphprune.search.command's options)."""

    target_latency: float | None = flag(SEARCH["target_latency"])
    speedup: float | None = flag(SEARCH["speedup"])
    search: str | None = flag(SEARCH["search"])
    max_drop: float | None = flag(SEARCH["max_drop"])
    provider: str = flag(SEARCH["provider"])
    latency_batch: int | None = flag(SEARCH["latency_batch"])
    threads: int | None = flag(SEARCH["threads"])
    samples: int = flag(SEARCH["samples"])
    seed: int = flag(SEARCH["seed"])
    search_blocks: bool = flag(SEARCH["search_blocks"])
    search_finetune: int = flag(SEARCH["search_finetune"])

    def request(self, round_to: int | None, data):
        """The SearchRequest, or None without a latency budget; refused flags raise InputError."""
        from graphprune.search.command import check_extras, request_from_options

        request = request_from_options(target_latency=self.target_latency, speedup=self.speedup, strategy=self.search,
                                       max_drop=self.max_drop, provider=self.provider,
                                       latency_batch=self.latency_batch, threads=self.threads, samples=self.samples,
                                       seed=self.seed, round_to=round_to, blocks=self.search_blocks)
        check_extras(request, self.search_blocks, self.search_finetune, data)
        return request


def shrink_options(plan: PlanFlags, calibration: CalibrationFlags, depth: DepthFlags, *, seed: int, has_data: bool,
                   search) -> dict:
    """graphprune.api.shrink's option objects from the flags, checked before anything is loaded."""
    from graphprune.pipeline.shrink import check

    options = {"plan": plan.options("l2" if search else "auto"),
               "calibration": calibration.options(seed), "depth": depth.options()}
    check(options["plan"], options["calibration"], options["depth"], has_data=has_data)
    return options


def check_applies(plan: PlanFlags, depth, outputs: OutputFlags, searching: SearchFlags, search, out: Path) -> None:
    """Options that another option overrides, or that apply only with one not given, are refused, never ignored.
    `depth`: the DepthOptions made from the flags; `search`: the SearchRequest or None; `out`: the model's path."""
    rules = [name for name, on in (("--target-macs/--target-params", plan.target_macs is not None
                                    or plan.target_params is not None),
                                   ("--threshold", plan.threshold is not None),
                                   ("--speedup/--target-latency", search is not None)) if on]
    if len(rules) > 1:
        raise io.InputError(f"{' and '.join(rules)} both decide what goes; pass one")
    if rules and plan.ratio != 0.4:
        raise io.InputError(f"--ratio and {rules[0]} both decide how much goes; pass one")
    if outputs.bench and not outputs.onnx:
        raise io.InputError("--bench times the ONNX export of both models; add --onnx")
    if not depth.blocks and depth.criterion != "loss":
        raise io.InputError(f"--block-criterion ranks the blocks --remove-blocks removes; add --remove-blocks K or drop "
                            f"--block-criterion {depth.criterion}")
    unsearched = {"--provider": searching.provider != "cpu", "--latency-batch": searching.latency_batch is not None,
                  "--threads": searching.threads is not None}
    given = [name for name, on in unsearched.items() if on]
    if given and search is None:
        raise io.InputError(f"{' and '.join(given)} set how a latency search measures; add --speedup X or "
                            f"--target-latency F, or drop {' and '.join(given)}")
    if searching.samples != 16 and (search is None or (searching.search or "greedy") != "random"):
        raise io.InputError("--samples is how many configurations --search random tries; add --search random "
                            "(with --speedup X) or drop --samples")
    if out.suffix == ".onnx":
        raise io.InputError(f"-o {out} would hold the pruned PyTorch model, not ONNX; name it .pt or .pt2 and add "
                            "--onnx, which writes the ONNX file beside it")

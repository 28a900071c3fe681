"""`shrink`: every stage in order, each checked, the report written as it goes.

capture -> (depth) -> dependency graph -> scores -> plan (or search, or allocation by measurement)
-> rewrite -> checks -> refit and BatchNorm re-estimation on data -> costs and report.
A model that torch.export cannot capture whole goes to graphprune.pipeline.parts.

Options come as objects, each field documented where it is defined: PlanOptions (what goes:
ratio, budgets, criterion, rounding, attention), CalibrationOptions (how data is used),
DepthOptions (whole blocks first), a SearchRequest (widths searched under a latency budget).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

from graphprune import depth as blocks_api
from graphprune.capture.depgraph import DependencyGraph, build
from graphprune.capture.trace import Captured, capture, normalize_inputs
from graphprune.check import verify
from graphprune.check.oracle import dead_channel_check
from graphprune.cost.macs import count_macs, count_params
from graphprune.data import check_labels
from graphprune.data.options import CalibrationOptions
from graphprune.depth.options import DepthOptions
from graphprune.errors import InputError, TraceError, VerificationError, first_line
from graphprune.pipeline import allocate
from graphprune.plan.planner import plan as make_plan
from graphprune.plan.types import Plan, PlanOptions
from graphprune.report.report import Report
from graphprune.rewrite.recalibrate import recalibrate as recalibrate_bn
from graphprune.rewrite.reconstruct import reconstruct as refit_layers
from graphprune.rewrite.rewriter import rewrite as make_model

log = logging.getLogger(__name__)


def check(plan: PlanOptions, calibration: CalibrationOptions, depth: DepthOptions, has_data: bool,
          has_scores: bool = False) -> None:
    """Refuse options that cannot work together, before anything is loaded or run (the CLI calls it first)."""
    from graphprune.importance import CRITERIA

    plan.check()
    calibration.check()
    depth.check(has_data)
    if not has_scores and CRITERIA[plan.criterion].needs_data and not has_data:
        raise InputError(f"--criterion {plan.criterion} is measured on data; pass --data (e.g. train.npz)")


def verified(plan: Plan, pruned: torch.nn.Module, reference) -> str:
    """Run the pruned model on the example input and check it against the original."""
    captured = plan.graph.captured
    got = verify.run(pruned, captured.args, captured.kwargs)
    if plan.removed.any():
        verify.check_structure(reference, got)
        return "output structure and shapes match the original"
    verify.check_equal(reference, got)
    return "nothing removed; outputs equal the original"


def run_original(model: torch.nn.Module, args: tuple, kwargs: dict):
    """Run the user's model on the example input; a failure is the user's input's fault."""
    try:
        return verify.run(model, args, kwargs)
    except Exception as exc:  # noqa: BLE001 - reported as one line naming the cause
        raise InputError(
            f"the model rejects the example input ({type(exc).__name__}: {first_line(exc)}); "
            "pass an input of the shape and dtype the model expects"
        ) from exc


def _scores(graph: DependencyGraph, criterion, data, calib_batches: int | None, seed: int):
    """(scores per channel, calibration info) from a criterion name, a user's array or a callable."""
    from graphprune.importance import LOSSES, Calibration, score

    if isinstance(criterion, str):
        calibration = Calibration(data=data, limit=calib_batches, seed=seed)
        scores = score(graph, criterion, calibration=calibration)
        info = {"criterion": criterion, "notes": calibration.notes}
        if calibration.loss:
            info["loss"] = "; ".join(LOSSES[k] for k in calibration.loss.split("+"))
        if calibration.cache:
            info["batches"] = calib_batches
        return scores, info
    values = criterion(graph) if callable(criterion) else criterion
    return np.asarray(values, dtype=np.float64), {"criterion": "user scores"}


def _checks(chosen: Plan, pruned, reference, dead_channels: bool) -> list[dict]:
    """Run the product's checks on a pruned model; each is {check, passed, detail}; raise on failure."""
    checks = []
    try:
        checks.append({"check": "runs", "passed": True, "detail": verified(chosen, pruned, reference)})
    except VerificationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to run is a verification failure
        raise VerificationError(f"the pruned model does not run: {first_line(exc)}") from exc
    if dead_channels and chosen.exact().removed.any():
        try:
            dead_channel_check(chosen)
        except VerificationError as exc:
            raise VerificationError(f"dead-channel check failed ({exc}); this is a graphprune bug, please report it") from exc
        checks.append({"check": "dead channels", "passed": True,
                       "detail": "zeroing the removed channels and pruning them left the outputs equal"})
    return checks


@dataclasses.dataclass
class _Run:
    """What one shrink has learnt so far, stage by stage."""

    model: torch.nn.Module
    args: tuple
    kwargs: dict
    opts: PlanOptions
    calibration: CalibrationOptions
    data: Any
    step: Any
    t0: float = dataclasses.field(default_factory=time.perf_counter)
    seconds: dict = dataclasses.field(default_factory=dict)

    def lap(self, name: str) -> None:
        self.seconds[name] = time.perf_counter() - self.t0 - sum(self.seconds.values())


def shrink(model: torch.nn.Module, example: Any, *, plan: PlanOptions | None = None, data=None,
           calibration: CalibrationOptions | None = None, depth: DepthOptions | None = None, search=None,
           scores=None, check_dead_channels: bool = True, progress=None) -> tuple[torch.nn.Module, Report]:
    """Prune `model` and return (pruned model, report). The user's model is not changed.

    `plan` says what goes (graphprune.plan.types.PlanOptions); `scores` (an array with one score per
    channel, or a callable graph -> array) replaces its criterion. `data` (graphprune.data.Data) feeds
    data criteria, the choice of allocation rule, the least-squares refit and BatchNorm re-estimation,
    as `calibration` says. `depth` removes whole blocks first, ranked on `data`; a budget still counts
    from the original. `search` (a graphprune.search.SearchRequest) replaces the cut options by a search
    of per-group widths under a latency budget measured in ONNX Runtime; the report's `search` logs it.
    """
    opts, cal, depth = plan or PlanOptions(), calibration or CalibrationOptions(), depth or DepthOptions()
    check(opts, cal, depth, has_data=data is not None, has_scores=scores is not None)
    args, kwargs = normalize_inputs(example)
    run = _Run(model, args, kwargs, opts, cal, data, progress or (lambda text: None))
    run.step("capturing the model with torch.export")
    reference = run_original(model, args, kwargs)
    if data is not None:
        check_labels(data, reference, limit=cal.batches)
    try:
        captured = capture(model, args, kwargs)
    except TraceError as exc:  # e.g. detection models: prune the submodules that do capture
        if data is not None or scores is not None:
            raise TraceError(f"{exc}; pruning it part by part takes a weight criterion and no --data") from exc
        from graphprune.pipeline import parts

        return parts.shrink(model, args, kwargs, reference, opts, opts.attention, str(exc), run.step)
    macs_before = count_macs(captured.module, args, kwargs)
    plan_opts, removed_blocks = opts, ()
    if depth.blocks:
        run.step(f"ranking blocks ({depth.criterion}) on calibration data")
        captured, removed_blocks, plan_opts = blocks_api.blocks_first(captured, data, depth.blocks, depth.criterion,
                                                                      cal.batches, opts)
        reference = verify.run(captured.module, args, kwargs)  # channels are checked against the model without the blocks
    chosen, graph, calibration_info, searched, allocation = _decide(run, captured, plan_opts, scores, search)
    pruned, checks, refits, recalibrated = _build(run, chosen, reference, check_dead_channels, bool(removed_blocks))
    return pruned, _report(run, chosen, graph, pruned, macs_before, checks, scores, calibration_info, recalibrated,
                           searched, allocation, refits, removed_blocks)


def _decide(run: _Run, captured: Captured, plan_opts: PlanOptions, scores, search):
    """(plan, graph, calibration info, search result, allocation log): score the channels, then choose."""
    graph = build(captured, attention=run.opts.attention)
    run.lap("analyze")
    criterion = run.opts.criterion if scores is None else scores
    name = criterion if isinstance(criterion, str) else "user scores"
    run.step(f"scoring channels ({name})" + (" on calibration data" if run.data is not None else ""))
    values, calibration_info = _scores(graph, criterion, run.data, run.calibration.batches, run.calibration.seed)
    run.lap("score")
    run.step("planning")
    searched = None if search is None else search.run(graph, progress=run.step, scores=values, data=run.data,
                                                      calib_batches=run.calibration.batches,
                                                      recalibrate=run.calibration.recalibrate)
    allocation = []
    if searched:
        chosen = searched[0]
    elif run.data is not None and allocate.applies(plan_opts):
        chosen, allocation = allocate.choose(graph, plan_opts, values, run.data, run.calibration.batches, run.step)
    else:
        chosen = make_plan(graph, plan_opts, scores=values)
    return chosen, graph, calibration_info, searched, allocation


def _build(run: _Run, chosen: Plan, reference, check_dead_channels: bool, blocks_removed: bool):
    """(pruned model, checks, refits, recalibrated batches): rewrite, check, then restore what data can."""
    run.step("rewriting")
    pruned = make_model(chosen)
    run.step("verifying")
    # before re-estimation, so that a plan removing nothing (blocks only) is checked for equal outputs
    checks = _checks(chosen, pruned, reference, check_dead_channels)  # the oracle checks the plan itself
    refits, recalibrated, cal = [], 0, run.calibration
    if run.data is not None and cal.reconstruct and chosen.removed.any():
        run.step("refitting the layers that lost inputs (least squares on the data)")
        refits = refit_layers(chosen, pruned, run.data, limit=cal.batches, seed=cal.seed)
    if run.data is not None and cal.recalibrate and (chosen.removed.any() or blocks_removed):
        run.step("re-estimating BatchNorm statistics on the data")
        recalibrated = recalibrate_bn(pruned, run.data, limit=cal.batches)
    pruned.train(run.model.training)  # the original's mode: a model saved for inference stays in eval
    run.lap("plan_rewrite")
    return pruned, checks, refits, recalibrated


def _report(run: _Run, chosen: Plan, graph: DependencyGraph, pruned, macs_before: int, checks: list, scores,
            calibration_info: dict, recalibrated: int, searched, allocation: list, refits: list, blocks: tuple) -> Report:
    run.step("counting MACs")
    opts = run.opts
    params = (count_params(run.model), count_params(pruned))
    # the captured graph, not the eager model: eager modules may take fused fast paths
    # (nn.TransformerEncoder) that the FLOP counter cannot see
    macs = (macs_before, count_macs(pruned, run.args, run.kwargs))
    options = {k: v for k, v in opts.__dict__.items() if v is not None}
    if scores is not None:
        options["criterion"] = "user scores"
    return Report(
        params_before=params[0], params_after=params[1], macs_before=macs[0], macs_after=macs[1],
        ratio=opts.ratio, options=options, decisions=chosen.decisions, unknown_ops=graph.unknown,
        dynamic_batch=graph.captured.dynamic_batch, dynamic_sequence=graph.captured.dynamic_sequence,
        verified=checks[0]["detail"], seconds={**run.seconds, "total": time.perf_counter() - run.t0},
        search=searched[1].to_dict() if searched else None,
        calibration=calibration_info | ({"recalibrated_batches": recalibrated} if recalibrated else {}),
        checks=tuple(checks), budget=_budget(opts, params, macs),
        blocks=tuple(dataclasses.asdict(b) for b in blocks),
        allocation=tuple(allocation), reconstruction=tuple(dataclasses.asdict(r) for r in refits),
    )


def _budget(opts: PlanOptions, params: tuple, macs: tuple) -> dict | None:
    """The budget asked for and the fraction of the original reached, from (before, after) counts."""
    if opts.budget is None:
        return None
    kind, target = opts.budget
    before, after = macs if kind == "macs" else params
    return {"kind": kind, "target": target, "achieved": after / before if before else 1.0}

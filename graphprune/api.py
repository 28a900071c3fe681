"""The Python API: `shrink` does everything; the stages are callable one by one.

    graph = graphprune.analyze(model, example)        # capture + dependency graph
    plan = graphprune.plan(graph, PlanOptions(ratio=0.4))
    pruned = graphprune.rewrite(plan)
    pruned, report = graphprune.shrink(model, example, ratio=0.4)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

from graphprune import allocate, depth, verify
from graphprune.capture import capture, normalize_inputs
from graphprune.cost import count_macs, count_params
from graphprune.data import check_labels
from graphprune.depgraph import DependencyGraph, build
from graphprune.errors import InputError, TraceError, VerificationError, first_line
from graphprune.oracle import dead_channel_check
from graphprune.planner import Plan, PlanOptions
from graphprune.planner import plan as make_plan
from graphprune.recalibrate import recalibrate as recalibrate_bn
from graphprune.reconstruct import reconstruct as refit_layers
from graphprune.report import Report
from graphprune.rewriter import rewrite as make_model

log = logging.getLogger(__name__)


def analyze(model: torch.nn.Module, example: Any, attention: str = "heads") -> DependencyGraph:
    """Capture `model` on `example` (tensor, tuple or dict) and build its dependency graph.

    `attention`: what attention may lose: 'heads' (whole heads), 'head-dim' (every head's
    width), or 'none'.
    """
    args, kwargs = normalize_inputs(example)
    return build(capture(model, args, kwargs), attention=attention)


def plan(graph: DependencyGraph, options: PlanOptions | None = None, scores=None, **kwargs) -> Plan:
    """Choose channels to remove; keyword arguments are PlanOptions fields; `scores` per channel
    (graphprune.importance.score) replace the options' criterion."""
    return make_plan(graph, options or PlanOptions(**kwargs), scores=scores)


def rewrite(plan: Plan) -> torch.nn.Module:
    """Build the pruned dense model; the input model is not touched."""
    return make_model(plan)


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
    if dead_channels:
        checks.extend(_oracle(chosen))
    return checks


def _oracle(chosen: Plan) -> list[dict]:
    """The dead-channel check of a plan as a list of zero or one check entries; raises on failure."""
    if not chosen.exact().removed.any():
        return []
    try:
        dead_channel_check(chosen, lazy=True)  # no second copy of the weights
    except VerificationError as exc:
        raise VerificationError(f"dead-channel check failed ({exc}); this is a graphprune bug, please report it") from exc
    return [{"check": "dead channels", "passed": True,
             "detail": "zeroing the removed channels and pruning them left the outputs equal"}]


def shrink(model: torch.nn.Module, example: Any, ratio: float = 0.4, *, data=None, criterion="l2",
           calib_batches: int | None = 16, recalibrate: bool = True, check_dead_channels: bool = True, seed: int = 0,
           progress=None, attention: str = "heads", remove_blocks: float = 0, block_criterion: str = "loss",
           search=None, reconstruct: bool = True, release_model: bool = False,
           **options) -> tuple[torch.nn.Module, Report]:
    """Prune `model` and return (pruned model, report). The user's model is not changed.

    `criterion` is a name (graphprune.importance.CRITERIA), an array of scores per channel, or a
    callable graph -> array. `data` (graphprune.data.Data) feeds data criteria and BatchNorm
    re-estimation (`recalibrate`); `calib_batches` bounds both. `attention` as in `analyze`;
    other keyword options are PlanOptions fields (ratio, threshold, target_macs, target_params, ...).
    `remove_blocks` (a count, or a fraction in (0, 1) of the blocks found) removes whole blocks
    first, ranked on `data` by `block_criterion` (graphprune.depth); a budget still counts from
    the original. `search` (a graphprune.search.SearchRequest) replaces the cut options by a search
    of per-group widths under a latency budget measured in ONNX Runtime (on `data`, ranking
    channels by `criterion`); the report's `search` logs it.

    With `data`, two more steps use it (docs/RECOVERY.md): under a budget or a global rule the
    rule sharing widths between groups is chosen by calibration loss (graphprune.allocate;
    report `allocation`), and with `reconstruct` the layers that lost inputs are refit by least
    squares to the original's outputs (graphprune.reconstruct; report `reconstruction`).

    `release_model`: hand the model's memory over to the pruned one. Each of its tensors is freed as
    soon as its slice is made (tensors that lose nothing are shared), so the peak stays near the
    model's own size (docs/BENCHMARKS.md, "Large model"); the model is unusable afterwards (its
    tensors hold no storage). The checks run as without it, the dead-channel oracle before the rewrite.
    """
    if release_model and data is not None:
        raise InputError("release_model frees the original's weights, which pruning with data reads after the "
                         "rewrite (refit, BatchNorm re-estimation); pass release_model=False with data")
    name = criterion if isinstance(criterion, str) else "l2"
    opts = PlanOptions(ratio=ratio, criterion=name, **options)
    opts.check()
    step = progress or (lambda text: None)
    seconds = {}
    t0 = time.perf_counter()
    step("capturing the model with torch.export")
    args, kwargs = normalize_inputs(example)
    reference = run_original(model, args, kwargs)
    if data is not None:
        check_labels(data, reference, limit=calib_batches)
    try:
        captured = capture(model, args, kwargs)
    except TraceError as exc:  # e.g. detection models: prune the submodules that do capture
        if data is not None or not isinstance(criterion, str):
            raise TraceError(f"{exc}; pruning it part by part takes a weight criterion and no --data") from exc
        from graphprune import parts

        return parts.shrink(model, args, kwargs, reference, opts, attention, str(exc), step)
    macs_before, params_before = count_macs(captured.module, args, kwargs), count_params(model)
    plan_opts, blocks = opts, ()
    if remove_blocks:
        step(f"ranking blocks ({block_criterion}) on calibration data")
        captured, blocks, plan_opts = depth.blocks_first(captured, data, remove_blocks, block_criterion, calib_batches, opts)
        reference = verify.run(captured.module, args, kwargs)  # channels are checked against the model without the blocks
    graph = build(captured, attention=attention)
    seconds["analyze"] = time.perf_counter() - t0
    step(f"scoring channels ({name})" + (" on calibration data" if data is not None else ""))
    scores, calibration = _scores(graph, criterion, data, calib_batches, seed)
    seconds["score"] = time.perf_counter() - t0 - seconds["analyze"]
    step("planning")
    searched = None if search is None else search.run(graph, progress=step, scores=scores, data=data,
                                                      calib_batches=calib_batches, recalibrate=recalibrate)
    allocation = []
    if searched:
        chosen = searched[0]
    elif data is not None and allocate.applies(plan_opts):
        chosen, allocation = allocate.choose(graph, plan_opts, scores, data, calib_batches, step)
    else:
        chosen = make_plan(graph, plan_opts, scores=scores)
    # release_model: the oracle reads the original's tensors, so it runs before they are freed
    early = _oracle(chosen) if release_model and check_dead_channels else []
    step("rewriting" + (" (releasing the original's tensors)" if release_model else ""))
    pruned = make_model(chosen, release=release_model)
    step("verifying")
    # before re-estimation, so that a plan removing nothing (blocks only) is checked for equal outputs
    checks = _checks(chosen, pruned, reference, check_dead_channels and not release_model) + early
    refits = []
    if data is not None and reconstruct and chosen.removed.any():
        step("refitting the layers that lost inputs (least squares on the data)")
        refits = refit_layers(chosen, pruned, data, limit=calib_batches, seed=seed)
    recalibrated = 0
    if data is not None and recalibrate and (chosen.removed.any() or blocks):
        step("re-estimating BatchNorm statistics on the data")
        recalibrated = recalibrate_bn(pruned, data, limit=calib_batches)
    pruned.train(model.training)  # the original's mode: a model saved for inference stays in eval
    seconds["plan_rewrite"] = time.perf_counter() - t0 - sum(seconds.values())
    step("counting MACs")
    params = (params_before, count_params(pruned))
    macs = (macs_before, count_macs(pruned, args, kwargs))
    report = Report(
        params_before=params[0], params_after=params[1],
        # the captured graph, not the eager model: eager modules may take fused fast paths
        # (nn.TransformerEncoder) that the FLOP counter cannot see
        macs_before=macs[0], macs_after=macs[1],
        ratio=ratio, options={k: v for k, v in opts.__dict__.items() if v is not None},
        decisions=chosen.decisions, unknown_ops=graph.unknown,
        dynamic_batch=graph.captured.dynamic_batch,
        dynamic_sequence=graph.captured.dynamic_sequence, verified=checks[0]["detail"],
        seconds={**seconds, "total": time.perf_counter() - t0},
        search=searched[1].to_dict() if searched else None,
        calibration=calibration | ({"recalibrated_batches": recalibrated} if recalibrated else {}),
        checks=tuple(checks), budget=_budget(opts, params, macs),
        blocks=tuple(dataclasses.asdict(b) for b in blocks),
        allocation=tuple(allocation), reconstruction=tuple(dataclasses.asdict(r) for r in refits),
    )
    return pruned, report


def _budget(opts: PlanOptions, params: tuple, macs: tuple) -> dict | None:
    """The budget asked for and the fraction of the original reached, from (before, after) counts."""
    if opts.budget is None:
        return None
    kind, target = opts.budget
    before, after = macs if kind == "macs" else params
    return {"kind": kind, "target": target, "achieved": after / before if before else 1.0}

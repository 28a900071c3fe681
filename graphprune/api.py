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

from graphprune import allocate, decide, depth, verify
from graphprune.capture import capture, normalize_inputs
from graphprune.compensate import correct as compensate_biases
from graphprune.cost import count_macs, count_params
from graphprune.data import check_labels
from graphprune.depgraph import DependencyGraph, build
from graphprune.errors import InputError, TraceError, VerificationError, first_line
from graphprune.fidelity import on_example
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
    if dead_channels and chosen.exact().removed.any():
        try:
            dead_channel_check(chosen)
        except VerificationError as exc:
            raise VerificationError(f"dead-channel check failed ({exc}); this is a graphprune bug, please report it") from exc
        checks.append({"check": "dead channels", "passed": True,
                       "detail": "zeroing the removed channels and pruning them left the outputs equal"})
    return checks


def shrink(model: torch.nn.Module, example: Any, ratio: float = 0.4, *, data=None, criterion=None,
           calib_batches: int | None = 16, recalibrate: bool = True, check_dead_channels: bool = True, seed: int = 0,
           progress=None, attention: str = "heads", remove_blocks: float = 0, block_criterion: str = "loss",
           search=None, reconstruct: bool = True, compensate: bool = True, held_out=None,
           **options) -> tuple[torch.nn.Module, Report]:
    """Prune `model` and return (pruned model, report). The user's model is not changed.

    `criterion` is a name (graphprune.importance.CRITERIA, or 'auto': the best of several on held-out
    data), an array of scores per channel, or a callable graph -> array; by default 'auto' with
    `data` and 'l2' without. `data` (graphprune.data.Data) feeds data criteria and BatchNorm
    re-estimation (`recalibrate`); `calib_batches` bounds both. `attention` as in `analyze`;
    other keyword options are PlanOptions fields (ratio, threshold, target_macs, target_params, ...).
    `remove_blocks` (a count, or a fraction in (0, 1) of the blocks found) removes whole blocks
    first, ranked on `data` by `block_criterion` (graphprune.depth); a budget still counts from
    the original. `search` (a graphprune.search.SearchRequest) replaces the cut options by a search
    of per-group widths under a latency budget measured in ONNX Runtime (on `data`, ranking
    channels by `criterion`); the report's `search` logs it.

    With `data`, part of it (or `held_out`, a Data) is held out (graphprune.decide): every choice is
    judged on a selection slice and the report's `fidelity` figures come from a test slice nothing
    was chosen on. The allocation rule (graphprune.allocate), the bias correction
    (graphprune.compensate, `compensate`), the least-squares refit (graphprune.reconstruct,
    `reconstruct`) and BatchNorm re-estimation are each kept only when held-out fidelity does not
    get worse, and the result is never worse there than the L2 plan with BatchNorm re-estimated.
    Without data, `compensate` folds the removed channels' expected inputs into the next biases.
    """
    criterion = criterion if criterion is not None else ("auto" if data is not None else "l2")
    name = criterion if isinstance(criterion, str) and criterion != "auto" else "l2"
    opts = PlanOptions(ratio=ratio, criterion=name, **options)
    opts.check()
    step = progress or (lambda text: None)
    seconds = {}
    t0 = time.perf_counter()
    step("capturing the model with torch.export")
    args, kwargs = normalize_inputs(example)
    reference = original_out = run_original(model, args, kwargs)
    if data is not None:
        check_labels(data, reference, limit=calib_batches)
    try:
        captured = capture(model, args, kwargs)
    except TraceError as exc:  # e.g. detection models: prune the submodules that do capture
        if data is not None or not isinstance(criterion, str) or criterion == "auto":
            raise TraceError(f"{exc}; pruning it part by part takes a weight criterion and no --data") from exc
        from graphprune import parts

        return parts.shrink(model, args, kwargs, reference, opts, attention, str(exc), step)
    macs_before = count_macs(captured.module, args, kwargs)
    judge, held_note = None, ""
    if data is not None:
        step("holding out data to judge every choice on")
        data, held, held_note = decide.split(data, held_out, seed=seed)
        judge = decide.Judge(captured.module, held, calib_batches)
    plan_opts, blocks = opts, ()
    if remove_blocks:
        step(f"ranking blocks ({block_criterion}) on calibration data")
        captured, blocks, plan_opts = depth.blocks_first(captured, data, remove_blocks, block_criterion, calib_batches, opts)
        reference = verify.run(captured.module, args, kwargs)  # channels are checked against the model without the blocks
    graph = build(captured, attention=attention)
    seconds["analyze"] = time.perf_counter() - t0
    trials = {}
    if criterion == "auto" and data is not None and search is None:
        scores, calibration, trials = decide.auto(graph, plan_opts, data, calib_batches, seed, judge, step)
        plan_opts = dataclasses.replace(plan_opts, criterion=calibration["criterion"])
    else:
        step(f"scoring channels ({name})" + (" on calibration data" if data is not None else ""))
        scores, calibration = _scores(graph, name if criterion == "auto" else criterion, data, calib_batches, seed)
    seconds["score"] = time.perf_counter() - t0 - seconds["analyze"]
    step("planning")
    searched = None if search is None else search.run(graph, progress=step, scores=scores, data=data,
                                                      calib_batches=calib_batches, recalibrate=recalibrate)
    allocation = []
    if searched:
        chosen = searched[0]
    elif data is not None and allocate.applies(plan_opts):
        chosen, allocation = allocate.choose(graph, plan_opts, scores, data, calib_batches, step, judge=judge)
    else:
        chosen = make_plan(graph, plan_opts, scores=scores)
    step("rewriting")
    pruned = make_model(chosen)
    step("verifying")
    # before re-estimation, so that a plan removing nothing (blocks only) is checked for equal outputs
    checks = _checks(chosen, pruned, reference, check_dead_channels)  # the oracle checks the plan itself
    refits, recalibrated = _data_steps(chosen, pruned, data, judge, blocks, calib_batches, seed, step,
                                       compensate=compensate, reconstruct=reconstruct, recalibrate=recalibrate)
    if data is None and compensate and chosen.removed.any():
        step("correcting biases for the removed channels (no data: from BatchNorm statistics)")
        compensate_biases(chosen, pruned)
    floor = None
    if judge is not None and judge.selection is not None and not searched and opts.threshold is None and chosen.removed.any():
        step("comparing with the data-free L2 plan (BatchNorm re-estimated): the floor")
        chosen, pruned, floor = _floor(graph, plan_opts, chosen, pruned, trials, data, calib_batches, judge)
        if floor["used"]:
            checks = _checks(chosen, pruned, reference, check_dead_channels)
            refits, allocation = [], []
    pruned.train(model.training)  # the original's mode: a model saved for inference stays in eval
    seconds["plan_rewrite"] = time.perf_counter() - t0 - sum(seconds.values())
    step("measuring fidelity")
    fidelity = _fidelity(data, judge, held_note, pruned, original_out, args, kwargs, floor)
    step("counting MACs")
    params = (count_params(model), count_params(pruned))
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
        fidelity=fidelity,
    )
    return pruned, report


def _data_steps(chosen: Plan, pruned, data, judge, blocks, limit, seed: int, step, *, compensate: bool,
                reconstruct: bool, recalibrate: bool) -> tuple[list, int]:
    """Bias correction, refit and BatchNorm re-estimation, each kept only if held-out fidelity allows.
    Returns (the refit's per-layer records, batches the re-estimation ran on, 0 when undone)."""
    if data is None:
        return [], 0
    refits, ran = [], {"batches": 0}

    def correct():
        n = compensate_biases(chosen, pruned)
        return f"{n} layers corrected" if n else None

    def refit():
        refits.extend(refit_layers(chosen, pruned, data, limit=limit, seed=seed))
        done = [r for r in refits if r.lam is not None]
        return f"{len(done)} of {len(refits)} layers refit" if done else None

    def estimate():
        ran["batches"] = recalibrate_bn(pruned, data, limit=limit)
        return f"{ran['batches']} batches" if ran["batches"] else None

    if compensate and chosen.removed.any():
        step("correcting biases for the removed channels")
        judge.step("bias correction", pruned, correct)
    if reconstruct and chosen.removed.any():
        step("refitting the layers that lost inputs (least squares on the data)")
        judge.step("refit", pruned, refit)
    kept_estimate = False
    if recalibrate and (chosen.removed.any() or blocks):
        step("re-estimating BatchNorm statistics on the data")
        kept_estimate = judge.step("BatchNorm re-estimation", pruned, estimate)
    return refits, ran["batches"] if kept_estimate else 0


def _floor(graph, opts: PlanOptions, chosen: Plan, pruned, trials: dict, data, limit, judge) -> tuple:
    """(plan, model, record): the better on the selection slice of the result and the L2 plan
    with BatchNorm re-estimated at the same budget."""
    from graphprune.importance import score

    base = trials.get("l2")
    if base is None:
        l2 = dataclasses.replace(opts, criterion="l2")
        base = decide.trial(graph, l2, score(graph, "l2"), data, limit, judge)
    mine = judge.loss(pruned)
    used = base.loss < mine
    record = {"criterion": "l2", "steps": "BatchNorm re-estimated (where it helps)", "loss": base.loss, "result_loss": mine,
              "used": used}
    return (base.plan, base.model, record) if used else (chosen, pruned, record)


def _fidelity(data, judge, note: str, pruned, original_out, args, kwargs, floor) -> dict:
    """The report's `fidelity`: held-out figures (test slice), the choices made on the selection
    slice, and how far outputs moved on the example input."""
    out = {"data": "none" if data is None else data.description,
           "example": on_example(original_out, verify.run(pruned, args, kwargs))}
    if note:
        out["note"] = note
    if judge is None:
        return out
    final = judge.final(pruned)
    if final is not None:
        out["held_out"] = final.to_dict() | {"slice": judge.test.description, "metric": final.measure}
        out["selection"] = {"slice": judge.selection.description, "samples": judge.selection.samples}
    out["steps"] = [r.to_dict() for r in judge.records]
    if floor is not None:
        out["floor"] = floor
    return out


def _budget(opts: PlanOptions, params: tuple, macs: tuple) -> dict | None:
    """The budget asked for and the fraction of the original reached, from (before, after) counts."""
    if opts.budget is None:
        return None
    kind, target = opts.budget
    before, after = macs if kind == "macs" else params
    return {"kind": kind, "target": target, "achieved": after / before if before else 1.0}

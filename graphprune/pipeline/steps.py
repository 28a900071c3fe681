"""Iterative pruning: reach the target in N steps, recovering the accuracy between them.

Every step's target is measured against the ORIGINAL model. For step k of N:

    budget t (target_macs / target_params, a fraction of the original's cost):
        aim_k = 1 - (1 - t) k / N of the original's cost;
        the step prunes the current model to aim_k * cost(original) / cost(current) of its cost
    ratio r (fraction of each group removed):
        kept_k = 1 - r k / N of the original widths;
        the step removes 1 - kept_k / kept_(k-1) of the current widths

Blocks (`remove_blocks`, graphprune.depth) go in the first step only, with that step's channels, and are
judged there (graphprune.pipeline.depth_judged; the final report's fidelity.steps keeps that record);
later steps narrow what is left. After each step the pruned model is fine-tuned (labels, or distillation from the original:
the teacher is always the original, never the previous step) and re-captured by the next
step's `graphprune.shrink`. The validation set is split off once, so every step's metric is
measured on the same held-out samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import torch

from graphprune.capture.trace import normalize_inputs
from graphprune.cost.macs import count_macs, count_params
from graphprune.data.options import CalibrationOptions
from graphprune.data.progress import within
from graphprune.depth.options import DepthOptions
from graphprune.errors import InputError
from graphprune.pipeline import depth_judged
from graphprune.pipeline.keywords import from_keywords
from graphprune.pipeline.shrink import check, shrink
from graphprune.plan.budget import verdict
from graphprune.plan.types import PlanOptions
from graphprune.recovery.loop import finetune
from graphprune.recovery.options import TrainOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    step: int
    aim: float  # the step's target: a fraction of the original's cost (budget) or the cumulative ratio
    macs: int
    params: int
    metric: str | None  # None when there is no recovery between steps
    pruned_metric: float | None  # right after pruning, before recovery
    recovered_metric: float | None  # after recovery (the best epoch)


def _aims(steps: int, ratio: float, budget: tuple[str, float] | None) -> list[float]:
    if budget is None:
        return [ratio * k / steps for k in range(1, steps + 1)]
    return [1.0 - (1.0 - budget[1]) * k / steps for k in range(1, steps + 1)]


def _step_plan(k: int, aims: list[float], plan: PlanOptions, fraction_now: float) -> PlanOptions:
    """The plan options that take the current model (at `fraction_now` of the original's cost) to aims[k]."""
    if plan.budget is None:
        before = 1.0 - (aims[k - 1] if k else 0.0)
        return replace(plan, ratio=1.0 - (1.0 - aims[k]) / before)
    return replace(plan, **{f"target_{plan.budget[0]}": min(aims[k] / fraction_now, 1.0 - 1e-9)})


def _first_depth(depth: DepthOptions | None, plan: PlanOptions, aims: list[float]) -> DepthOptions | None:
    """The first step's depth options: its blocks are judged against widths that must reach the last aim."""
    if depth is None or not depth.blocks or plan.budget is None:
        return depth
    return replace(depth, reach=aims[-1])


def shrink_in_steps(model: torch.nn.Module, example: Any, steps: int, *, plan: PlanOptions | None = None, data=None,
                    val=None, calibration: CalibrationOptions | None = None, depth: DepthOptions | None = None,
                    train_options: TrainOptions | None = None, progress=None, bar=None, **legacy):
    """Prune `model` in `steps` steps with recovery between them: (pruned, final Report, [Step]).

    `plan`, `calibration` and `depth` are shrink's options (graphprune.pipeline.shrink); each step
    gets the plan's ratio or budget for that step, and the blocks go in the first.
    `train_options` (None: no recovery) go to graphprune.recovery.finetune, on `data`
    with `val` (or a held-out `train_options.val_split` of `data`). `progress(text)` hears what
    runs; `bar(step)` may return a progress bar for that step's fine-tuning. The Report's
    "before" figures are the original's (MACs counted on its captured graph, as shrink does);
    its decisions are the last step's (widths before: the previous step's model).
    """
    if steps < 1:
        raise InputError(f"--steps {steps} must be 1 or more")
    if train_options is not None and (data is None):
        raise InputError("fine-tuning between steps needs --data")
    if train_options is not None and train_options.resume:
        raise InputError("--resume continues one fine-tuning run; it does not combine with --steps")
    if legacy:  # earlier keyword options, as graphprune.shrink takes them
        plan, calibration, depth, _ = from_keywords((), legacy, plan, calibration, depth, None)
    plan = plan or PlanOptions()
    check(plan, calibration or CalibrationOptions(), depth or DepthOptions(), has_data=data is not None)
    args, kwargs = normalize_inputs(example)
    base: dict = {}
    if train_options is not None and val is None:
        data, val = data.split(train_options.val_split, train_options.seed)
    aims = _aims(steps, plan.ratio, plan.budget)
    current, report, rows, removed_blocks, first = model, None, [], (), None
    for k in range(steps):
        kind = plan.budget[0] if plan.budget else "params"
        fraction = getattr(rows[-1], kind) / base[kind] if rows else 1.0
        say = within(progress, f"step {k + 1} of {steps}: ")
        current, report = shrink(current, example, plan=_step_plan(k, aims, plan, fraction), data=data,
                                 calibration=calibration, depth=_first_depth(depth, plan, aims) if k == 0 else None,
                                 progress=say)
        removed_blocks = removed_blocks or report.blocks
        first = first or report
        base = base or {"macs": report.macs_before, "params": report.params_before}
        metric = pruned_metric = recovered = None
        if train_options is not None:
            opts = replace(train_options, checkpoint=None, resume=False)
            result = finetune(current, data, teacher=model, val=val, options=opts,
                              progress=bar(k + 1) if bar is not None else None)
            current, metric, pruned_metric, recovered = result.model, result.metric, result.initial, result.best
        rows.append(Step(k + 1, aims[k], count_macs(current, args, kwargs), count_params(current), metric,
                         pruned_metric, recovered))
        log.info("step %d: %s", k + 1, rows[-1])
    final = replace(report, params_before=base["params"], macs_before=base["macs"], params_after=rows[-1].params,
                    macs_after=rows[-1].macs, ratio=plan.ratio, blocks=removed_blocks)
    if steps > 1:
        final = _with_blocks_judged(final, first)
    budget = plan.budget
    if budget is not None:  # the last step's budget was relative to the step before; state it for the original
        achieved = getattr(rows[-1], budget[0]) / base[budget[0]]
        final = replace(final, budget=verdict(budget[0], budget[1], achieved, plan.tolerance))
    return current, final, rows


def _with_blocks_judged(final, first):
    """The final report with the first step's judgement of its blocks (graphprune.pipeline.depth_judged) leading
    its fidelity.steps, which are otherwise the last step's."""
    judged = [s for s in (first.fidelity or {}).get("steps", ()) if s["step"] == depth_judged.STEP]
    if not judged or final.fidelity is None:
        return final
    return replace(final, fidelity={**final.fidelity, "steps": judged + final.fidelity.get("steps", [])})

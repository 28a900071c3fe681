"""How widths are shared out between groups, chosen by measurement on calibration data.

Under a budget or a global rule the planner compares channels of different groups, and no one
rule for that suits every model (docs/CRITERIA.md, "Budgets"). With mean-normalised
scores and cost-aware ranking, a group whose channels are expensive (an attention head costs as
much as 64 MLP neurons) is emptied first; LAMP scores (graphprune.plan.cuts) are relative to the
channels kept after each one and keep such groups; a data criterion may set widths itself or
leave that to L2 (PlanOptions.allocate). So, given data, `choose` builds the plan of each rule in
RULES, rewrites it, re-estimates its BatchNorm statistics, and scores it on the calibration
batches with the objective recovery would train it on (graphprune.measure.objective, the original as
teacher: cross-entropy plus KL with labels, KL on class scores, pooled and per-token cosine on
embeddings); the plan with the lowest loss is kept and every rule's loss goes in the report.
Without data, or when the caller fixed the rule, the options' own rule is used.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from graphprune.importance import CRITERIA
from graphprune.measure import objective as losses
from graphprune.plan.planner import plan as make_plan
from graphprune.plan.types import Plan, PlanOptions

log = logging.getLogger(__name__)

RULES = (("mean", "auto"), ("lamp", "auto"), ("mean", None), ("lamp", None))  # (normalize, allocate)


def applies(opts: PlanOptions) -> bool:
    """Whether groups compete for a shared budget (else each group is cut on its own)."""
    return opts.allocate == "auto" and opts.normalize == "mean" and (opts.budget is not None or opts.global_ranking)


def rules(opts: PlanOptions) -> list[PlanOptions]:
    """The options under each rule of RULES (a weight criterion's own rule and 'auto' are one)."""
    out, seen = [], set()
    for normalize, allocate in RULES:
        if allocate is None and not CRITERIA[opts.criterion].needs_data:
            allocate = "auto"  # a weight criterion sets widths itself under either name
        if (normalize, allocate) not in seen:
            seen.add((normalize, allocate))
            out.append(dataclasses.replace(opts, normalize=normalize, allocate=allocate))
    return out


def choose(graph, opts: PlanOptions, scores, data, calib_batches: int | None, progress=None,
           judge=None) -> tuple[Plan, list[dict]]:
    """(the best plan, [{normalize, allocate, loss, chosen, measured_on}]) over RULES: BatchNorm
    re-estimated on `data`, judged on `judge`'s held-out selection slice (graphprune.pipeline.decide)
    or, without one, by the calibration loss on `data`.

    Cost: one pass of the original over the batches (the teacher's outputs, kept), then two per rule
    (BatchNorm re-estimation, the loss); a rule whose plan removes the same channels as an earlier
    one's builds the same model and takes its loss without running. `progress`: a
    graphprune.data.progress.Stages (stage "allocate", one unit per batch run)."""
    from graphprune.data.progress import stages_of

    batches = list(data.batches(limit=calib_batches))
    candidates = rules(opts)
    tried = []
    with stages_of(progress).stage("allocate", len(batches) * (1 + 2 * len(candidates)),
                                   f"allocation: {len(candidates)} rules x {len(batches)} batches") as tick:
        teacher = [_run(graph.captured.module, b, tick) for b in batches]
        objective = losses.choose(data.has_labels, True, teacher[0], "auto", 0.5, 2.0)
        where = judge.measured_on if judge is not None else "calibration"
        for i, rule in enumerate(candidates):
            plan = make_plan(graph, rule, scores=scores)
            same = next((t for t in tried if np.array_equal(t[2].removed, plan.removed)), None)
            if same is not None:
                loss = same[0]
                tick(2 * len(batches))
            else:
                loss = _measure(plan, data, calib_batches, objective, teacher, batches, tick, judge)
            tried.append((loss, i, plan, {"normalize": rule.normalize, "allocate": rule.allocate or "own", "loss": loss,
                                          "measured_on": where}))
    best = min(tried, key=lambda t: (t[0], t[1]))
    for t in tried:
        t[3]["chosen"] = t is best
    log.info("allocation: %s", [t[3] for t in tried])
    return best[2], [t[3] for t in tried]


def _measure(plan: Plan, data, calib_batches: int | None, objective, teacher: list, batches: list, tick,
             judge=None) -> float:
    """The loss of `plan`'s model, its BatchNorm re-estimated on the data: on the judge's selection
    slice when there is one, else on the calibration batches."""
    from graphprune.rewrite.recalibrate import recalibrate
    from graphprune.rewrite.rewriter import rewrite

    model = rewrite(plan)
    if not recalibrate(model, data, limit=calib_batches, tick=tick):
        tick(len(batches))  # no batch norm: nothing ran
    held = judge.loss(model.eval()) if judge is not None else None
    if held is not None:
        tick(len(batches))
        return held
    return _loss(objective, model.eval(), teacher, batches, tick)


@torch.no_grad()
def _run(model, batch, tick=None):
    out = model(*batch.args, **batch.kwargs)
    if tick is not None:
        tick()
    return out


def _loss(objective, model, teacher: list, batches: list, tick=None) -> float:
    total = sum(float(objective.loss(_run(model, b, tick), t, b)) * b.size for b, t in zip(batches, teacher, strict=True))
    return total / max(sum(b.size for b in batches), 1)

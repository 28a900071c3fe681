"""Stage 3, the planner: decide which channels go.

How many channels go (graphprune.plan.cuts holds the rules):

* ratio, local (default): each group loses floor(ratio * candidates) of its lowest-scoring
  candidate channels. Global: candidates of all groups are ranked together by their
  normalised score (graphprune.plan.cuts.normalized), and the lowest ratio * total go, at most
  `max_group_ratio` of any one group.
* threshold ('mean', 'percentile:P', 'sigma:K'): channels scoring below the threshold go,
  per group or (global) over every group's normalised scores.
* budget (target_macs / target_params, fractions of the original): cost-aware global ranking
  (graphprune.plan.budget) chooses every group's width so the exact cost lands at most on the target
  and within `tolerance` under it; `Plan.budget` says what it reached, and why when it missed.
* widths: an explicit kept width per group name (the search's knob).

Constraints, applied per group after the choice: every space keeps at least one
element; with round_to = N (default 8) the kept width of a pruned group's reference space
moves down to a multiple of N (removing the next-weakest channels; a width under N is
raised to N by keeping back the best removed ones), which keeps ONNX Runtime on its
blocked-convolution fast path. Whole-group and
offset constraints of grouped convs, norms and reshapes are already in the channels
(graphprune.rules), so they need nothing here.

Every decision carries its reason, for `graphprune inspect` and the report.
"""

from __future__ import annotations

import numpy as np

from graphprune.capture.depgraph import DependencyGraph
from graphprune.errors import PlanError
from graphprune.importance import CRITERIA
from graphprune.plan import budget, cuts
from graphprune.plan.constraints import exact_only, finalize
from graphprune.plan.types import Plan, PlanOptions


def _allocation(graph: DependencyGraph, opts: PlanOptions) -> np.ndarray | None:
    """Scores that set group widths when they are not the criterion's own (PlanOptions.allocate)."""
    from graphprune.importance import score

    name = opts.allocate
    if name == "auto":
        name = "l2" if CRITERIA[opts.criterion].needs_data else None
    return None if name in (None, opts.criterion) else score(graph, name)


def plan(graph: DependencyGraph, options: PlanOptions | None = None, scores: np.ndarray | None = None) -> Plan:
    """Choose the channels to remove. Pure: the graph and the model are not changed.

    `scores` (one per channel, higher = more important) replaces the options' criterion: data
    criteria are computed by graphprune.importance.score, or a user's own array is passed.
    """
    from graphprune.importance import score

    opts = options or PlanOptions()
    opts.check()
    full = graph
    if scores is None:
        scores = score(graph, opts.criterion)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (graph.num_channels,):
        raise PlanError(f"scores have shape {scores.shape}; one score per channel ({graph.num_channels}) is needed")
    if not opts.prune_hidden:
        graph = exact_only(graph)
    outcome = None
    if opts.widths is not None:
        removed, decisions = finalize(graph, cuts.widths_choice(graph, scores, opts.widths), scores, opts, rounding=False)
    elif opts.budget is not None:
        removed, decisions, outcome = budget.choose(graph, scores, opts, allocation=_allocation(graph, opts))
    elif opts.global_ranking and (allocation := _allocation(graph, opts)) is not None:
        counts = {gi: len(c) for gi, c in cuts.choose(graph, allocation, opts).items()}
        removed, decisions = finalize(graph, cuts.lowest(graph, scores, counts), scores, opts)
    else:
        removed, decisions = finalize(graph, cuts.choose(graph, scores, opts), scores, opts)
    return Plan(full, opts, removed, decisions, outcome)

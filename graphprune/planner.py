"""Stage 3, the planner: decide which channels go.

How many channels go (graphprune.cuts holds the rules):

* ratio, local (default): each group loses floor(ratio * candidates) of its lowest-scoring
  candidate channels. Global: candidates of all groups are ranked together by their
  normalised score (graphprune.cuts.normalized), and the lowest ratio * total go, at most
  `max_group_ratio` of any one group.
* threshold ('mean', 'percentile:P', 'sigma:K'): channels scoring below the threshold go,
  per group or (global) over every group's normalised scores.
* budget (target_macs / target_params, fractions of the original): cost-aware global ranking
  (graphprune.budget) chooses every group's width so the exact cost lands at most on the target
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

import dataclasses
from dataclasses import dataclass

import numpy as np

from graphprune import cuts
from graphprune.depgraph import DependencyGraph, Group
from graphprune.errors import PlanError
from graphprune.importance import CRITERIA
from graphprune.reasons import Reason


@dataclass(frozen=True)
class PlanOptions:
    ratio: float = 0.4
    global_ranking: bool = False
    round_to: int = 8  # ONNX Runtime's blocked (NCHWc) convolutions work in blocks of 8 on AVX2
    criterion: str = "l2"
    max_group_ratio: float = 0.9
    prune_hidden: bool = True  # False: keep widths whose pruning is inexact (LayerNorm/RMSNorm-normalised)
    threshold: str | None = None  # 'mean', 'percentile:P' or 'sigma:K' (instead of ratio)
    target_macs: float | None = None  # fraction of the original's MACs (instead of ratio)
    target_params: float | None = None  # fraction of the original's parameters
    normalize: str = "mean"  # how groups' scores are made comparable for global ranking (graphprune.cuts)
    widths: dict | None = None  # group name -> kept width (instead of ratio)
    tolerance: float = 0.02  # budgets: |achieved / target - 1| aimed for
    cost_power: float = 1.0  # budgets: rank by score / saving ** cost_power (graphprune.budget)
    # budgets and global rules: the weight criterion whose scores set each group's width (the chosen
    # criterion still picks the channels inside each group); 'auto': l2 for data criteria, whose
    # scores rank well within a group but compare poorly across groups (docs/BENCHMARKS.md), else
    # the criterion itself; None: always the criterion itself
    allocate: str | None = "auto"

    def check(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise PlanError(f"ratio {self.ratio} is outside [0, 1); pass e.g. --ratio 0.4")
        if self.round_to < 1:
            raise PlanError(f"round_to {self.round_to} must be >= 1")
        if self.criterion not in CRITERIA:
            raise PlanError(f"unknown criterion {self.criterion!r}; choose from {', '.join(sorted(CRITERIA))}")
        if not 0.0 < self.max_group_ratio < 1.0:
            raise PlanError("max_group_ratio must be in (0, 1)")
        for name, value in (("target_macs", self.target_macs), ("target_params", self.target_params)):
            if value is not None and not 0.0 < value < 1.0:
                raise PlanError(f"{name} {value} is outside (0, 1): it is a fraction of the original, e.g. 0.5")
        if self.target_macs is not None and self.target_params is not None:
            raise PlanError("give one budget: target_macs or target_params, not both")
        if self.threshold is not None:
            cuts.parse_threshold(self.threshold)
        if self.allocate not in (None, "auto") and (self.allocate not in CRITERIA or CRITERIA[self.allocate].needs_data):
            raise PlanError(f"allocate {self.allocate!r} must be a criterion that needs no data (l1, l2, bn, random)")
        if self.normalize not in cuts.NORMALIZATIONS:
            raise PlanError(f"unknown normalisation {self.normalize!r}; choose from {', '.join(cuts.NORMALIZATIONS)}")

    @property
    def budget(self) -> tuple[str, float] | None:
        """('macs' | 'params', fraction) when a budget is set."""
        if self.target_macs is not None:
            return "macs", self.target_macs
        if self.target_params is not None:
            return "params", self.target_params
        return None


@dataclass(frozen=True)
class Decision:
    group: str
    width_before: int
    width_after: int
    candidates: int
    removed: int
    note: str
    cause: Reason | None = None  # why the group's frozen channels are frozen, as data (graphprune.reasons)
    structural: bool = False  # a dim no rule claims (a kernel's spatial dims): not a width, never reported frozen


@dataclass(frozen=True, eq=False)
class Plan:
    graph: DependencyGraph
    options: PlanOptions
    removed: np.ndarray  # channel id -> removed?
    decisions: tuple
    budget: object = None  # graphprune.budget.Outcome under a budget: what it reached, why it missed if it did

    def exact(self) -> Plan:
        """This plan without its inexact removals (channels whose removal changes values even
        when they are dead, e.g. LayerNorm features): what the dead-channel oracle can check."""
        return dataclasses.replace(self, removed=self.removed & ~self.graph.inexact)

    def kept(self, space) -> np.ndarray | None:
        """Sorted kept indices of a space, or None if nothing in it is removed."""
        ids = self.graph.spaces.ids(space) if space in self.graph.spaces.base else None
        if ids is None:
            return None
        keep = ~self.removed[self.graph.labels[ids]]
        return None if keep.all() else np.nonzero(keep)[0]


def _give_back(removed: np.ndarray, chosen: list, scores: np.ndarray, within: np.ndarray) -> list:
    """Un-remove the best-scoring chosen channel among `within`; return the new chosen list."""
    allowed = set(within.tolist())
    inside = [c for c in chosen if c in allowed]
    if not inside:
        return chosen
    best = max(inside, key=lambda c: scores[c])
    removed[best] = False
    return [c for c in chosen if c != best]


def _kept(graph: DependencyGraph, group: Group, removed: np.ndarray) -> int:
    return int((~removed[graph.labels[graph.spaces.ids(group.reference)]]).sum())


def _round_width(graph: DependencyGraph, group: Group, removed: np.ndarray, chosen: list,
                 scores: np.ndarray, n: int, notes: list) -> list:
    """Move the reference width down to a multiple of n (so at least `ratio` goes), never below n.

    Removes the next-weakest candidates to round down, gives back the best removed ones
    to round up; a step that would empty a tensor is not taken.
    """
    kept = _kept(graph, group, removed)
    target = max(n, (kept // n) * n)
    ref = np.unique(graph.labels[graph.spaces.ids(group.reference)])
    in_ref = set(ref.tolist())
    spare = [c for c in group.channels[np.argsort(scores[group.channels], kind="stable")].tolist()
             if not removed[c] and c in in_ref]
    while kept > target and spare:
        c = spare.pop(0)
        removed[c] = True
        if any(not (~removed[graph.labels[graph.spaces.ids(s)]]).any() for s in group.spaces):
            removed[c] = False
            break
        chosen.append(c)
        kept = _kept(graph, group, removed)
    while kept < target:
        fewer = _give_back(removed, chosen, scores, ref)
        if len(fewer) == len(chosen):
            break
        chosen = fewer
        kept = _kept(graph, group, removed)
    if kept % n:
        notes.append(f"width cannot be a multiple of {n}")
    return chosen


def _enforce(graph: DependencyGraph, group: Group, removed: np.ndarray, chosen: np.ndarray,
             scores: np.ndarray, round_to: int) -> tuple[list, str]:
    notes = []
    spaces = graph.spaces
    chosen = list(chosen.tolist())
    for space in group.spaces:
        comps = graph.labels[spaces.ids(space)]
        if len(comps) and removed[comps].all():
            chosen = _give_back(removed, chosen, scores, np.unique(comps))
            notes.append("kept back a channel so that every tensor keeps at least one")
    if round_to > 1 and chosen:  # only groups that lose channels are rounded: ratio 0 changes nothing
        chosen = _round_width(graph, group, removed, chosen, scores, round_to, notes)
    return chosen, "; ".join(dict.fromkeys(notes))


def _exact_only(graph: DependencyGraph) -> DependencyGraph:
    """The graph with inexact channels (normalised widths: the residual stream) no longer candidates."""
    groups = tuple(dataclasses.replace(g, channels=g.channels[~graph.inexact[g.channels]]) for g in graph.groups)
    return dataclasses.replace(graph, groups=groups)


def finalize(graph: DependencyGraph, picks: dict, scores: np.ndarray, opts: PlanOptions,
             rounding: bool = True) -> tuple[np.ndarray, tuple]:
    """Apply the per-group constraints to chosen channels: (removed mask, decisions with reasons)."""
    removed = np.zeros(graph.num_channels, dtype=bool)
    decisions = []
    for g in graph.groups:
        chosen = picks.get(g.index)
        chosen = np.zeros(0, dtype=np.int64) if chosen is None else np.asarray(chosen, dtype=np.int64)
        removed[chosen] = True
        final, note = _enforce(graph, g, removed, chosen, scores, opts.round_to if rounding else 1)
        ref = graph.spaces.ids(g.reference)
        after = int((~removed[graph.labels[ref]]).sum())
        if len(g.channels) == 0:
            note = f"frozen: {g.reason}" if g.reason else "no prunable channel"
        elif g.reason:
            note = "; ".join(x for x in (note, f"{g.frozen_channels} channels frozen: {g.reason}") if x)
        if g.inexact and final:
            note = "; ".join(x for x in (note, f"inexact: {g.inexact}") if x)
        decisions.append(Decision(g.name, g.width, after, len(g.channels), len(final), note, g.cause,
                                  g.structural))
    return removed, tuple(decisions)


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
    from graphprune import budget
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
        graph = _exact_only(graph)
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

"""Stage 3, the planner: decide which channels go.

Local (default): each group loses floor(ratio * candidates) of its lowest-scoring
candidate channels. Global: candidates of all groups are ranked together by their
score divided by their group's mean score, and the lowest ratio * total go, at most
`max_group_ratio` of any one group.

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
import math
from dataclasses import dataclass

import numpy as np

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

    def check(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise PlanError(f"ratio {self.ratio} is outside [0, 1); pass e.g. --ratio 0.4")
        if self.round_to < 1:
            raise PlanError(f"round_to {self.round_to} must be >= 1")
        if self.criterion not in CRITERIA:
            raise PlanError(f"unknown criterion {self.criterion!r}; choose from {sorted(CRITERIA)}")
        if not 0.0 < self.max_group_ratio < 1.0:
            raise PlanError("max_group_ratio must be in (0, 1)")


@dataclass(frozen=True)
class Decision:
    group: str
    width_before: int
    width_after: int
    candidates: int
    removed: int
    note: str
    cause: Reason | None = None  # why the group's frozen channels are frozen, as data (graphprune.reasons)


@dataclass(frozen=True, eq=False)
class Plan:
    graph: DependencyGraph
    options: PlanOptions
    removed: np.ndarray  # channel id -> removed?
    decisions: tuple

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


def _local_choice(group: Group, scores: np.ndarray, ratio: float) -> np.ndarray:
    k = min(math.floor(ratio * len(group.channels) + 0.5), max(len(group.channels) - 1, 0))
    order = group.channels[np.argsort(scores[group.channels], kind="stable")]
    return order[:k]


def _global_choice(graph: DependencyGraph, scores: np.ndarray, opts: PlanOptions) -> dict:
    pool, owner = [], []
    for g in graph.groups:
        if len(g.channels) == 0:
            continue
        s = scores[g.channels]
        mean = s.mean() if s.mean() > 0 else 1.0
        pool.append(s / mean)
        owner.append(np.full(len(s), g.index))
    if not pool:
        return {}
    norm, owner = np.concatenate(pool), np.concatenate(owner)
    channels = np.concatenate([g.channels for g in graph.groups if len(g.channels)])
    budget = math.floor(opts.ratio * len(channels))
    taken: dict = {g.index: [] for g in graph.groups}
    caps = {g.index: math.floor(opts.max_group_ratio * len(g.channels)) for g in graph.groups}
    for k in np.argsort(norm, kind="stable"):
        if budget == 0:
            break
        gi = int(owner[k])
        if len(taken[gi]) < caps[gi]:
            taken[gi].append(int(channels[k]))
            budget -= 1
    return {gi: np.array(v, dtype=np.int64) for gi, v in taken.items()}


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


def plan(graph: DependencyGraph, options: PlanOptions | None = None) -> Plan:
    """Choose the channels to remove. Pure: the graph and the model are not changed."""
    opts = options or PlanOptions()
    opts.check()
    scores = CRITERIA[opts.criterion](graph)
    removed = np.zeros(graph.num_channels, dtype=bool)
    if not opts.prune_hidden:
        graph = _exact_only(graph)
    picks = _global_choice(graph, scores, opts) if opts.global_ranking else {}
    decisions = []
    for g in graph.groups:
        chosen = picks.get(g.index) if opts.global_ranking else _local_choice(g, scores, opts.ratio)
        chosen = np.zeros(0, dtype=np.int64) if chosen is None else chosen
        removed[chosen] = True
        final, note = _enforce(graph, g, removed, chosen, scores, opts.round_to)
        ref = graph.spaces.ids(g.reference)
        after = int((~removed[graph.labels[ref]]).sum())
        if len(g.channels) == 0:
            note = f"frozen: {g.reason}" if g.reason else "no prunable channel"
        elif g.reason:
            note = "; ".join(x for x in (note, f"{g.frozen_channels} channels frozen: {g.reason}") if x)
        if g.inexact and final:
            note = "; ".join(x for x in (note, f"inexact: {g.inexact}") if x)
        decisions.append(Decision(g.name, g.width, after, len(g.channels), len(final), note, g.cause))
    return Plan(graph, opts, removed, tuple(decisions))

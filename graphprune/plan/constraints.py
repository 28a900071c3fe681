"""Per-group constraints applied after channels are chosen, and the decision each group gets.

Every space keeps at least one element; with round_to = N the kept width of a pruned group's
reference space moves down to a multiple of N (removing the next-weakest channels; a width under N
is raised to N by keeping back the best removed ones). Whole-group and offset constraints of grouped
convs, norms and reshapes are already in the channels (graphprune.rules), so they need nothing here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from graphprune.capture.depgraph import DependencyGraph, Group
from graphprune.plan.types import Decision, PlanOptions


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


def exact_only(graph: DependencyGraph) -> DependencyGraph:
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

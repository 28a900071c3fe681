"""What the search may change: the kept width of every prunable group, and which blocks stay.

A `Config` names only what it changes (groups narrower than the original, blocks removed), so
the original is `Config()` and two configurations are the same exactly when their keys are.

Widths move in quanta: a group whose channels are single elements narrows by multiples of
`round_to` (8 keeps ONNX Runtime's blocked convolutions on their fast path); a group whose
channels span u elements (attention heads of width u) by multiples of lcm-like
`u * ceil(round_to / u)`. A group never goes below one quantum, nor below its frozen elements.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from graphprune.capture.depgraph import DependencyGraph, Group
from graphprune.check.oracle import killed
from graphprune.cost.macs import plan_macs
from graphprune.importance import score
from graphprune.plan.types import Plan, PlanOptions
from graphprune.rewrite.rewriter import rewrite


@dataclass(frozen=True)
class Config:
    widths: tuple[tuple[str, int], ...] = ()  # (group, kept width) of narrowed groups, sorted by name
    blocks: tuple[str, ...] = ()  # removed blocks, sorted

    @property
    def key(self) -> str:
        return json.dumps([list(self.widths), list(self.blocks)])

    def width(self, knob: Knob) -> int:
        return dict(self.widths).get(knob.name, knob.full)

    def narrowed(self, name: str, width: int, full: int) -> Config:
        widths = {**dict(self.widths), name: width}
        if width >= full:
            widths.pop(name)
        return dataclasses.replace(self, widths=tuple(sorted(widths.items())))

    def removing(self, block: str) -> Config:
        return dataclasses.replace(self, blocks=tuple(sorted({*self.blocks, block})))

    def to_dict(self) -> dict:
        return {"widths": dict(self.widths), "blocks": list(self.blocks)}


@dataclass(frozen=True)
class Knob:
    """One prunable group: its original width and the widths it may take, widest first."""

    name: str
    full: int
    options: tuple[int, ...]  # options[0] == full

    def index(self, width: int) -> int:
        return min(range(len(self.options)), key=lambda i: abs(self.options[i] - width))

    def nearest(self, width: float) -> int:
        """The widest option not above `width` (the narrowest option if all are)."""
        fits = [w for w in self.options if w <= width + 1e-9]
        return max(fits) if fits else self.options[-1]


def _knob(graph: DependencyGraph, group: Group, round_to: int) -> Knob | None:
    if len(group.channels) == 0:
        return None
    ref = graph.labels[graph.spaces.ids(group.reference)]
    candidate = np.isin(ref, group.channels)
    prunable = int(candidate.sum())
    if prunable == 0:
        return None
    unit = int(np.bincount(ref[candidate]).max())  # elements per channel (an attention head: its width)
    quantum = unit * max(1, math.ceil(round_to / unit))
    lowest = max(group.width - prunable, quantum)
    options = [group.width, *range((group.width - 1) // quantum * quantum, lowest - 1, -quantum)]
    options = [w for w in options if w >= lowest]
    return Knob(group.name, group.width, tuple(options)) if len(options) > 1 else None


class SearchSpace:
    """The knobs of one captured model and how a configuration becomes a plan and a model."""

    def __init__(self, graph: DependencyGraph, scores: np.ndarray | None = None, round_to: int = 8, depth=None):
        self.graph = graph
        self.scores = score(graph, "l2") if scores is None else scores
        self.round_to = round_to
        self.depth = depth  # graphprune.search.depthsteps.DepthSteps or None
        knobs = [_knob(graph, g, round_to) for g in graph.groups]
        self.knobs: tuple[Knob, ...] = tuple(k for k in knobs if k is not None)
        self.by_name = {k.name: k for k in self.knobs}
        self._built: dict = {}
        self._scratch: torch.nn.Module | None = None
        self._macs: dict = {}

    @property
    def blocks(self) -> tuple[str, ...]:
        return self.depth.blocks if self.depth is not None else ()

    def uniform(self, ratio: float) -> Config:
        """Every group at (1 - ratio) of its width, rounded down to an option."""
        config = Config()
        for k in self.knobs:
            config = config.narrowed(k.name, k.nearest((1.0 - ratio) * k.full), k.full)
        return config

    def plan(self, config: Config) -> Plan:
        graph, scores = self.graph, self.scores
        if config.blocks:
            graph = self.depth.graph(config.blocks)
            scores = score(graph, "l2")
        names = {g.name for g in graph.groups}
        widths = {n: w for n, w in config.widths if n in names}
        return plan_widths(graph, widths, scores)

    def build(self, config: Config) -> torch.nn.Module:
        """The pruned model of `config`, in eval mode (the last two are kept: scoring and measuring reuse them)."""
        if config.key not in self._built:
            self._built[config.key] = rewrite(self.plan(config)).eval()
            while len(self._built) > 2:
                self._built.pop(next(iter(self._built)))
        return self._built[config.key]

    @contextlib.contextmanager
    def evaluating(self, config: Config, own_statistics: bool = False):
        """A model that computes what `config`'s pruned model computes, for scoring.

        Exact removals are evaluated without rewriting: a private copy of the original (made once) runs
        with zeroed copies of the removed channels' parameter and buffer slices (functional_call), which
        the dead-channel oracle (graphprune.check.oracle) guarantees computes the pruned model's outputs.
        Inexact removals (normalised widths) and removed blocks are built for real.
        `own_statistics`: the copy also gets clones of every buffer (BatchNorm statistics), so that
        re-estimating them (graphprune.rewrite.recalibrate) changes nothing the next candidate sees.
        """
        plan = self.plan(config)
        if config.blocks or (plan.removed & plan.graph.inexact).any():
            yield self.build(config)
            return
        if self._scratch is None:
            self._scratch = rewrite(plan_widths(self.graph, {}, self.scores)).eval()
        tensors = {name: b.clone() for name, b in self._scratch.named_buffers()} if own_statistics else {}
        yield _Zeroed(self._scratch, tensors | killed(plan))

    def macs(self, config: Config) -> int:
        """Exact MACs of `config`'s model at the example's batch (graphprune.cost.macs.plan_macs: no rewrite), cached."""
        if config.key not in self._macs:
            self._macs[config.key] = plan_macs(self.plan(config))
        return self._macs[config.key]


class _Zeroed(torch.nn.Module):
    """`module` run with some tensors replaced (the oracle's zeroed copies); `module` is not changed."""

    def __init__(self, module: torch.nn.Module, tensors: dict):
        super().__init__()
        self.inner, self.tensors = module, tensors
        self.train(module.training)  # the wrapper's mode is its module's (recalibration restores it)

    def forward(self, *args, **kwargs):
        from torch.func import functional_call

        return functional_call(self.inner, self.tensors, args, kwargs, strict=False)


def plan_widths(graph: DependencyGraph, widths: dict, scores: np.ndarray) -> Plan:
    """A plan that keeps `widths[name]` elements of each listed group (its best-scoring channels)."""
    from graphprune.plan.planner import plan

    return plan(graph, PlanOptions(ratio=0.0, round_to=1, widths=widths), scores=scores)

"""What a plan is: the options that ask for it, and the decisions and removed channels it holds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from graphprune.capture.depgraph import DependencyGraph
from graphprune.errors import PlanError
from graphprune.importance import CRITERIA
from graphprune.plan import cuts
from graphprune.reasons import Reason

ATTENTION = ("heads", "head-dim", "none")


@dataclass(frozen=True)
class PlanOptions:
    """What a plan removes. Exactly one of ratio, threshold, a budget or widths decides how much;
    every message names the command-line flag of the field it refuses."""

    ratio: float = 0.4  # --ratio: fraction of each group's candidate channels removed, in [0, 1)
    global_ranking: bool = False  # --global: rank channels across groups by normalised score
    round_to: int = 8  # --round-to: kept widths in multiples of N (ONNX Runtime's NCHWc block on AVX2)
    criterion: str = "l2"  # --criterion: graphprune.importance.CRITERIA, or 'auto' (with data: pipeline.decide.auto)
    max_group_ratio: float = 0.9  # global rules: at most this fraction of one group goes
    prune_hidden: bool = True  # --no-prune-hidden: False keeps widths whose pruning is inexact (LayerNorm/RMSNorm)
    threshold: str | None = None  # --threshold: 'mean', 'percentile:P' or 'sigma:K' (instead of ratio)
    target_macs: float | None = None  # --target-macs: fraction of the original's MACs (instead of ratio)
    target_params: float | None = None  # --target-params: fraction of the original's parameters
    normalize: str = "mean"  # how groups' scores are made comparable for global ranking (graphprune.plan.cuts)
    widths: dict | None = None  # group name -> kept width (instead of ratio; the search's knob)
    tolerance: float = 0.02  # budgets: |achieved / target - 1| aimed for
    cost_power: float = 1.0  # budgets: rank by score / saving ** cost_power (graphprune.plan.budget)
    # budgets and global rules: the weight criterion whose scores set each group's width (the chosen
    # criterion still picks the channels inside each group); 'auto': l2 for data criteria, whose
    # scores rank well within a group but compare poorly across groups (docs/BENCHMARKS.md), else
    # the criterion itself; None: always the criterion itself
    allocate: str | None = "auto"
    # --prune-heads / --prune-head-dim / --no-prune-heads: what attention may lose, applied when the
    # dependency graph is built: whole heads, every head's width, or nothing
    attention: str = "heads"

    def check(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise PlanError(f"--ratio {self.ratio} is outside [0, 1); e.g. --ratio 0.4 removes 40% of each group")
        if self.round_to < 1:
            raise PlanError(f"--round-to {self.round_to} must be 1 or more (1 turns rounding off)")
        if self.criterion not in CRITERIA and self.criterion != "auto":
            raise PlanError(f"unknown criterion {self.criterion!r} (--criterion); choose from auto, "
                            f"{', '.join(sorted(CRITERIA))}")
        if not 0.0 < self.max_group_ratio < 1.0:
            raise PlanError("max_group_ratio must be in (0, 1)")
        for flag, value in (("--target-macs", self.target_macs), ("--target-params", self.target_params)):
            if value is not None and not 0.0 < value < 1.0:
                raise PlanError(f"{flag} {value} is outside (0, 1): it is the fraction of the original to keep, e.g. 0.5")
        if self.target_macs is not None and self.target_params is not None:
            raise PlanError("pass one budget: --target-macs or --target-params, not both")
        if self.threshold is not None and self.budget is not None:
            raise PlanError("--threshold and a --target-* budget both decide how much goes; pass one")
        if self.threshold is not None:
            cuts.parse_threshold(self.threshold)
        if self.allocate not in (None, "auto") and (self.allocate not in CRITERIA or CRITERIA[self.allocate].needs_data):
            raise PlanError(f"allocate {self.allocate!r} must be a criterion that needs no data (l1, l2, bn, random)")
        if self.normalize not in cuts.NORMALIZATIONS:
            raise PlanError(f"unknown normalisation {self.normalize!r}; choose from {', '.join(cuts.NORMALIZATIONS)}")
        if self.attention not in ATTENTION:
            raise PlanError(f"unknown attention option {self.attention!r}; choose from {', '.join(ATTENTION)}")

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
    budget: object = None  # graphprune.plan.budget.Outcome under a budget: what it reached, why it missed if it did

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

"""What one shrink has learnt so far, stage by stage: options, data, the judge of held-out data, and the
clocks of its stages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

import torch

from graphprune.data.options import CalibrationOptions
from graphprune.data.progress import Stages
from graphprune.plan.types import PlanOptions


@dataclasses.dataclass
class Run:
    """What one shrink has learnt so far, stage by stage."""

    model: torch.nn.Module
    args: tuple
    kwargs: dict
    opts: PlanOptions
    calibration: CalibrationOptions
    data: Any
    step: Stages
    judge: Any = None  # graphprune.pipeline.decide.Judge, with data
    held_note: str = ""  # why there is no held-out slice
    release: bool = False  # release_model: the original's tensors are freed as the pruned model is built
    params_before: int = 0
    outputs: Any = None  # the returned model's outputs on the example, while they hold (pipeline.checks.stamp)
    t0: float = dataclasses.field(default_factory=time.perf_counter)
    seconds: dict = dataclasses.field(default_factory=dict)
    counted: dict = dataclasses.field(default_factory=dict)  # step.seconds when this run began

    def __post_init__(self):
        self.counted = dict(self.step.seconds)  # a Stages may serve several runs (--steps)

    @contextlib.contextmanager
    def clock(self, stage: str):
        """Time the block as `stage` (the report's `seconds`; a stage met twice adds up)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t

    def timings(self) -> dict:
        """The clocked stages, the counted data stages (blocks, allocate, refit, recalibrate) of this run
        beside them (none runs inside a clocked one but score, which its clock covers), and the total."""
        data = {k: v - self.counted.get(k, 0.0) for k, v in self.step.seconds.items() if v > self.counted.get(k, 0.0)}
        return {**data, **self.seconds, "total": time.perf_counter() - self.t0}



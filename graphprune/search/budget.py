"""The latency budget: a fraction of the original model's measured latency.

    --target-latency F   budget = F, with 0 < F < 1
    --speedup X          budget = 1 / X, with X > 1
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.errors import InputError


@dataclass(frozen=True)
class Budget:
    fraction: float  # target latency / original latency, in (0, 1)

    @property
    def speedup(self) -> float:
        return 1.0 / self.fraction

    def met(self, ratio: float) -> bool:
        return ratio <= self.fraction


def make_budget(target_latency: float | None = None, speedup: float | None = None) -> Budget:
    """The budget from exactly one of the two options; one-line InputError otherwise."""
    if target_latency is not None and speedup is not None:
        raise InputError("pass either --target-latency or --speedup, not both")
    if target_latency is not None:
        if not 0.0 < target_latency < 1.0:
            raise InputError(f"--target-latency {target_latency} is outside (0, 1); e.g. --target-latency 0.5 halves latency")
        return Budget(float(target_latency))
    if speedup is not None:
        if not speedup > 1.0:
            raise InputError(f"--speedup {speedup} must be more than 1; e.g. --speedup 2 halves latency")
        return Budget(1.0 / float(speedup))
    raise InputError("a latency search needs --target-latency F or --speedup X")

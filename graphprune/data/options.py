"""How `shrink` uses calibration data: how much of it each stage reads, and which steps run on it.

    shrink(model, x, data=load_data("train.npz", x), calibration=CalibrationOptions(batches=32))
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.errors import InputError


@dataclass(frozen=True)
class CalibrationOptions:
    batches: int | None = 16  # batches each data stage reads (scoring, allocation, refit, BatchNorm); None: all
    recalibrate: bool = True  # re-estimate the pruned model's BatchNorm statistics on the data
    reconstruct: bool = True  # refit the layers that lost inputs by least squares to the original's outputs
    compensate: bool = True  # bias correction for the removed channels (graphprune.rewrite.compensate); with data, judged
    seed: int = 0  # seed of sampled patches, drawn labels and the random criterion

    def check(self) -> None:
        if self.batches is not None and (isinstance(self.batches, bool) or self.batches < 1):
            raise InputError(f"--calib-batches {self.batches} must be 1 or more")

"""What depth pruning is asked for: how many whole blocks go first, and how they are ranked.

    shrink(model, x, data=data, depth=DepthOptions(blocks=2, criterion="influence"))
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.depth.rank import CRITERIA
from graphprune.errors import InputError


@dataclass(frozen=True)
class DepthOptions:
    blocks: float = 0  # blocks to remove first: a count (0, 1, 2, ...) or a fraction in (0, 1) of those found
    criterion: str = "loss"  # loss: loss increase when a block alone is bypassed; influence: 1 - cos(block in, out)
    # the fraction of the original's cost (the budget's kind) that widths alone must be able to reach for the
    # blocks to be judged against them; None: this shrink's own budget. pipeline.steps sets the last step's aim
    # here, since blocks go in the first step only and must carry the model to the end
    reach: float | None = None

    def check(self, has_data: bool) -> None:
        if self.criterion not in CRITERIA:
            raise InputError(f"unknown --block-criterion {self.criterion!r}; choose from {', '.join(CRITERIA)}")
        if isinstance(self.blocks, bool) or self.blocks < 0:
            raise InputError(f"--remove-blocks {self.blocks} must be a count (0, 1, 2, ...) or a fraction in (0, 1)")
        if self.blocks and not has_data:
            raise InputError("--remove-blocks ranks blocks on calibration data; pass --data FILE (inputs, labels optional)")

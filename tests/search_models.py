"""Small models and a known latency function for the search tests."""

from __future__ import annotations

import torch
from torch import nn


class Ladder(nn.Module):
    """Four conv widths of different cost (a wide cheap conv, a narrow costly one) into a classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(64, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(48, 64, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.d = nn.Sequential(nn.Conv2d(64, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, classes)
        with torch.no_grad():
            self.head.weight.mul_(30)  # confident logits, so that pruning moves the KL to the original
    def forward(self, x):
        x = self.d(self.c(self.b(self.a(x))))
        return self.head(x.mean((2, 3)))


def macs_latency(space, floor: float = 0.05, power: float = 1.3, off_block: float = 0.02):
    """A known latency function of the configuration, not proportional to MACs:
    floor + (1 - floor) * (MACs / original MACs) ** power + off_block * (widths not a multiple of 16)."""
    from graphprune.search.space import Config

    base = space.macs(Config())

    def ratio(config) -> float:
        macs = space.macs(config) / base
        return floor + (1 - floor) * macs**power + off_block * sum(w % 16 != 0 for _, w in config.widths)

    return ratio


class Residual(nn.Module):
    """A stem, two residual blocks that can go, and a head; `skip` names the blocks left out."""

    def __init__(self, skip: tuple = ()):
        super().__init__()
        self.skip = tuple(skip)
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.r1 = nn.Sequential(nn.Conv2d(32, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(), nn.Conv2d(48, 32, 1))
        self.r2 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 32, 1))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        for name in ("r1", "r2"):
            if name not in self.skip:
                x = x + getattr(self, name)(x)
        return self.head(x.mean((2, 3)))


def remove_by_rebuilding(model: Residual):
    """A stand-in for graphprune.depth.remove_blocks: capture `model` rebuilt without the blocks."""
    from graphprune.capture.trace import capture

    def remove(captured, names):
        smaller = Residual(skip=tuple(names))
        smaller.load_state_dict(model.state_dict())
        return capture(smaller.eval(), captured.args, captured.kwargs)

    return remove

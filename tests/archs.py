"""Tiny architectures for the CLI tests: `--arch tests.archs:build` builds TinyNet."""

from __future__ import annotations

import torch.nn as nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(self.features(x))


def build() -> nn.Module:
    return TinyNet().eval()

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


class TinyClassifier(nn.Module):
    """conv -> BN -> ReLU -> global mean -> linear: class scores [N, classes] for 3 x H x W images."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


def build_classifier() -> nn.Module:
    return TinyClassifier().eval()

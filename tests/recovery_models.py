"""Small models and data sets for the recovery tests (fast on two CPU cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

import graphprune
from graphprune.data import load_data


class ConvBNDrop(nn.Module):
    """Conv + BatchNorm + dropout + linear: batch statistics and randomness in train()."""

    def __init__(self, width: int = 16, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(width * 4 * 4, classes)

    def forward(self, x):
        x = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(torch.nn.functional.max_pool2d(x, 2), 1))


class MLP(nn.Module):
    """No batch statistics, no dropout: DDP must equal one process exactly (up to rounding)."""

    def __init__(self, d: int = 12, hidden: int = 32, classes: int = 3):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(d, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class TokenEncoder(nn.Module):
    """Keyword inputs (input_ids, attention_mask) -> [N, L, D] hidden states, like a BertModel."""

    def __init__(self, vocab: int = 50, d: int = 16, hidden: int = 32):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        return (h + self.down(torch.relu(self.up(h)))) * attention_mask.unsqueeze(-1)


def images(n: int = 96, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 8x8 images: class k has a bright k-th quadrant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, 0, (k // 2) * 4:(k // 2) * 4 + 4, (k % 2) * 4:(k % 2) * 4 + 4] += 1.0
    return x, y


def npz(path: Path, x: np.ndarray, y: np.ndarray | None = None, **named) -> Path:
    arrays = dict(named) if named else {"x": x}
    if y is not None:
        arrays["y"] = y
    np.savez(path, **arrays)
    return path


def pruned_pair(model: nn.Module, example, ratio: float = 0.5):
    """(trained-looking original in eval mode, its pruned copy)."""
    model.eval()
    pruned, _ = graphprune.shrink(model, example, ratio)
    return model, pruned


def data(path: Path, example, batch_size: int = 16):
    return load_data(str(path), example, batch_size=batch_size)

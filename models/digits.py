"""Small CNN on scikit-learn's digits data set: graphprune's bundled default model.

The inputs are 8x8 grayscale images ([N, 1, 8, 8], pixel values scaled to
[0, 1]) with 10 classes. The architecture is small but gives a pruning
compiler something to chew on: a stem conv, a residual block (coupled
channels through an add), a two-branch block joined with ``torch.cat``, and a
flatten into a two-layer classifier head.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, k: int) -> nn.Sequential:
    """Conv (no bias) followed by batch norm, 'same' padding."""
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))


class DigitsCNN(nn.Module):
    """Stem -> residual block -> two-branch concat block -> pool -> MLP head."""

    def __init__(self, width: int = 32, branch: int = 24, hidden: int = 64) -> None:
        super().__init__()
        self.stem = _conv_bn(1, width, 3)
        self.res1 = _conv_bn(width, width, 3)
        self.res2 = _conv_bn(width, width, 3)
        self.branch_a = _conv_bn(width, branch, 1)
        self.branch_b = _conv_bn(width, branch, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(2 * branch * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.res2(torch.relu(self.res1(x))))
        a = torch.relu(self.branch_a(x))
        b = torch.relu(self.branch_b(x))
        x = self.pool(torch.cat([a, b], dim=1))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def build() -> DigitsCNN:
    """Factory for ``--arch models.digits:build`` (fresh, untrained weights)."""
    return DigitsCNN()


def load_split(
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed stratified 80/20 split: (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(idx, test_size=0.2, random_state=seed, stratify=data.target)
    tr, te = torch.from_numpy(tr), torch.from_numpy(te)
    return x[tr], y[tr], x[te], y[te]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on (x, y), eval mode, one batch."""
    was_training = model.training
    model.eval()
    pred = model(x).argmax(dim=1)
    model.train(was_training)
    return (pred == y).float().mean().item()

"""Reference models for the data-driven half, trained here on scikit-learn's digits.

* `DigitsMLP`: a tabular MLP on the 64 pixel values as features (three hidden layers, dropout).
* `DigitsResNet`: an image classifier with BatchNorm, dropout and two residual blocks.

`train(model, seed)` fits either on the split of models/digits.py (Adam, fixed seed) so that
benchmarks and tests have trained models whose pruning behaviour means something.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """[N, 64] features -> 10 classes."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class DigitsResNet(nn.Module):
    """[N, 1, 8, 8] -> 10 classes: stem, two residual blocks, downsampling conv, pooled head."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.blocks(self.stem(x))))


def features(x: torch.Tensor) -> torch.Tensor:
    """Digits images [N, 1, 8, 8] as tabular features [N, 64]."""
    return x.flatten(1)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 30, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    """Train both models on the digits split and save them as models/digits_resnet.pt and models/digits_mlp.pt."""
    from pathlib import Path

    import models.tabular as here_module  # pickles name models.tabular, not __main__
    from models.digits import accuracy, load_split

    torch.set_num_threads(1)
    xtr, ytr, xte, yte = load_split()
    here = Path(__file__).resolve().parent
    resnet = train(here_module.DigitsResNet(), xtr, ytr, epochs=10)
    mlp = train(here_module.DigitsMLP(), features(xtr), ytr, epochs=20)
    torch.save(resnet, here / "digits_resnet.pt")
    torch.save(mlp, here / "digits_mlp.pt")
    print(f"digits ResNet held-out accuracy {accuracy(resnet, xte, yte):.4f}; "
          f"MLP {accuracy(mlp, features(xte), yte):.4f}")


if __name__ == "__main__":
    main()

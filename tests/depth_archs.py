"""Small models for the depth tests: residual blocks as modules and inline, a transformer, a plain CNN.

`--arch tests.depth_archs:build` builds TinyResNet (random init, eval mode).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out))


class Basic(nn.Module):
    """A ResNet basic block written like torchvision's: in-place add and ReLU, optional downsample."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = conv_bn(c_in, c_out, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """Stem, an inline residual branch (a, b), four Basic blocks (the third downsamples), head."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.a = conv_bn(8, 8)
        self.b = conv_bn(8, 8)
        self.layers = nn.Sequential(Basic(8, 8), Basic(8, 8), Basic(8, 16, 2), Basic(16, 16))
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.b(torch.relu(self.a(x))))
        x = self.layers(x)
        return self.fc(self.drop(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))


class Plain(nn.Module):
    """No residual connection anywhere (repeated same-shape convs included)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(conv_bn(3, 8), nn.ReLU(), conv_bn(8, 8), nn.ReLU(), conv_bn(8, 8), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


class Encoder(nn.Module):
    """Token embedding, a pre-norm nn.TransformerEncoder of 3 layers, mean pooling, a classifier."""

    def __init__(self, vocab: int = 50, d: int = 16, layers: int = 3, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids)).mean(1))


def build() -> nn.Module:
    return TinyResNet().eval()


class Inline(nn.Module):
    """Residual branches written inline four ways: scaled, branch first, `h += f(h)` then an in-place
    ReLU on the result, and `out = f(h); out += h; out.relu_()` with `h` read again afterwards."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = conv_bn(3, c)
        self.f1, self.f2, self.f3, self.f4 = (conv_bn(c, c) for _ in range(4))
        self.gamma = nn.Parameter(torch.full((1, c, 1, 1), 0.5))
        self.head = nn.Linear(c, 4)
        self.head2 = nn.Linear(c, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.gamma * self.f1(h)
        h = self.f2(h) + h
        h += self.f3(h)
        h = torch.relu_(h) - 0.5
        out = self.f4(h)
        out += h
        out = out.relu_()
        return self.head(out.mean((2, 3))) + self.head2(h.mean((2, 3)))


class MLPBlock(nn.Module):
    """x + fc2(relu(fc1(x))): a residual MLP block."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class MLPStack(nn.Module):
    """A linear in, three residual MLP blocks (16 wide, 32 hidden), a classifier; the blocks hold most MACs."""

    def __init__(self, d: int = 16, hidden: int = 32, blocks: int = 3, classes: int = 4):
        super().__init__()
        self.inp = nn.Linear(d, d)
        self.blocks = nn.Sequential(*(MLPBlock(d, hidden) for _ in range(blocks)))
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.inp(x)))


def blocks_carry_the_signal() -> MLPStack:
    """Every block adds a large term; half of each block's hidden units carry almost nothing (weights in and
    out scaled by 1e-3), so widths alone can lose them where losing a block is harmful."""
    model = MLPStack()
    with torch.no_grad():
        for block in model.blocks:
            block.fc2.weight.mul_(4.0)
            block.fc1.weight[16:].mul_(1e-3)
            block.fc1.bias[16:].zero_()
            block.fc2.weight[:, 16:].mul_(1e-3)
    return model.eval()


def blocks_near_identity() -> MLPStack:
    """The last two blocks add nothing (their fc2 is zero): removing them changes no output."""
    model = MLPStack()
    with torch.no_grad():
        for block in model.blocks[1:]:
            block.fc2.weight.zero_()
            block.fc2.bias.zero_()
    return model.eval()

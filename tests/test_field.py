"""The models people prune in the field (issue 19): the op patterns that broke, and a CI-sized slice
of the field families of scripts/coverage_field.py (the full sweep is in docs/COVERAGE.md)."""

from __future__ import annotations

import torch

import graphprune
from graphprune.cost import count_macs


class _TokenBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([token, x], dim=1))


class _ClassToken(torch.nn.Module):
    """PiT/CaiT pattern: a parameter expanded to the batch and handed to a submodule as an argument."""

    def __init__(self) -> None:
        super().__init__()
        self.token = torch.nn.Parameter(torch.randn(1, 1, 8))
        self.block = _TokenBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, self.token.expand(x.shape[0], -1, -1))


def test_macs_count_a_parameter_view_passed_to_a_submodule():
    """torch's FlopCounterMode attributes FLOPs to modules through autograd hooks on their inputs,
    which fail on a view of a parameter taken under no_grad; count_macs reads totals only."""
    model = _ClassToken()
    x = torch.randn(2, 5, 8)
    assert count_macs(model, (x,)) == 2 * 6 * 8 * 8  # one Linear over 2 x 6 tokens


def test_pruned_class_token_model_reports_macs():
    """shrink counts the pruned model's MACs, whose graph calls the block with the expanded token."""
    torch.manual_seed(0)
    model = _ClassTokenNet()
    pruned, report = graphprune.shrink(model, torch.randn(1, 5, 16), 0.5)
    assert 0 < report.macs_ratio < 1
    assert pruned(torch.randn(3, 5, 16)).shape == (3, 10)


class _Blocks(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        h = torch.cat([token, x], dim=1)
        return h + self.down(torch.relu(self.up(h)))


class _ClassTokenNet(torch.nn.Module):
    """Embedding, a block called with the tokens and the expanded class token, head on the class token."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(16, 32)
        self.token = torch.nn.Parameter(torch.randn(1, 1, 32))
        self.blocks = _Blocks(32)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.inp(x), self.token.expand(x.shape[0], -1, -1))
        return self.head(h[:, 0])

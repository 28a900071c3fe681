"""What an op is besides how it moves indices lives in its rule (graphprune.rules.registry.Role):
the bn criterion, the activation criteria, the least-squares refit and depth all read it from there."""

from __future__ import annotations

import torch
import torch.nn as nn

import graphprune
from graphprune.rules.registry import Role, has_role


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv3d = nn.Conv3d(1, 2, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = y + y.float().contiguous()
        z = self.conv3d(y[:, :1, None])
        return self.fc(y.mean((2, 3))), z.exp()


def _roles() -> dict[str, set[Role]]:
    graph = graphprune.analyze(Block().eval(), torch.randn(2, 3, 8, 8))
    found: dict[str, set[Role]] = {}
    for node in graph.captured.graph.nodes:
        if node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
            found.setdefault(name, set()).update(r for r in Role if has_role(node, r))
    return found


def test_each_role_is_found_on_its_ops_and_only_there():
    roles = _roles()
    assert roles["batch_norm"] == {Role.NORMALIZES}
    assert roles["relu"] == {Role.ACTIVATION}
    assert roles["conv2d"] == {Role.REFIT} and roles["linear"] == {Role.REFIT}
    assert roles["conv3d"] == set()  # no refit for 3-d convolutions
    assert roles["add"] == {Role.RESIDUAL_ADD}
    assert roles["exp"] == set() and roles["mean"] == set()


def test_an_op_without_a_rule_has_no_role():
    node = torch.fx.Graph().call_function(torch.ops.aten.glu.default, ())
    assert not any(has_role(node, r) for r in Role)

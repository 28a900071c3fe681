"""The shrink report reads as a result, not a failure.

Rules: dims that no op's rule claims (a kernel's spatial dims) are structural, listed apart and
never among the frozen groups; a channel dim frozen because an op does not map it is still
reported frozen; the frozen table fits 80 columns however long the source path.
"""

from __future__ import annotations

from io import StringIO

import torch
import torchvision
from rich.console import Console
from torch import nn

import graphprune
from graphprune.plan.types import PlanOptions
from graphprune.reasons import Cause
from graphprune.report.report import render


class Cumsum(nn.Module):
    """conv -> cumsum over channels (its rule relates no channel) -> conv -> conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3), nn.Conv2d(16, 8, 3)

    def forward(self, x):
        return self.c(self.b(torch.cumsum(self.a(x), dim=1)).relu())


def test_kernel_dims_are_structural_not_frozen():
    model = torchvision.models.resnet18().eval()
    _, report = graphprune.shrink(model, torch.randn(1, 3, 32, 32), plan=PlanOptions(ratio=0.3))
    data = report.to_dict()
    assert all(r["cause"] != Cause.UNMAPPED.value for r in data["frozen_by_cause"])
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    structural = {r["op"]: r["groups"] for r in data["structural"]}
    assert structural == {"aten.conv2d.default": 2 * convs}  # the two kernel dims of every conv
    assert {r["cause"] for r in data["frozen_by_cause"]} == {Cause.INPUT.value, Cause.OUTPUT.value}
    decisions = report.decisions
    assert all(d.candidates == 0 for d in decisions if d.structural)
    assert all(d.group.endswith(("[2]", "[3]")) for d in decisions if d.structural)


def test_a_channel_frozen_by_an_op_that_does_not_map_it_is_reported_frozen():
    _, report = graphprune.shrink(Cumsum().eval(), torch.randn(1, 3, 16, 16), plan=PlanOptions(ratio=0.5))
    rows = report.to_dict()["frozen_by_cause"]
    unmapped = [r for r in rows if r["cause"] == Cause.UNMAPPED.value]
    assert unmapped and unmapped[0]["op"] == "aten.cumsum.default" and unmapped[0]["channels"] == 32
    assert __file__.endswith(unmapped[0]["where"].rpartition(":")[0].rpartition("/")[2])


def test_the_frozen_table_reads_at_80_columns():
    _, report = graphprune.shrink(Cumsum().eval(), torch.randn(1, 3, 16, 16), plan=PlanOptions(ratio=0.5))
    out = StringIO()
    render(report, Console(file=out, width=80))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    table = "\n".join(lines[next(i for i, line in enumerate(lines) if "frozen groups" in line):])
    assert "cumsum" in table and "test_report.py:" in table.replace("│", "").replace(" ", "").replace("\n", "")

"""What shrink saves on time keeps its checks: MACs counted on the captured graph equal torch's
FlopCounterMode over a forward pass, and the dead-channel oracle still checks the very model shrink
returns when it reuses that model's run."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import graphprune
from graphprune.cost.macs import count_macs, graph_macs
from graphprune.errors import VerificationError
from graphprune.pipeline import shrink as pipeline


class Mixer(nn.Module):
    """Ops without a cost formula of their own that torch still counts (einsum, bilinear) or decomposes
    (layer_norm, group_norm, pooling)."""

    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(12, 24)  # its 24 features and the 16 channels of `expand` can be pruned
        self.inp = nn.Linear(24, 16)
        self.w = nn.Parameter(torch.randn(16, 16))
        self.bil = nn.Bilinear(16, 16, 8)
        self.norm = nn.LayerNorm(8)
        self.expand = nn.Conv1d(4, 16, 1)
        self.conv = nn.Conv1d(16, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)

    def forward(self, x, s):
        h = torch.relu(self.inp(torch.relu(self.pre(x))))
        e = torch.einsum("bi,ij->bj", h, self.w)
        y = self.norm(self.bil(h, e))
        c = self.gn(self.conv(torch.relu(self.expand(s)))).mean(-1)
        return y + c


def _cases():
    return {
        "resnet18": (torchvision.models.resnet18().eval(), (torch.randn(1, 3, 32, 32),)),
        "mobilenet_v2": (torchvision.models.mobilenet_v2().eval(), (torch.randn(2, 3, 32, 32),)),
        "encoder": (nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1).eval(),
                    (torch.randn(2, 5, 16),)),
        "mixer": (Mixer().eval(), (torch.randn(2, 12), torch.randn(2, 4, 6))),
    }


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("ratio", [0.0, 0.4])
def test_graph_macs_equal_the_flop_counter_on_a_forward_pass(name, ratio):
    torch.manual_seed(0)
    model, args = _cases()[name]
    graph = graphprune.analyze(model, args)
    plan = graphprune.plan(graph, ratio=ratio, round_to=1)
    assert plan.removed.any() == (ratio > 0)
    counted = graph_macs(plan)
    assert counted is not None
    assert counted == (count_macs(graph.captured.module, args), count_macs(graphprune.rewrite(plan), args))
    assert counted[0] > 0


def test_shrink_reports_the_forward_pass_counts_and_every_stage():
    torch.manual_seed(0)
    model, args = _cases()["mixer"]
    pruned, report = graphprune.shrink(model, args, plan=graphprune.PlanOptions(ratio=0.4, round_to=1))
    assert (report.macs_before, report.macs_after) == (count_macs(model, args), count_macs(pruned, args))
    assert report.macs_after < report.macs_before
    assert [c["check"] for c in report.checks] == ["runs", "dead channels"]
    assert {"capture", "graph", "score", "plan", "rewrite", "verify", "oracle", "macs", "total"} <= set(report.seconds)


def test_the_oracle_checks_the_model_shrink_returns(monkeypatch):
    """A kept weight changed after the rewrite (as a wrong slice would) fails the dead-channel check, though
    the oracle no longer rewrites the plan a second time."""
    real = pipeline.make_model

    def wrong(plan, **kwargs):
        pruned = real(plan, **kwargs)
        with torch.no_grad():
            next(p for p in pruned.parameters() if p.dim() == 2).mul_(-1.0)
        return pruned

    monkeypatch.setattr(pipeline, "make_model", wrong)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    with pytest.raises(VerificationError, match="dead-channel check failed"):
        graphprune.shrink(model, torch.randn(2, 8), plan=graphprune.PlanOptions(ratio=0.5, round_to=1))


def test_a_model_that_rejects_the_input_is_named_before_capture_is_blamed():
    model = nn.Sequential(nn.Conv2d(3, 8, 3)).eval()
    with pytest.raises(graphprune.GraphPruneError, match="rejects the example input"):
        graphprune.shrink(model, torch.randn(1, 4, 8, 8))


def test_the_speed_script_divides_medians_side_by_side():
    """scripts/shrink_speed.py's table, from fake timings: stage columns, totals and graphprune / TP."""
    import importlib

    module = importlib.import_module("scripts.shrink_speed")
    stages = dict.fromkeys(module.STAGES, 0.5) | {"wall": 3.0}
    text = module.render([{"model": "m", "stages": stages, "tp": 2.0, "checks": ["runs"]}], ["--models", "m"], 3, 0.4)
    row = next(line for line in text.splitlines() if line.startswith("| m |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:len(module.STAGES) + 1] == ["0.50"] * len(module.STAGES)
    assert cells[-4:] == [f"{3.0 - 0.5 * len(module.STAGES):.2f}", "3.00", "2.00", "1.50"]
    assert "scripts.shrink_speed --models m" in text

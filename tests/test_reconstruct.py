"""Least-squares reconstruction (graphprune.rewrite.reconstruct) and the measured allocation rule
(graphprune.pipeline.allocate).

Reconstruction's oracle: when a removed channel is a copy of a kept one, the layer reading them
can take over its contribution exactly, so the refit model answers as the original did (to
float tolerance) while the model as cut does not. Then: it never makes a layer worse on held-out
calibration data, it leaves a model with nothing removed alone, and shrink reports what it did.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune.data import load_data
from graphprune.plan.types import PlanOptions
from graphprune.rewrite.lstsq import row_weights
from graphprune.rewrite.reconstruct import reconstruct
from graphprune.rewrite.walk import Cursor


class Twins(nn.Module):
    """fc1's (or conv1's) second half of units copies its first half."""

    def __init__(self, conv: bool):
        super().__init__()
        torch.manual_seed(0)
        if conv:
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)
        else:
            self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)
        with torch.no_grad():
            self.a.weight[4:] = self.a.weight[:4]
            self.a.bias[4:] = self.a.bias[:4]

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _cut_twins(tmp_path, conv: bool):
    model = Twins(conv).eval()
    x = torch.randn(64, 3, 6, 6) if conv else torch.randn(64, 6)
    np.savez(tmp_path / "x.npz", x=x.numpy())
    data = load_data(str(tmp_path / "x.npz"), x[:1], batch_size=8)
    graph = graphprune.analyze(model, x[:2])
    node = next(n for n in graph.captured.graph.nodes if n.op == "get_attr" and n.target == "a.weight")
    scores = np.ones(graph.num_channels)
    scores[graph.labels[graph.spaces.ids(((node, None), 0))][4:]] = 0.0  # the copies go
    plan = graphprune.plan(graph, PlanOptions(ratio=0.5, round_to=1), scores=scores)
    return model, x, data, plan


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_refit_takes_over_removed_copies_exactly(tmp_path, conv):
    model, x, data, plan = _cut_twins(tmp_path, conv)
    pruned = graphprune.rewrite(plan)
    assert pruned.get_parameter("a.weight").shape[0] == 4
    with torch.no_grad():
        want, cut = model(x), pruned(x)
    refits = reconstruct(plan, pruned, data)
    with torch.no_grad():
        got = pruned(x)
    rel = lambda y: float(((y - want) ** 2).sum() / (want**2).sum())  # noqa: E731
    assert rel(cut) > 1e-2  # as cut, the copies' share is missing
    assert rel(got) < 1e-6
    assert [r.layer for r in refits] == ["b.weight"] and refits[0].lam is not None
    assert refits[0].after < 1e-6 < refits[0].before


def test_refit_never_worse_on_held_out_batches(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4)).eval()
    x = torch.randn(96, 10)
    np.savez(tmp_path / "x.npz", x=x.numpy())
    data = load_data(str(tmp_path / "x.npz"), x[:1], batch_size=16)
    plan = graphprune.plan(graphprune.analyze(model, x[:2]), PlanOptions(ratio=0.6, round_to=1))
    refits = reconstruct(plan, graphprune.rewrite(plan), data)
    assert {r.layer for r in refits} == {"2.weight", "4.weight"}
    for r in refits:
        assert r.after <= r.before and (r.lam is None) == (r.after == r.before)


def test_shrink_with_data_refits_and_reports(tmp_path):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.randn(64, 3, 8, 8)
    np.savez(tmp_path / "x.npz", x=x.numpy())
    data = load_data(str(tmp_path / "x.npz"), x[:1], batch_size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, report = graphprune.shrink(model, x[:2], data=data, target_macs=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model is untouched
    assert report.reconstruction and all(r["after"] <= r["before"] for r in report.reconstruction)
    chosen = [a for a in report.allocation if a["chosen"]]
    assert len(chosen) == 1 and chosen[0]["loss"] == min(a["loss"] for a in report.allocation)
    # a budget is a ceiling: at --round-to 8 this model's widths step from 0.29 to just over 0.5 of its MACs
    assert report.budget["achieved"] <= 0.5 and (report.budget["met"] or report.budget["why"])
    _, off = graphprune.shrink(model, x[:2], data=data, target_macs=0.5, reconstruct=False)
    assert off.reconstruction == ()


def test_nothing_removed_nothing_refit(tmp_path):
    model = Twins(conv=False).eval()
    x = torch.randn(32, 6)
    np.savez(tmp_path / "x.npz", x=x.numpy())
    data = load_data(str(tmp_path / "x.npz"), x[:1], batch_size=8)
    pruned, report = graphprune.shrink(model, x[:2], ratio=0.0, data=data)
    assert report.reconstruction == ()
    with torch.no_grad():
        assert torch.equal(pruned(x), model(x))


def test_padding_rows_do_not_count():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    w = row_weights((2, 3), 6, {"attention_mask": mask})
    assert w.tolist() == [1, 1, 0, 1, 0, 0]
    assert row_weights((2, 3), 6, {}).tolist() == [1.0] * 6


class _Deep(nn.Module):
    """Convolutions with residual adds and a linear head: many layers lose inputs at once."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.convs = nn.ModuleList(nn.Sequential(nn.Conv2d(16, 24, 1), nn.ReLU(), nn.Conv2d(24, 16, 3, padding=1))
                                   for _ in range(3))
        self.head = nn.Sequential(nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 5))

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for block in self.convs:
            x = x + block(x)
        return self.head(x.mean((2, 3)))


def _deep_refit(tmp_path, monkeypatch, memory: int | None):
    rc = importlib.import_module("graphprune.rewrite.reconstruct")  # graphprune.rewrite is also a function

    if memory is not None:
        monkeypatch.setattr(rc, "MEMORY", memory)
    calls = {"nodes": 0}
    run_node = Cursor.run_node

    def counted(self, n):
        calls["nodes"] += 1
        return run_node(self, n)

    monkeypatch.setattr(Cursor, "run_node", counted)
    x = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    np.savez(tmp_path / "x.npz", x=x.numpy())
    data = load_data(str(tmp_path / "x.npz"), x[:1], batch_size=8)
    plan = graphprune.plan(graphprune.analyze(_Deep().eval(), x[:2]), PlanOptions(ratio=0.5, round_to=1))
    pruned = graphprune.rewrite(plan)
    refits = reconstruct(plan, pruned, data)
    sizes = [len(plan.graph.captured.module.graph.nodes), len(pruned.graph.nodes)]
    return refits, pruned, calls["nodes"], sizes


def test_refit_interprets_each_graph_once_per_batch(tmp_path, monkeypatch):
    refits, _, nodes, sizes = _deep_refit(tmp_path, monkeypatch, None)
    assert len(refits) >= 6  # every block's two convolutions and the head lost inputs
    assert nodes <= 5 * sum(sizes)  # 5 batches, each graph at most once: linear, not layers x batches


def test_refit_restarting_passes_gives_the_same_layers(tmp_path, monkeypatch):
    """MEMORY 0 keeps no paused pass: every layer runs both graphs again from the inputs, as the refit
    did before the passes were shared; a small MEMORY keeps some. The results are the same to the bit."""
    shared, a, few, _ = _deep_refit(tmp_path, monkeypatch, None)
    runs = {}
    for memory in (0, 60_000):
        again, b, runs[memory], _ = _deep_refit(tmp_path, monkeypatch, memory)
        assert shared == again and any(r.lam is not None for r in shared)
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert few < runs[60_000] < runs[0] and runs[0] > 2 * few

"""A representative subset of the torchvision coverage sweep (scripts/coverage.py runs all).

Rule checked: every family prunes at ratio 0.4 with zero configuration; the forward runs,
the output shape is unchanged, MACs fall to at most 0.45x, the saved file reloads with equal outputs, and channels made dead
before pruning leave outputs equal (dead-channel oracle; ConvNeXt's LayerNorm groups
are inexact by nature and are checked for shape only).
"""

from __future__ import annotations

import io

import pytest
import torch
import torchvision

import graphprune
from graphprune.check.oracle import dead_channel_check

MODELS = {
    "resnet18": 0.45,
    "mobilenet_v3_small": 0.45,
    "efficientnet_b0": 0.45,
    "regnet_y_400mf": 0.45,
    "densenet121": 0.45,
    "googlenet": 0.45,
    "squeezenet1_1": 0.45,
    "mnasnet0_5": 0.45,
    "resnext50_32x4d": 0.45,
    "shufflenet_v2_x0_5": 0.45,
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(**kwargs).eval()
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_family_prunes_with_zero_configuration(name: str) -> None:
    model = _model(name)
    x = torch.randn(1, 3, 224, 224)
    pruned, report = graphprune.shrink(model, x, 0.4)
    assert report.macs_ratio <= MODELS[name]
    assert report.params_after < report.params_before
    assert not report.unknown_ops
    y = pruned(x)
    assert y.shape == model(x).shape
    assert pruned(torch.randn(2, 3, 224, 224)).shape[0] == 2
    buf = io.BytesIO()
    torch.save(pruned, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(x), y)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "densenet121", "regnet_y_400mf"])
def test_family_dead_channel_oracle(name: str) -> None:
    model = _model(name)
    plan = graphprune.plan(graphprune.analyze(model, torch.randn(1, 3, 224, 224)), ratio=0.4)
    assert plan.removed.any()
    dead_channel_check(plan, atol=1e-4)


def test_convnext_layer_norm_groups_are_marked_inexact() -> None:
    model = _model("convnext_tiny")
    x = torch.randn(1, 3, 224, 224)
    plan = graphprune.plan(graphprune.analyze(model, x), ratio=0.4)
    assert any("inexact" in d.note for d in plan.decisions if d.removed)
    pruned = graphprune.rewrite(plan)
    assert pruned(x).shape == (1, 1000)

"""The pruned model trains like the original and takes the original's forward hooks.

Rules: in train() batch norm uses batch statistics and updates its running ones, dropout is active;
in eval() the captured inference behaviour; hooks registered by the original's submodule names fire
with (module, inputs, output) and may replace the output; state_dict keys are the original's;
re-estimating BatchNorm statistics on data changes only the running statistics.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

import graphprune
from graphprune.data import load_data
from graphprune.rewrite.recalibrate import recalibrate
from graphprune.rewrite.trainable import scopes


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.drop(self.features(x).mean((2, 3))))


def pruned_net():
    model = Net().eval()
    pruned, _ = graphprune.shrink(model, torch.randn(2, 3, 8, 8), ratio=0.5, round_to=1)
    return model, pruned


def test_train_mode_has_batch_statistics_and_dropout_eval_mode_does_not():
    model, pruned = pruned_net()
    assert not pruned.training and sorted(pruned.state_dict()) == sorted(model.state_dict())
    x = torch.randn(8, 3, 8, 8)
    pruned.train()
    mean = pruned.get_submodule("features.1").running_mean.clone()
    a, b = pruned(x), pruned(x)
    assert not torch.allclose(a, b)  # dropout
    assert not torch.equal(mean, pruned.get_submodule("features.1").running_mean)
    assert int(pruned.get_submodule("features.1").num_batches_tracked) == 2
    pruned.eval()
    torch.testing.assert_close(pruned(x), pruned(x))
    loss = pruned.train()(x).sum()
    loss.backward()
    assert all(p.grad is not None for p in pruned.parameters())


def test_forward_hooks_by_the_originals_names_fire_and_can_replace_outputs():
    _, pruned = pruned_net()
    assert {"features", "features.0", "features.1", "drop", "head"} <= set(scopes(pruned))
    seen = {}
    handle = pruned.get_submodule("features.0").register_forward_hook(
        lambda m, inputs, out: seen.update(inp=inputs[0].shape, out=out.shape))
    pruned(torch.randn(4, 3, 8, 8))
    assert seen == {"inp": (4, 3, 8, 8), "out": (4, pruned.get_submodule("features.0").weight.shape[0], 8, 8)}
    handle.remove()
    handle = pruned.get_submodule("head").register_forward_hook(lambda m, i, out: torch.zeros_like(out))
    assert pruned(torch.randn(2, 3, 8, 8)).abs().max() == 0
    handle.remove()
    buffer = io.BytesIO()
    torch.save(pruned, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False).train()
    assert not torch.allclose(again(torch.ones(4, 3, 8, 8)), again(torch.ones(4, 3, 8, 8)))


def test_recalibration_re_estimates_running_statistics_only(tmp_path):
    _, pruned = pruned_net()
    x = torch.randn(64, 3, 8, 8) * 3 + 1
    np.savez(tmp_path / "x.npz", x=x.numpy())
    data = load_data(str(tmp_path / "x.npz"), x[:1], batch_size=16)
    weights = {k: v.clone() for k, v in pruned.named_parameters()}
    recalibrate(pruned, data)
    assert not pruned.training
    assert all(torch.equal(weights[k], v) for k, v in pruned.named_parameters())
    with torch.no_grad():
        conv = pruned.get_submodule("features.0")
        pre = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(pruned.get_submodule("features.1").running_mean, pre.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pruned.get_submodule("features.1").running_var, pre.var((0, 2, 3)), rtol=2e-2, atol=2e-2)

"""Regressions found by the detection / optical-flow / video sweep (issue 11), one test each."""

from __future__ import annotations

import pytest
import torch
from conftest import check_prunes, randomize

import graphprune


class TwoImages(torch.nn.Module):
    """RAFT's encoder pattern: two images concatenated on the batch axis, encoded once, split back."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                                       torch.nn.Conv2d(32, 16, 3, padding=1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        f = self.enc(torch.cat([a, b], dim=0))
        fa, fb = torch.split(f, [a.shape[0], a.shape[0]], dim=0)
        return (fa * fb).sum(1)


def test_split_on_the_dynamic_batch_keeps_its_symbolic_sizes():
    model = randomize(TwoImages())
    a, b = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    pruned, report = graphprune.shrink(model, (a, b), 0.5)
    assert report.dynamic_batch and report.macs_after < report.macs_before
    with torch.no_grad():
        for n in (1, 3):
            assert pruned(a.repeat(n, 1, 1, 1), b.repeat(n, 1, 1, 1)).shape == (n, 16, 16)
    check_prunes(model, (a, b))


class FlatGain(torch.nn.Module):
    """`t.flatten()` with no dims given (Swin3D's relative position bias): export omits start and end."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.gain = torch.nn.Parameter(torch.rand(16, 1) + 0.5)
        self.out = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.conv(x)) * self.gain.flatten()[None, :, None, None])


def test_flatten_without_dims_rewrites():
    check_prunes(FlatGain(), torch.randn(2, 3, 8, 8))


class UnbindQKV(torch.nn.Module):
    """MViT's attention input: qkv(x).reshape(B, N, 3, heads, dim).transpose(1, 3).unbind(2), and
    its class token split off with tensor_split."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(16, 3 * 4 * 8)
        self.proj = torch.nn.Linear(4 * 8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 4, 8).transpose(1, 3).unbind(dim=2)  # [b, heads, n, dim]
        attn = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        cls, rest = torch.tensor_split(attn, (1,), dim=2)
        return self.proj(torch.cat([cls, rest], dim=2).transpose(1, 2).reshape(b, n, 32))


def test_unbind_and_tensor_split_pass_heads():
    results = check_prunes(UnbindQKV(), torch.randn(2, 5, 16))
    plan, _ = results[0.5]
    assert any(d.group.startswith("qkv") and d.removed for d in plan.decisions)


class RelPos(torch.nn.Module):
    """MViT's relative position term: einsum('bhnc,kc->bhnk', q, table), plus a contraction of two activations."""

    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Linear(16, 4 * 8)
        self.table = torch.nn.Parameter(torch.randn(6, 8))
        self.out = torch.nn.Linear(6 + 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).reshape(b, n, 4, 8).transpose(1, 2)
        rel = torch.einsum("bhnc,kc->bhnk", q, self.table)
        sim = torch.einsum("bhnc,bhmc->bhnm", q, q)
        return self.out(torch.cat([rel, sim], dim=-1)).sum(1)


def test_einsum_relates_letters():
    results = check_prunes(RelPos(), torch.randn(2, 5, 16))
    plan, _ = results[0.5]
    assert any(d.group.startswith("q.") and d.removed for d in plan.decisions)
    assert plan.graph.inexact.any()  # q . q contracts two activations


class StdConv(torch.nn.Conv2d):
    """Weight-standardised conv as timm writes it (NF-ResNet, NFNet, BiT): batch_norm of the weight
    reshaped to [1, C_out, C_in * k * k], with batch statistics, reshaped back with reshape_as."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.nn.functional.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                                           training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return torch.nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


class WSNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = StdConv(3, 32, 3, padding=1), StdConv(32, 32, 3, padding=1), StdConv(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_weight_standardisation_prunes_as_inexact():
    model, x = WSNet().eval(), torch.randn(1, 3, 8, 8)
    pruned, report = graphprune.shrink(model, x, 0.5, round_to=1)
    hidden = [d for d in report.decisions if d.group in ("a.weight[0]", "b.weight[0]")]
    assert all(d.removed and "inexact" in d.note for d in hidden), hidden
    assert report.macs_after < report.macs_before
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape
        pruned.train()  # the standardisation's batch statistics are not a train switch: it runs in both modes
        assert pruned(x).shape == model(x).shape
    _, kept = graphprune.shrink(model, x, 0.5, round_to=1, prune_hidden=False)
    assert kept.macs_after == kept.macs_before  # --no-prune-hidden keeps inexact widths


@pytest.mark.slow  # 15 s; WSNet above covers the mechanism
def test_timm_normalizer_free_resnet_prunes():
    timm = pytest.importorskip("timm")
    model, x = timm.create_model("nf_resnet26", num_classes=10).eval(), torch.randn(1, 3, 64, 64)
    pruned, report = graphprune.shrink(model, x, 0.4)
    assert report.macs_after < 0.7 * report.macs_before
    with torch.no_grad():
        assert pruned(x).shape == (1, 10)


def test_rules_register_the_overloads_they_mean():
    from graphprune.rules import RULES

    aten = torch.ops.aten
    assert {aten.add.Tensor, aten.mul.Scalar, aten.where.self, aten.pow.Tensor_Scalar} <= set(RULES)
    # list concatenation and repetition, nonzero, out= variants share those names but are not element-wise
    assert not {aten.add.t, aten.mul.left_t, aten.where.default, aten.add.out, aten.relu.out} & set(RULES)


class TypeAs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 4, 1)
        self.register_buffer("like", torch.zeros(5, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.conv(x)).type_as(self.like).float())


def test_type_as_reads_only_the_dtype_of_its_second_tensor():
    check_prunes(TypeAs(), torch.randn(2, 3, 8, 8))


def test_out_of_range_dims_raise_instead_of_wrapping():
    from graphprune.rules.registry import dim_index

    assert dim_index(-1, 4) == 3 and dim_index(0, 0) == 0 and dim_index(-1, 0) == 0
    for dim, rank in ((4, 4), (-5, 4), (1, 0)):
        with pytest.raises(IndexError, match="out of range"):
            dim_index(dim, rank)

"""One small model per op rule or pattern, each checked with the dead-channel oracle.

The oracle (graphprune.check.oracle.dead_channel_check) zeroes the parameters of the channels a
plan removes and asserts that physically removing them leaves every output equal. On top
of it every case asserts that something was removed, that the pruned model is smaller,
that output shapes are unchanged, and that a dynamically captured model accepts batch 3.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import call, check_prunes, count_params, kept, leaves, param_node, randomize, with_batch

import graphprune
from graphprune.check.oracle import dead_channel_check
from graphprune.importance import l2

aten = torch.ops.aten


def cbr(conv: nn.Module, norm: nn.Module) -> nn.Sequential:
    return nn.Sequential(conv, norm, nn.ReLU())


# --------------------------------------------------------------------------- models


def conv_chain_1d():
    return nn.Sequential(
        cbr(nn.Conv1d(3, 16, 3, padding=1), nn.BatchNorm1d(16)),
        cbr(nn.Conv1d(16, 16, 3, padding=1), nn.BatchNorm1d(16)),
        nn.Conv1d(16, 8, 1),
    )


def conv_chain_2d():
    return nn.Sequential(
        cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)),
        cbr(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24)),
        nn.Conv2d(24, 8, 1),
    )


def conv_chain_3d():
    return nn.Sequential(
        cbr(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8)),
        cbr(nn.Conv3d(8, 12, 3, padding=1), nn.BatchNorm3d(12)),
        nn.Conv3d(12, 4, 1),
    )


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.a = cbr(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.b = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = self.stem(x)
        return self.head(torch.relu(self.b(self.a(y)) + y))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.reduce = nn.Conv2d(16, 8, 1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        s = F.adaptive_avg_pool2d(y, 1)
        s = torch.sigmoid(self.expand(torch.relu(self.reduce(s))))
        return self.head(y * s)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.b = cbr(nn.Conv2d(3, 12, 1), nn.BatchNorm2d(12))
        self.head = nn.Conv2d(20, 8, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


class Chunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.a = nn.Conv2d(8, 8, 1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        a, b = torch.chunk(self.conv(x), 2, dim=1)
        return self.a(a) + self.b(b)


class SplitSizes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.a = nn.Conv2d(4, 8, 1)
        self.b = nn.Conv2d(12, 8, 1)

    def forward(self, x):
        a, b = torch.split(self.conv(x), [4, 12], dim=1)
        return self.a(a) * self.b(b)


class Slicing(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.a = nn.Conv2d(6, 8, 1)
        self.b = nn.Conv2d(10, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.a(y[:, :6]) + self.b(y[:, 6:])


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x):
        y = F.max_pool2d(self.conv(x), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(y, 1))))


class ViewLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))


def grouped_wide():
    return nn.Sequential(
        cbr(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)),
        cbr(nn.Conv2d(32, 32, 3, padding=1, groups=2), nn.BatchNorm2d(32)),
        nn.Conv2d(32, 8, 1),
    )


def grouped_many():
    return nn.Sequential(
        cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)),
        cbr(nn.Conv2d(16, 16, 3, padding=1, groups=8), nn.BatchNorm2d(16)),
        nn.Conv2d(16, 8, 1),
    )


def depthwise():
    return nn.Sequential(
        cbr(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16)),
        cbr(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)),
        cbr(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16)),
        nn.Conv2d(16, 8, 1),
    )


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int = 2):
        super().__init__()
        self.groups = groups
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.gconv = cbr(nn.Conv2d(16, 16, 1, groups=groups), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        y = y.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.head(self.gconv(y))


def conv_transpose(groups: int):
    return nn.Sequential(
        cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)),
        cbr(nn.ConvTranspose2d(16, 16, 2, stride=2, groups=groups), nn.BatchNorm2d(16)),
        nn.Conv2d(16, 8, 1),
    )


def mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))


class EmbeddingLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, ids):
        return self.fc2(torch.relu(self.fc1(self.emb(ids))))


def prelu(num: int):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.PReLU(num),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.PReLU(num),
        nn.Conv2d(16, 8, 1),
    )


def group_norm():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(), nn.Conv2d(16, 8, 1))


def instance_norm():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.InstanceNorm2d(16, affine=True), nn.ReLU(), nn.Conv2d(16, 8, 1))


class Pools(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.c2 = cbr(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.c3 = cbr(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.c4 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = F.max_pool2d(self.c1(x), 2)
        y = F.avg_pool2d(self.c2(y), 2)
        y = F.adaptive_avg_pool2d(self.c3(y), 2)
        y = F.adaptive_max_pool2d(self.c4(y), 1)
        return self.fc(y.flatten(1))


class Upsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.c2 = cbr(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = F.interpolate(self.c1(x), scale_factor=2, mode="nearest")
        y = F.interpolate(self.c2(y), size=(12, 12), mode="bilinear", align_corners=False)
        return self.head(y)


class Elementwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 1)
        self.c3 = nn.Conv2d(16, 16, 1)
        self.c4 = nn.Conv2d(16, 16, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = F.relu6(self.c1(x))
        y = F.hardtanh(self.c2(y), -0.5, 0.5)
        y = F.gelu(self.c3(y))
        y = F.silu(self.c4(y)) * 0.5
        return self.head(y)


class CatInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(19, 8, 1)

    def forward(self, x):
        return self.head(torch.cat([x, self.conv(x)], dim=1))


class MeanPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


class Select(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y) * y[:, 0].unsqueeze(1)


class DictIO(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = cbr(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(16, 4, 1)
        self.extra = nn.Linear(6, 16)
        self.out = nn.Linear(16, 3)
        self.score = nn.Linear(16, 1)

    def forward(self, image, extra):
        feat = self.image(image)
        m = torch.relu(self.extra(extra))
        pooled = feat.amax(dim=(2, 3)) + m
        return {"map": self.head(feat), "pair": (self.out(pooled), self.score(m))}


class ChannelsLastLayerNorm(nn.Module):
    """ConvNeXt-like: conv, permute to channels-last, LayerNorm, MLP, permute back."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = self.dw(self.stem(x)).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return self.head(y)


def image(n=2, c=3, s=8):
    return torch.randn(n, c, s, s)


CASES = {
    "conv_bn_relu_1d": (conv_chain_1d, lambda: torch.randn(2, 3, 16)),
    "conv_bn_relu_2d": (conv_chain_2d, lambda: image(1)),
    "conv_bn_relu_3d": (conv_chain_3d, lambda: torch.randn(2, 3, 4, 4, 4)),
    "residual_add": (Residual, image),
    "squeeze_excite": (SqueezeExcite, image),
    "concat": (Concat, image),
    "chunk": (Chunk, image),
    "split_sizes": (SplitSizes, image),
    "slicing": (Slicing, image),
    "flatten_linear": (FlattenLinear, image),
    "view_size0_linear": (ViewLinear, image),
    "grouped_conv_wide": (grouped_wide, image),
    "grouped_conv_many": (grouped_many, image),
    "depthwise": (depthwise, image),
    "channel_shuffle": (ChannelShuffle, image),
    "conv_transpose_g1": (lambda: conv_transpose(1), image),
    "conv_transpose_g2": (lambda: conv_transpose(2), image),
    "linear_mlp": (mlp, lambda: torch.randn(2, 16)),
    "embedding_linear": (EmbeddingLinear, lambda: torch.randint(0, 50, (2, 6))),
    "prelu_per_channel": (lambda: prelu(16), image),
    "prelu_single": (lambda: prelu(1), image),
    "group_norm": (group_norm, image),
    "instance_norm": (instance_norm, image),
    "pooling": (Pools, lambda: image(2, 3, 16)),
    "interpolate": (Upsample, lambda: image(2, 3, 6)),
    "elementwise": (Elementwise, image),
    "cat_with_input": (CatInput, image),
    "mean_global_pool": (MeanPool, image),
    "select_channel": (Select, image),
    "dict_io": (DictIO, lambda: {"image": image(), "extra": torch.randn(2, 6)}),
}


def build(name: str):
    factory, example = CASES[name]
    model = randomize(factory())
    tweak = TWEAKS.get(name)
    if tweak:
        with torch.no_grad():
            tweak(model)
    return model, example()


def _weak_channel_zero(model: Select) -> None:
    """Make channel 0 the lowest-scoring one, so only the select rule can keep it."""
    model.conv[0].weight[0] *= 1e-3
    model.conv[0].bias[0] *= 1e-3
    model.conv[1].weight[0] = 1e-3
    model.conv[1].bias[0] = 1e-3
    model.head.weight[:, 0] *= 1e-3


TWEAKS = {"select_channel": _weak_channel_zero}
_RESULTS: dict = {}


def oracle(name: str) -> dict:
    """{ratio: (plan, pruned)} for a case at ratios 0.3 and 0.5, computed once per process."""
    if name not in _RESULTS:
        model, example = build(name)
        _RESULTS[name] = check_prunes(model, example, (0.3, 0.5))
    return _RESULTS[name]


def at_half(name: str):
    return oracle(name)[0.5]


# --------------------------------------------------------------------------- oracle per rule


@pytest.mark.parametrize("name", sorted(CASES))
def test_dead_channel_oracle(name):
    """Rule: at ratios 0.3 and 0.5, pruning channels whose parameters are zeroed leaves every
    output equal; the pruned model is smaller, keeps its output shapes, accepts batch 3, and
    every op of these models has a rule (nothing is frozen as unknown)."""
    results = oracle(name)
    for plan, _ in results.values():
        assert plan.graph.unknown == ()
        assert plan.graph.captured.dynamic_batch
    assert results[0.5][0].removed.sum() >= results[0.3][0].removed.sum()


# --------------------------------------------------------------------------- rule specifics


def _nodes(module, target):
    return [n for n in module.graph.nodes if n.target == target]


def test_grouped_conv_many_groups_removes_whole_groups():
    """Rule: with groups >= channels per group, whole groups go: the grouped conv keeps
    2 channels per group and its `groups` argument shrinks to C'/2."""
    plan, pruned = at_half("grouped_conv_many")
    kept_out = kept(plan, "1.0.weight", 0)
    assert len(kept_out) < 16
    assert all(c % 2 == 0 and c + 1 in kept_out for c in kept_out[::2])
    assert kept(plan, "0.0.weight", 0) == kept_out  # input group gi feeds output group gi
    (conv,) = [n for n in _nodes(pruned, aten.conv2d.default) if len(n.args) > 6 and n.args[6] != 1]
    assert conv.args[6] == len(kept_out) // 2
    assert pruned.get_parameter("1.0.weight").shape[1] == 2


def test_grouped_conv_few_groups_removes_offsets():
    """Rule: with few wide groups, an input offset is removed in every group at once and
    `groups` stays 2; the grouped conv's output channels are pruned per offset too."""
    plan, pruned = at_half("grouped_conv_wide")
    ins = kept(plan, "0.0.weight", 0)  # input channels of the grouped conv
    assert len(ins) < 32
    first, second = [c for c in ins if c < 16], [c - 16 for c in ins if c >= 16]
    assert first == second
    (conv,) = [n for n in _nodes(pruned, aten.conv2d.default) if len(n.args) > 6 and n.args[6] != 1]
    assert conv.args[6] == 2
    w = pruned.get_parameter("1.0.weight")
    assert w.shape[1] == len(ins) // 2
    outs = kept(plan, "1.0.weight", 0)
    assert len(outs) < 32 and [c for c in outs if c < 16] == [c - 16 for c in outs if c >= 16]


def test_depthwise_groups_follow_channels():
    """Rule: a depthwise conv keeps groups == channels after pruning."""
    plan, pruned = at_half("depthwise")
    n = len(kept(plan, "1.0.weight", 0))
    assert n < 16
    (conv,) = [x for x in _nodes(pruned, aten.conv2d.default) if len(x.args) > 6 and x.args[6] != 1]
    assert conv.args[6] == n
    assert pruned.get_parameter("1.0.weight").shape == (n, 1, 3, 3)


def test_group_norm_removes_whole_groups():
    """Rule: GroupNorm channels go a whole group (C/G = 4 channels) at a time and
    num_groups in the pruned graph drops to C'/4."""
    plan, pruned = at_half("group_norm")
    kept_ch = kept(plan, "1.weight", 0)
    assert len(kept_ch) % 4 == 0 and len(kept_ch) < 16
    assert sorted({c // 4 for c in kept_ch}) == sorted(c // 4 for c in kept_ch[::4])
    (gn,) = _nodes(pruned, aten.group_norm.default)
    assert gn.args[1] == len(kept_ch) // 4 < 4


def test_select_keeps_the_selected_channel():
    """Rule: x[:, 0] on a channel dim freezes channel 0, even when it scores lowest."""
    plan, pruned = at_half("select_channel")
    conv_out = kept(plan, "conv.0.weight", 0)
    assert 0 in conv_out and len(conv_out) < 16
    assert kept(plan, "conv.1.weight", 0) == conv_out
    assert pruned(image(3)).shape == (3, 8, 8, 8)


def test_cat_with_model_input_keeps_the_input_part():
    """Rule: channels of a cat that come from the model input are frozen; the conv that reads
    the cat keeps its first 3 input columns and loses only conv-produced ones."""
    plan, pruned = at_half("cat_with_input")
    cols = kept(plan, "head.weight", 1)
    assert cols[:3] == [0, 1, 2]
    assert len(cols) < 19
    assert pruned.get_parameter("head.weight").shape[1] == len(cols)


def test_concat_prunes_both_branches():
    """Rule: cat offsets map each branch's channels to the right input columns of the
    conv after the cat, so both branches shrink."""
    plan, pruned = at_half("concat")
    a, b = kept(plan, "a.0.weight", 0), kept(plan, "b.0.weight", 0)
    assert len(a) < 8 and len(b) < 12
    assert kept(plan, "head.weight", 1) == a + [8 + c for c in b]


def test_chunk_split_into_uneven_sizes():
    """Rule: chunk pieces may shrink unevenly; each piece keeps the channels of its own conv."""
    plan, pruned = at_half("chunk")
    whole = kept(plan, "conv.0.weight", 0)
    assert kept(plan, "a.weight", 1) == [c for c in whole if c < 8]
    assert kept(plan, "b.weight", 1) == [c - 8 for c in whole if c >= 8]


def test_flatten_into_linear_removes_blocks_of_features():
    """Rule: flatten(N, C, H, W) -> Linear: one channel is a block of H*W = 16 features."""
    plan, _ = at_half("flatten_linear")
    chans = kept(plan, "conv.0.weight", 0)
    feats = kept(plan, "fc1.weight", 1)
    assert feats == [c * 16 + k for c in chans for k in range(16)]


def test_channel_shuffle_keeps_groups_balanced():
    """Rule: view-transpose-view shuffle with 2 groups relates channel j of the source to
    j and j + 8 before the shuffle; the grouped conv after it keeps 2 equal groups."""
    plan, pruned = at_half("channel_shuffle")
    src = kept(plan, "conv.0.weight", 0)
    assert len(src) < 16
    low = [c for c in src if c < 8]
    assert [c - 8 for c in src if c >= 8] == low
    dst = kept(plan, "gconv.0.weight", 1)
    assert pruned.get_parameter("gconv.0.weight").shape[1] == len(dst)


def test_prelu_weights_follow_channels():
    """Rule: a per-channel PReLU weight is sliced with its channels; a single one is kept."""
    _, pruned = at_half("prelu_per_channel")
    assert pruned.get_parameter("2.weight").numel() == pruned.get_parameter("0.weight").shape[0] < 16
    _, pruned = at_half("prelu_single")
    assert pruned.get_parameter("2.weight").numel() == 1


def test_embedding_dim_is_pruned_vocabulary_is_not():
    """Rule: the embedding dim of nn.Embedding is prunable; the vocabulary dim is frozen."""
    _, pruned = at_half("embedding_linear")
    w = pruned.get_parameter("emb.weight")
    assert w.shape[0] == 50 and w.shape[1] < 16
    assert pruned.get_parameter("fc1.weight").shape[1] == w.shape[1]


def test_dict_input_and_nested_outputs():
    """Rule: keyword inputs and dict/tuple outputs keep their structure after pruning."""
    _, pruned = at_half("dict_io")
    out = pruned(**with_batch(CASES["dict_io"][1](), 3))
    assert set(out) == {"map", "pair"}
    assert isinstance(out["pair"], tuple) and len(out["pair"]) == 2
    assert out["map"].shape == (3, 4, 8, 8) and out["pair"][0].shape == (3, 3)


def test_layer_norm_over_channels_is_marked_inexact():
    """Rule: pruning the features a LayerNorm normalises changes its statistics, so the
    group is pruned but its decision says "inexact"; the pruned model still runs with the
    original output shape."""
    model = randomize(ChannelsLastLayerNorm())
    example = image(2, 3, 8)
    graph = graphprune.analyze(model, example)
    assert any(g.inexact for g in graph.groups)
    plan = graphprune.plan(graph, ratio=0.5, round_to=1)
    norm_group = [d for d, g in zip(plan.decisions, graph.groups, strict=True) if g.inexact]
    assert norm_group and all(d.removed > 0 and "inexact" in d.note for d in norm_group)
    hidden = [d for d in plan.decisions if d.group == "fc1.weight[0]"]
    assert hidden and hidden[0].removed > 0 and "inexact" not in hidden[0].note  # the MLP width is exact
    pruned = graphprune.rewrite(plan)
    assert pruned.get_parameter("norm.weight").shape[0] < 16
    assert pruned(example).shape == model(example).shape
    assert pruned(image(3, 3, 8)).shape == (3, 4, 8, 8)


# --------------------------------------------------------------------------- ratio 0


@pytest.mark.parametrize(
    "name", ["conv_bn_relu_2d", "residual_add", "grouped_conv_many", "channel_shuffle", "embedding_linear", "dict_io", "group_norm"]
)
def test_ratio_zero_changes_nothing(name):
    """Rule: ratio 0 removes nothing: same parameter count, outputs equal the original."""
    model, example = build(name)
    pruned, report = graphprune.shrink(model, example, ratio=0.0)
    assert report.params_after == report.params_before == count_params(pruned) == count_params(model)
    assert all(d.removed == 0 for d in report.decisions)
    torch.testing.assert_close(call(pruned, example), call(model, example))


# --------------------------------------------------------------------------- the user's model


def test_shrink_does_not_touch_the_users_model():
    """Rule: shrink never mutates the (eval-mode) model it is given, and the pruned model
    shares no storage with it (editing one never changes the other)."""
    model, example = build("residual_add")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, _ = graphprune.shrink(model, example, ratio=0.5)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    theirs = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    ours = {t.untyped_storage().data_ptr() for t in pruned.state_dict().values()}
    assert not theirs & ours
    with torch.no_grad():
        for p in pruned.parameters():
            p.zero_()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_shrink_does_not_touch_a_model_in_train_mode():
    """Rule: shrink never mutates the model it is given, in train mode either (BatchNorm
    running statistics must not move), and leaves it in train mode."""
    model, example = build("residual_add")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graphprune.shrink(model, example, ratio=0.5)
    assert model.training
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert changed == []


# --------------------------------------------------------------------------- planner constraints


def test_round_to_makes_widths_multiples():
    """Rule: with round_to=8 every pruned group without a "cannot" note keeps a width that
    is a multiple of 8 (of its reference space)."""
    model = randomize(
        nn.Sequential(
            cbr(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)),
            cbr(nn.Conv2d(32, 24, 3, padding=1), nn.BatchNorm2d(24)),
            nn.Conv2d(24, 8, 1),
        )
    )
    plan = graphprune.plan(graphprune.analyze(model, image()), ratio=0.4, round_to=8)
    pruned_groups = [d for d in plan.decisions if d.removed > 0 and "cannot" not in d.note]
    assert len(pruned_groups) == 2
    assert all(d.width_after % 8 == 0 and d.width_after < d.width_before for d in pruned_groups)
    dead_channel_check(plan)


def test_every_group_keeps_a_channel_at_high_ratio():
    """Rule: even at ratio 0.95 every group keeps at least one element."""
    model, example = build("concat")
    plan = graphprune.plan(graphprune.analyze(model, example), ratio=0.95, round_to=1)
    assert all(d.width_after >= 1 for d in plan.decisions)
    assert any(d.removed for d in plan.decisions)
    pruned = dead_channel_check(plan)
    assert pruned(example).shape == (2, 8, 8, 8)


def test_global_ranking_budget_and_cap():
    """Rule: global ranking removes floor(ratio * all candidates) in total, at most
    max_group_ratio of any one group's candidates, and the oracle still holds."""
    model, example = build("pooling")
    with torch.no_grad():  # 14 of c2's 16 channels far below their group's mean: the cap must bind
        for t in (
            model.c2[0].weight,
            model.c2[0].bias,
            model.c2[1].weight,
            model.c2[1].bias,
            model.c2[1].running_mean,
            model.c2[1].running_var,
        ):
            t[2:] *= 1e-3
        model.c3[0].weight[:, 2:] *= 1e-3
    graph = graphprune.analyze(model, example)
    total = sum(d.candidates for d in graphprune.plan(graph, ratio=0.0, round_to=1).decisions)
    plan = graphprune.plan(graph, ratio=0.5, global_ranking=True, max_group_ratio=0.6, round_to=1)
    removed = sum(d.removed for d in plan.decisions)
    assert abs(removed - 0.5 * total) <= 1
    assert all(d.removed <= int(0.6 * d.candidates) for d in plan.decisions)
    assert any(d.removed == int(0.6 * d.candidates) > 0 for d in plan.decisions)
    dead_channel_check(plan)


# --------------------------------------------------------------------------- save / load


def test_pruned_model_saves_and_loads(tmp_path):
    """Rule: torch.save of a pruned model loads back (weights_only=False) with equal outputs."""
    model, example = build("squeeze_excite")
    pruned, _ = graphprune.shrink(model, example, ratio=0.5)
    torch.save(pruned, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    x = image(3)
    torch.testing.assert_close(loaded(x), pruned(x))
    assert leaves(loaded(x))[0].shape == (3, 8, 8, 8)


# --------------------------------------------------------------------------- known graphprune bugs


class SigmoidSum(nn.Module):
    """A parameter-free reduction over channels of a value that is not 0 when the channel is dead."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y) * torch.sigmoid(y).sum(dim=1, keepdim=True)


class ActivationMatmul(nn.Module):
    """Attention-like scores: a contraction of two activations over the prunable feature dim."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 16)
        self.k = nn.Linear(8, 16)
        self.out = nn.Linear(5, 4)

    def forward(self, x):
        return self.out(torch.sigmoid(self.q(x)) @ torch.sigmoid(self.k(x)).transpose(1, 2))


@pytest.mark.parametrize("factory, example", [(SigmoidSum, lambda: image()),
                                              (ActivationMatmul, lambda: torch.randn(2, 5, 8))],
                         ids=["sum_after_sigmoid", "matmul_of_activations"])
def test_parameter_free_contraction_is_exact_or_flagged(factory, example):
    """Rule: a group pruned without an "inexact" note passes the dead-channel oracle; a
    parameter-free sum/contraction over channels whose dead value is not 0 must be frozen
    or marked inexact."""
    model, x = factory().eval(), example()
    plan = graphprune.plan(graphprune.analyze(model, x), ratio=0.5, round_to=1)
    flagged = any("inexact" in d.note for d in plan.decisions if d.removed)
    pruned = graphprune.rewrite(plan) if flagged else dead_channel_check(plan)  # the oracle raises on a change
    assert pruned(x).shape == model(x).shape


def test_a_dead_channel_is_removed_first():
    """Rule: a channel whose parameters are all zero (conv row, bias, BN weight and bias, next
    conv's column) contributes nothing and has the lowest L2 score, so it is removed first."""
    model, example = build("conv_bn_relu_2d")
    with torch.no_grad():
        for t in (model[0][0].weight, model[0][0].bias, model[0][1].weight, model[0][1].bias):
            t[5] = 0
        model[1][0].weight[:, 5] = 0
        model[0][1].running_var[5] = 1.5
    graph = graphprune.analyze(model, example)
    node = param_node(graph, "0.0.weight")
    channel = graph.labels[graph.spaces.ids(((node, None), 0))][5]
    assert l2(graph)[channel] == 0
    assert kept(graphprune.plan(graph, ratio=0.05, round_to=1), "0.0.weight", 0) == [c for c in range(16) if c != 5]


class NamedMeta(nn.Module):
    def __init__(self):
        super().__init__()
        self.meta = nn.Linear(4, 8)  # a common name; it clashes with fx.GraphModule.meta
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.relu(self.meta(x)))


def test_capture_failure_is_a_typed_error():
    """Rule: every capture failure is a GraphPruneError (TraceError) with one clear line, never a
    raw exception; a submodule named `meta` either works or is refused that way."""
    try:
        graph = graphprune.analyze(NamedMeta().eval(), torch.randn(2, 4))
    except graphprune.GraphPruneError as exc:
        assert "meta" in str(exc)
    else:
        assert graph.groups


class ShuffleIntoConv(nn.Module):
    """Two branches concatenated, shuffled (2 groups of 8), then a plain conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        b, c, h, w = y.shape
        y = y.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        return self.head(y)


def test_channel_shuffle_is_a_permutation_rewritten_as_one_gather():
    """Rule: a view-transpose-view shuffle is the permutation out[(c mod n) g + c div n] = x[c]:
    the two halves are pruned independently (uneven kept sets are fine) and the pruned shuffle
    is one index_select; dead channels removed leave outputs equal."""
    torch.manual_seed(0)
    model = ShuffleIntoConv().eval()
    with torch.no_grad():
        model.a.weight[:6] *= 1e-3  # branch a's channels are the weak ones: uneven removal
    x = torch.randn(2, 3, 8, 8)
    plan = graphprune.plan(graphprune.analyze(model, x), ratio=0.5, round_to=1)
    pruned = dead_channel_check(plan)
    kept_a = pruned.get_parameter("a.weight").shape[0]
    kept_b = pruned.get_parameter("b.weight").shape[0]
    assert kept_a + kept_b == pruned.get_parameter("head.weight").shape[1] < 16
    assert kept_a != kept_b
    targets = [n.target for n in pruned.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.index_select.default in targets
    assert torch.ops.aten.transpose.int not in targets
    assert pruned(torch.randn(3, 3, 8, 8)).shape == (3, 4, 8, 8)


class ChannelsLastPad(nn.Module):
    """Swin-style: a channels-last tensor padded on H and W with (0, 0) on C, then a Linear,
    and padded on C itself before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.mid = nn.Linear(16, 16)
        self.head = nn.Linear(18, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(self.inp(x), (0, 0, 0, 1, 0, 1))  # [B, H+1, W+1, 16]: channels untouched
        y = torch.relu(self.mid(y))
        return self.head(F.pad(y, (1, 1))).mean((1, 2))  # C padded: 16 -> 18


def test_pad_passes_dims_padded_by_zero_and_freezes_padded_ones():
    """Rule: a dim whose pad pair is (0, 0) passes its channels; a padded dim is frozen, so
    the head's padded input columns stay while the channels feeding them may go."""
    results = check_prunes(ChannelsLastPad(), torch.randn(2, 5, 5, 6), (0.5,))
    plan, pruned = results[0.5]
    assert len(kept(plan, "inp.weight", 0)) < 16  # through the (0, 0) pad
    assert pruned.get_parameter("head.weight").shape[1] == 18  # the C-padded input is frozen


class CosineFeatures(nn.Module):
    """Swin-v2-style cosine similarity: features L2-normalised (linalg_vector_norm, expand_as)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 16)
        self.b = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(y / torch.linalg.vector_norm(y, dim=-1, keepdim=True).expand_as(y))


def test_vector_norm_over_features_is_prunable_and_inexact():
    """Rule: a vector norm over a feature dim lets those features go but marks them inexact
    (the norm changes unless they are zero); expand_as follows its target's dims."""
    model = randomize(CosineFeatures())
    example = torch.randn(2, 5, 6)
    graph = graphprune.analyze(model, example)
    assert not graph.unknown
    plan = graphprune.plan(graph, ratio=0.5, round_to=1)
    (decision,) = [d for d in plan.decisions if d.group == "a.weight[0]"]
    assert decision.removed > 0 and "inexact" in decision.note and "norm" in decision.note
    pruned = graphprune.rewrite(plan)
    assert pruned.get_parameter("b.weight").shape[1] == 16 - decision.removed
    assert pruned(example).shape == model(example).shape

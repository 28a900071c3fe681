"""Random tiny architectures for fuzzing graphprune, and the property every one must satisfy.

A *spec* is plain JSON: the input (batch, channels, size), a seed for the weights, a list of
blocks and a head. `architectures()` draws specs with Hypothesis and tracks the channel count c
through the blocks, so every draw is valid by construction: group counts divide both widths,
heads divide the attention width, chunks see an even c, no tensor is wider than MAX_CHANNELS.
Spatial size never changes. `build(spec)` turns a spec into `(module in eval mode, example)`;
the same spec always gives the same weights and input.

    block     module                                                      channels
    conv      Conv2d(c, out, k in {1, 3}, padding k//2, groups | c, out)  c -> out
    convT     ConvTranspose2d(c, out, k, stride 1, padding k//2, groups)  c -> out
    dwconv    Conv2d(c, c*mult, 3, padding 1, groups=c)                   c -> c*mult
    norm      bn | gn(groups | c) | in (affine) | ln over c via permute   c -> c
    act       relu | gelu | silu | hardswish | prelu (1 or c params)      c -> c
    se        x * sigmoid(conv1x1(relu(conv1x1(avgpool(x)))))            c -> c
    shuffle   view(b, 2, c/2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
    unknown   fft(x, dim=1).real | cumprod(x, dim=1): no graphprune rule  c -> c
    residual  x + body(x); a 1x1 conv closes a body that changed c        c -> c
    concat    cat([a(x), b(x)], 1); b = [] is the identity (dense block)  c -> a + b
    split     chunk(2) or split([s, c-s]); body on one piece; cat back    c -> c - p + body(p)
    attn      tokens x.flatten(2).mT; q, k, v = Linear(c, heads*dim); SDPA over heads;
              Linear(heads*dim, c); image layout again; optionally + x    c -> c

The head is flatten -> Linear(c*h*w, OUTPUTS), or global average pool -> Linear(c, OUTPUTS).
The property, `check`, is stated in its docstring (graphprune's side lives in fuzz_property).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

MAX_CHANNELS = 24
OUTPUTS = 5
ONNX_PERCENT = 4  # share (%) of drawn cases that also export the pruned model to ONNX
NORMS = ("bn", "gn", "in", "ln")
ACTS = ("relu", "gelu", "silu", "hardswish", "prelu")
UNKNOWN_OPS = ("fft", "cumprod")


# -- the spec space -------------------------------------------------------------------------------
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _split_sizes(block: dict, c: int) -> list[int]:
    return [c // 2, c // 2] if block["mode"] == "chunk" else [block["first"], c - block["first"]]


def _split_width(block: dict, c: int) -> int:
    sizes = _split_sizes(block, c)
    return c - sizes[block["which"]] + width(block["body"], sizes[block["which"]])


WIDTH: dict[str, Callable[[dict, int], int]] = {  # blocks not listed keep c
    "conv": lambda b, c: b["out"],
    "convT": lambda b, c: b["out"],
    "dwconv": lambda b, c: c * b["mult"],
    "concat": lambda b, c: width(b["a"], c) + width(b["b"], c),
    "split": _split_width,
}


def width(blocks: list, c: int) -> int:
    """The channel count after `blocks`, applied to c channels."""
    for block in blocks:
        c = WIDTH.get(block["kind"], lambda b, c: c)(block, c)
    return c


def _conv(draw, c: int, hi: int, kind: str = "conv") -> dict:
    out = draw(st.integers(min(2, hi), hi))
    groups = [d for d in _divisors(c) if out % d == 0]
    return {"kind": kind, "out": out, "k": draw(st.sampled_from([1, 3])), "groups": draw(st.sampled_from(groups))}


def _simple(draw, c: int, hi: int = MAX_CHANNELS) -> dict:
    """A block without sub-blocks for c channels, at most hi wide."""
    kind = draw(st.sampled_from(["conv", "act", "norm", "convT", "dwconv", "se", "unknown", "shuffle"]))
    if kind == "shuffle" and c % 2:
        kind = "act"
    if kind in ("conv", "convT"):
        return _conv(draw, c, hi, kind)
    if kind == "dwconv":
        return {"kind": kind, "mult": draw(st.sampled_from([1, 2] if 2 * c <= hi else [1]))}
    if kind == "norm":
        norm = draw(st.sampled_from(NORMS))
        return {"kind": kind, "type": norm, "groups": draw(st.sampled_from(_divisors(c))) if norm == "gn" else 1}
    if kind == "act":
        act = draw(st.sampled_from(ACTS))
        return {"kind": kind, "type": act, "per_channel": act == "prelu" and draw(st.booleans())}
    if kind == "se":
        return {"kind": kind, "hidden": draw(st.integers(1, 8))}
    if kind == "unknown":
        return {"kind": kind, "op": draw(st.sampled_from(UNKNOWN_OPS))}
    return {"kind": kind}


def _body(draw, c: int, hi: int, most: int = 2) -> list:
    """1 to `most` simple blocks starting at c channels, never wider than hi."""
    blocks: list = []
    for _ in range(draw(st.integers(1, most))):
        blocks.append(_simple(draw, width(blocks, c), hi))
    return blocks


def _compound(draw, c: int) -> dict:
    """A block with sub-blocks (nesting depth 1) for c channels."""
    kind = draw(st.sampled_from(["residual", "concat", "split", "attn"]))
    if kind == "residual":
        body = _body(draw, c, MAX_CHANNELS)
        if width(body, c) != c:
            body.append({"kind": "conv", "out": c, "k": 1, "groups": 1})
        return {"kind": kind, "body": body}
    if kind == "concat":
        half = MAX_CHANNELS // 2
        a = [_conv(draw, c, half)]
        a += _body(draw, width(a, c), half, most=1) if draw(st.booleans()) else []
        identity = c + width(a, c) <= MAX_CHANNELS and draw(st.booleans())
        return {"kind": kind, "a": a, "b": [] if identity else [_conv(draw, c, half)]}
    if kind == "attn":
        return {"kind": kind, "heads": draw(st.sampled_from([1, 2, 4])), "dim": draw(st.sampled_from([2, 4, 6])),
                "residual": draw(st.booleans())}
    mode = "chunk" if c % 2 == 0 and draw(st.booleans()) else "split"
    block = {"kind": kind, "mode": mode, "first": draw(st.integers(1, c - 1)) if mode == "split" else 0,
             "which": draw(st.sampled_from([0, 1]))}
    sizes = _split_sizes(block, c)
    block["body"] = _body(draw, sizes[block["which"]], MAX_CHANNELS - sizes[1 - block["which"]])
    return block


@st.composite
def architectures(draw) -> dict:
    """A random spec: input, weight seed, 1 to 5 blocks (one in three compound), head."""
    c = draw(st.integers(4, MAX_CHANNELS))
    spec = {"batch": draw(st.sampled_from([1, 2])), "channels": c, "size": draw(st.integers(6, 12)),
            "seed": draw(st.integers(0, 2**16)), "blocks": [], "outputs": OUTPUTS}
    for _ in range(draw(st.integers(1, 5))):
        block = _compound(draw, c) if draw(st.integers(0, 2)) == 2 else _simple(draw, c)
        spec["blocks"].append(block)
        c = width([block], c)
    spec["head"] = draw(st.sampled_from(["pool", "flatten"]))
    return spec


@st.composite
def cases(draw) -> tuple[dict, float, bool]:
    """(spec, ratio in [0, 0.9] in steps of 0.01, also export to ONNX?); each part shrinks to its simple end."""
    spec = draw(architectures())
    ratio = draw(st.integers(0, 90)) / 100
    onnx = draw(st.integers(0, 99)) >= 100 - ONNX_PERCENT
    return spec, ratio, onnx


# -- building modules -----------------------------------------------------------------------------
class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, as ConvNeXt does it."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class Concat(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Split(nn.Module):
    """Split the channels in two, run `body` on piece `which`, concatenate in the old order."""

    def __init__(self, chunk: bool, sizes: list[int], which: int, body: nn.Module):
        super().__init__()
        self.chunk, self.sizes, self.which, self.body = chunk, sizes, which, body

    def forward(self, x):
        pieces = list(x.chunk(2, dim=1) if self.chunk else torch.split(x, self.sizes, dim=1))
        pieces[self.which] = self.body(pieces[self.which])
        return torch.cat(pieces, dim=1)


class Shuffle(nn.Module):
    """ShuffleNet's channel shuffle with 2 groups: channel g*(c/2) + i moves to 2*i + g."""

    def forward(self, x):
        b, c, h, w = x.shape
        return x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce, self.expand = nn.Conv2d(c, hidden, 1), nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))


class Attention(nn.Module):
    """Multi-head self-attention over the h*w positions of an image."""

    def __init__(self, c: int, heads: int, dim: int, residual: bool):
        super().__init__()
        self.heads, self.dim, self.residual = heads, dim, residual
        self.q, self.k, self.v = (nn.Linear(c, heads * dim) for _ in range(3))
        self.proj = nn.Linear(heads * dim, c)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)

        def split(t):
            return t.view(b, h * w, self.heads, self.dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(tokens)), split(self.k(tokens)), split(self.v(tokens)))
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, self.heads * self.dim))
        out = out.transpose(1, 2).reshape(b, c, h, w)
        return x + out if self.residual else out


class Unknown(nn.Module):
    """An op graphprune has no rule for, over the channel dim."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op

    def forward(self, x):
        return torch.fft.fft(x, dim=1).real if self.op == "fft" else torch.cumprod(x, dim=1)


def _norm(block: dict, c: int) -> nn.Module:
    return {"bn": lambda: nn.BatchNorm2d(c), "gn": lambda: nn.GroupNorm(block["groups"], c),
            "in": lambda: nn.InstanceNorm2d(c, affine=True), "ln": lambda: ChannelLayerNorm(c)}[block["type"]]()


def _act(block: dict, c: int) -> nn.Module:
    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "hardswish": nn.Hardswish,
            "prelu": lambda: nn.PReLU(c if block["per_channel"] else 1)}[block["type"]]()


def _split(block: dict, c: int) -> nn.Module:
    sizes = _split_sizes(block, c)
    return Split(block["mode"] == "chunk", sizes, block["which"], _sequence(block["body"], sizes[block["which"]]))


BUILDERS: dict[str, Callable[[dict, int], nn.Module]] = {
    "conv": lambda b, c: nn.Conv2d(c, b["out"], b["k"], padding=b["k"] // 2, groups=b["groups"]),
    "convT": lambda b, c: nn.ConvTranspose2d(c, b["out"], b["k"], stride=1, padding=b["k"] // 2, groups=b["groups"]),
    "dwconv": lambda b, c: nn.Conv2d(c, c * b["mult"], 3, padding=1, groups=c),
    "norm": _norm,
    "act": _act,
    "se": lambda b, c: SqueezeExcite(c, b["hidden"]),
    "shuffle": lambda b, c: Shuffle(),
    "unknown": lambda b, c: Unknown(b["op"]),
    "residual": lambda b, c: Residual(_sequence(b["body"], c)),
    "concat": lambda b, c: Concat(_sequence(b["a"], c), _sequence(b["b"], c)),
    "split": _split,
    "attn": lambda b, c: Attention(c, b["heads"], b["dim"], b["residual"]),
}


def _sequence(blocks: list, c: int) -> nn.Sequential:
    layers = []
    for block in blocks:
        layers.append(BUILDERS[block["kind"]](block, c))
        c = width([block], c)
    return nn.Sequential(*layers)


def _randomize(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial running stats, affine params and PReLU slopes, so nothing is dead by accident."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) - 0.5)
            if not isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)):
                continue
            m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.3)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def build(spec: dict) -> tuple[nn.Module, torch.Tensor]:
    """The spec's model (eval mode, seeded weights) and its example input."""
    c, size = spec["channels"], spec["size"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        body = _sequence(spec["blocks"], c)
        end = width(spec["blocks"], c)
        if spec["head"] == "pool":
            head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(end, spec["outputs"]))
        else:
            head = nn.Sequential(nn.Flatten(), nn.Linear(end * size * size, spec["outputs"]))
        model = nn.Sequential(body, head)
        gen = torch.Generator().manual_seed(spec["seed"])
        _randomize(model, gen)
        x = torch.randn(spec["batch"], c, size, size, generator=gen)
    return model.eval(), x

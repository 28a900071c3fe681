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
    se        x * sigmoid(conv1x1(relu(conv1x1(pool(x))))), pool = AdaptiveAvgPool2d(1)
              or x.mean((2, 3), keepdim=True)                             c -> c
    shuffle   view(b, g, c/g, h, w).transpose(1, 2), then .contiguous().view(b, c, h, w)
              or .flatten(1, 2); g in 2, 3, 4                             c -> c
    unknown   fft(x, dim=1).real | cumprod(x, dim=1): no graphprune rule  c -> c
    residual  x + body(x), or in place; a 1x1 conv closes a body that changed c
    concat    cat([a(x), b(x)], 1); b = [] is the identity (dense block)  c -> a + b
    split     chunk(2), split([s, c-s]) or x[:, :s], x[:, s:]; body on one piece; cat back
                                                                          c -> c - p + body(p)
    attn      tokens x.flatten(2).mT; q, k, v from three Linear(c, heads*dim), or one
              Linear(c, 3*heads*dim) cut by chunk(3, -1) or by timm's view(b, L, 3, heads,
              dim).permute(2, 0, 3, 1, 4) and unbind(0) or [0], [1], [2]; SDPA over heads;
              Linear(heads*dim, c); or nn.MultiheadAttention(c, heads | c) (batch-merged
              dims: b * heads); image layout again; optionally + x          c -> c

Compound blocks (residual, concat, split) hold blocks of their own, nested MAX_DEPTH deep.
A model is a conv or convT stem (without one, every width-keeping block stays tied to the
frozen input channels and nothing could be pruned), 0 to 4 more blocks (scripts/fuzz.py may
ask for more) and a head: flatten -> Linear(c*h*w, OUTPUTS), or global average pool
(AdaptiveAvgPool2d or mean over h, w) -> Linear(c, OUTPUTS). Norm layers get random running
stats and affine parameters, PReLU random slopes, so that no channel is dead unless the
oracle killed it.

`cases()` adds a ratio, plan options and whether to export to ONNX; `check(**case)` is the
property graphprune must satisfy (see its docstring). tests/test_fuzz.py,
tests/test_regressions.py and scripts/fuzz.py all call it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

import graphprune
from graphprune.check.oracle import dead_channel_check
from graphprune.errors import ExportError, GraphPruneError, VerificationError
from graphprune.onnx.export import export_onnx
from graphprune.plan.types import Plan

MAX_CHANNELS = 24
MAX_DEPTH = 2  # compound blocks nest at most this deep
OUTPUTS = 5
ONNX_PERCENT = 10  # share (%) of drawn cases that also export the pruned model to ONNX
NORMS = ("bn", "gn", "in", "ln")
ACTS = ("relu", "gelu", "silu", "hardswish", "prelu")
UNKNOWN_OPS = ("fft", "cumprod")
QKV = ("separate", "chunk", "unbind", "select", "mha")  # how attention gets q, k and v
# A simple block's kind is drawn from this list: convs are listed twice because only
# channels a conv (or linear) writes can be pruned, and width-keeping chains freeze to the input.
SIMPLE_KINDS = ("conv", "act", "norm", "conv", "convT", "dwconv", "se", "shuffle", "shuffle", "unknown")


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
    kind = draw(st.sampled_from(SIMPLE_KINDS))
    shuffles = [g for g in (2, 3, 4) if c % g == 0]
    if kind == "shuffle" and not shuffles:
        kind = "conv"
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
        return {"kind": kind, "hidden": draw(st.integers(2, 8)), "mean": draw(st.booleans())}
    if kind == "unknown":
        return {"kind": kind, "op": draw(st.sampled_from(UNKNOWN_OPS))}
    return {"kind": kind, "groups": draw(st.sampled_from(shuffles)), "flatten": draw(st.booleans())}


def _block(draw, c: int, hi: int, depth: int) -> dict:
    """Any block for c channels, at most hi wide; one in three is compound while depth < MAX_DEPTH."""
    if depth < MAX_DEPTH and draw(st.integers(0, 2)) == 2:
        return _compound(draw, c, hi, depth)
    return _simple(draw, c, hi)


def _body(draw, c: int, hi: int, depth: int, most: int = 2) -> list:
    """1 to `most` blocks starting at c channels, never wider than hi."""
    blocks: list = []
    for _ in range(draw(st.integers(1, most))):
        blocks.append(_block(draw, width(blocks, c), hi, depth))
    return blocks


def _compound(draw, c: int, hi: int, depth: int) -> dict:
    """A block with sub-blocks (one level deeper) for c channels, at most hi wide."""
    kind = draw(st.sampled_from(["residual", "concat", "split", "attn"]))
    if kind == "residual":
        body = _body(draw, c, hi, depth + 1)
        if width(body, c) != c:
            body.append({"kind": "conv", "out": c, "k": 1, "groups": 1})
        return {"kind": kind, "body": body, "inplace": draw(st.booleans())}
    if kind == "concat" and hi >= 4:
        half = hi // 2
        a = [_conv(draw, c, half)]
        a += _body(draw, width(a, c), half, depth + 1, most=1) if draw(st.booleans()) else []
        identity = c + width(a, c) <= hi and draw(st.booleans())
        return {"kind": kind, "a": a, "b": [] if identity else [_conv(draw, c, half)]}
    if kind == "split" and c >= 2:
        mode = draw(st.sampled_from(["chunk", "split", "slice"] if c % 2 == 0 else ["split", "slice"]))
        block = {"kind": kind, "mode": mode, "first": draw(st.integers(1, c - 1)) if mode != "chunk" else 0,
                 "which": draw(st.sampled_from([0, 1]))}
        sizes = _split_sizes(block, c)
        block["body"] = _body(draw, sizes[block["which"]], hi - sizes[1 - block["which"]], depth + 1)
        return block
    qkv = draw(st.sampled_from(QKV))
    heads = [h for h in (1, 2, 3, 4) if c % h == 0] if qkv == "mha" else [1, 2, 4]  # mha: heads | c
    return {"kind": "attn", "heads": draw(st.sampled_from(heads)), "dim": draw(st.sampled_from([2, 4, 6])),
            "qkv": qkv, "residual": draw(st.booleans())}


@st.composite
def architectures(draw, max_blocks: int = 4) -> dict:
    """A random spec: input, weight seed, a conv stem, 0 to max_blocks more blocks, head."""
    c = draw(st.integers(4, MAX_CHANNELS))
    spec = {"batch": draw(st.sampled_from([1, 2])), "channels": c, "size": draw(st.integers(6, 12)),
            "seed": draw(st.integers(0, 2**16)), "blocks": [], "outputs": OUTPUTS}
    spec["blocks"].append(_conv(draw, c, MAX_CHANNELS, draw(st.sampled_from(["conv", "convT"]))))
    c = width(spec["blocks"], c)
    for _ in range(draw(st.integers(0, max_blocks))):
        block = _block(draw, c, MAX_CHANNELS, depth=0)
        spec["blocks"].append(block)
        c = width([block], c)
    spec["head"] = draw(st.sampled_from(["pool", "flatten", "mean"]))
    return spec


@st.composite
def cases(draw, max_blocks: int = 4) -> dict:
    """One fuzz case: check(**case). Every part shrinks to its simple end.

    `options` are PlanOptions beyond the ratio, drawn because the planner's defaults would
    otherwise decide what is tested: round_to 8 (ONNX Runtime's block) keeps every group of
    a 24-channel model at 8, 16 or 24 and so prunes little here; round_to 1 prunes freely.
    """
    return {
        "spec": draw(architectures(max_blocks)),
        "ratio": draw(st.integers(0, 90)) / 100,
        "options": {"round_to": draw(st.sampled_from([1, 2, 8])), "global_ranking": draw(st.booleans())},
        "onnx": draw(st.integers(0, 99)) >= 100 - ONNX_PERCENT,
    }


# -- building modules -----------------------------------------------------------------------------
class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, as ConvNeXt does it."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Residual(nn.Module):
    def __init__(self, body: nn.Module, inplace: bool):
        super().__init__()
        self.body, self.inplace = body, inplace

    def forward(self, x):
        if not self.inplace:
            return x + self.body(x)
        out = self.body(x)
        out += x  # torch.export functionalises the in-place add
        return out


class Concat(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Split(nn.Module):
    """Split the channels in two, run `body` on piece `which`, concatenate in the old order."""

    def __init__(self, mode: str, sizes: list[int], which: int, body: nn.Module):
        super().__init__()
        self.mode, self.sizes, self.which, self.body = mode, sizes, which, body

    def forward(self, x):
        if self.mode == "slice":
            pieces = [x[:, : self.sizes[0]], x[:, self.sizes[0]:]]
        else:
            pieces = list(x.chunk(2, dim=1) if self.mode == "chunk" else torch.split(x, self.sizes, dim=1))
        pieces[self.which] = self.body(pieces[self.which])
        return torch.cat(pieces, dim=1)


class Shuffle(nn.Module):
    """ShuffleNet's channel shuffle with g groups: channel j*(c/g) + i moves to g*i + j."""

    def __init__(self, groups: int, flatten: bool):
        super().__init__()
        self.groups, self.flatten = groups, flatten

    def forward(self, x):
        b, c, h, w = x.shape
        y = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2)
        return y.flatten(1, 2) if self.flatten else y.contiguous().view(b, c, h, w)


class SqueezeExcite(nn.Module):
    """x * gate(x); the squeeze is AdaptiveAvgPool2d(1) or x.mean((2, 3), keepdim=True)."""

    def __init__(self, c: int, hidden: int, mean: bool):
        super().__init__()
        self.pool = MeanPool() if mean else nn.AdaptiveAvgPool2d(1)
        self.reduce, self.expand = nn.Conv2d(c, hidden, 1), nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))


class MeanPool(nn.Module):
    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


class Attention(nn.Module):
    """Multi-head self-attention over the h*w positions of an image."""

    def __init__(self, c: int, heads: int, dim: int, qkv: str, residual: bool):
        super().__init__()
        self.heads, self.dim, self.qkv, self.residual = heads, dim, qkv, residual
        if qkv == "mha":
            self.mha = nn.MultiheadAttention(c, heads, batch_first=True)
            return
        if qkv == "separate":
            self.q, self.k, self.v = (nn.Linear(c, heads * dim) for _ in range(3))
        else:
            self.fused = nn.Linear(c, 3 * heads * dim)
        self.proj = nn.Linear(heads * dim, c)

    def _qkv(self, tokens: torch.Tensor) -> tuple:
        b, n = tokens.shape[:2]
        if self.qkv in ("unbind", "select"):  # timm's layout: (3, b, heads, n, dim)
            qkv = self.fused(tokens).view(b, n, 3, self.heads, self.dim).permute(2, 0, 3, 1, 4)
            return qkv.unbind(0) if self.qkv == "unbind" else (qkv[0], qkv[1], qkv[2])
        parts = (self.q(tokens), self.k(tokens), self.v(tokens)) if self.qkv == "separate" else self.fused(tokens).chunk(3, -1)
        return tuple(t.view(b, n, self.heads, self.dim).transpose(1, 2) for t in parts)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        if self.qkv == "mha":
            out = self.mha(tokens, tokens, tokens, need_weights=False)[0]
        else:
            out = F.scaled_dot_product_attention(*self._qkv(tokens))
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
    return Split(block["mode"], sizes, block["which"], _sequence(block["body"], sizes[block["which"]]))


BUILDERS: dict[str, Callable[[dict, int], nn.Module]] = {
    "conv": lambda b, c: nn.Conv2d(c, b["out"], b["k"], padding=b["k"] // 2, groups=b["groups"]),
    "convT": lambda b, c: nn.ConvTranspose2d(c, b["out"], b["k"], stride=1, padding=b["k"] // 2, groups=b["groups"]),
    "dwconv": lambda b, c: nn.Conv2d(c, c * b["mult"], 3, padding=1, groups=c),
    "norm": _norm,
    "act": _act,
    "se": lambda b, c: SqueezeExcite(c, b["hidden"], b["mean"]),
    "shuffle": lambda b, c: Shuffle(b["groups"], b["flatten"]),
    "unknown": lambda b, c: Unknown(b["op"]),
    "residual": lambda b, c: Residual(_sequence(b["body"], c), b["inplace"]),
    "concat": lambda b, c: Concat(_sequence(b["a"], c), _sequence(b["b"], c)),
    "split": _split,
    "attn": lambda b, c: Attention(c, b["heads"], b["dim"], b["qkv"], b["residual"]),
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


HEADS: dict[str, Callable[[], nn.Module]] = {"pool": lambda: nn.AdaptiveAvgPool2d(1), "mean": MeanPool,
                                             "flatten": nn.Identity}


def build(spec: dict) -> tuple[nn.Module, torch.Tensor]:
    """The spec's model (eval mode, seeded weights) and its example input."""
    c, size = spec["channels"], spec["size"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        body = _sequence(spec["blocks"], c)
        end = width(spec["blocks"], c)
        features = end * size * size if spec["head"] == "flatten" else end
        model = nn.Sequential(body, HEADS[spec["head"]](), nn.Flatten(), nn.Linear(features, spec["outputs"]))
        gen = torch.Generator().manual_seed(spec["seed"])
        _randomize(model, gen)
        x = torch.randn(spec["batch"], c, size, size, generator=gen)
    return model.eval(), x


# -- the property ---------------------------------------------------------------------------------
class FuzzFailure(AssertionError):
    """graphprune broke the property; `signature` groups failures that are likely one bug."""

    def __init__(self, signature: str, detail: str):
        super().__init__(f"{signature}\n{detail}")
        self.signature = signature


@dataclass(frozen=True)
class Outcome:
    status: str  # "verified" or "refused"
    error: str = ""  # refused: the GraphPruneError subclass
    onnx: str = ""  # "" (not tried), "passed", or "unsupported" (the unpruned model fails export too)
    inexact: bool = False  # some pruned groups were inexact, so the oracle checked the exact part only


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def exact_part(plan: Plan) -> Plan:
    """The plan without its inexact groups (LayerNorm statistics), which the oracle cannot judge."""
    removed = plan.removed.copy()
    for group in plan.graph.groups:
        if group.inexact:
            removed[group.channels] = False
    return Plan(plan.graph, plan.options, removed, plan.decisions)


def _same_shapes(model: nn.Module, pruned: nn.Module, x: torch.Tensor, dynamic: bool) -> None:
    inputs = [x, torch.cat([x, x, x])[:3]] if dynamic else [x]
    for batch in inputs:
        want, got = _run(model, batch).shape, _run(pruned, batch).shape
        if want != got:
            raise FuzzFailure("shape: the pruned output shape differs", f"{tuple(got)} != {tuple(want)} at batch {len(batch)}")


def _zeroed(graph, plan):
    """The captured model with the plan's removed channels zeroed (the oracle leaves the graph as it was)."""
    from torch.func import functional_call

    from graphprune.check.oracle import killed

    tensors = killed(plan)

    def run(x):
        return functional_call(graph.captured.module, tensors, (x,), strict=False)

    return run


def _same_values(killed: nn.Module, pruned: nn.Module, x: torch.Tensor, atol: float) -> None:
    """The oracle on an input it has not seen: a killed channel is dead for every input."""
    want, got = _run(killed, x), _run(pruned, x)
    if not torch.allclose(want, got, atol=atol, rtol=1e-4):
        raise FuzzFailure("oracle: outputs changed on a fresh input", f"by up to {(want - got).abs().max().item():.3g}")


def _fewer_params(model: nn.Module, pruned: nn.Module, removed: bool) -> None:
    """A plan that removes channels removes parameters (every candidate channel owns some)."""
    before, after = (sum(p.numel() for p in m.parameters()) for m in (model, pruned))
    if after > before or (removed and after == before):
        raise FuzzFailure("params: the pruned model is not smaller", f"{after} parameters, {before} before")


def _names_node(exc: GraphPruneError, graph) -> None:
    """A refusal must name the node (its name or op); a capture failure the user's source line."""
    text = str(exc)
    if graph is None:
        if "[at " not in text:
            raise FuzzFailure(f"refusal: {type(exc).__name__} names no source line", text)
        return
    names = {n.name for n in graph.captured.graph.nodes} | {str(n.target) for n in graph.captured.graph.nodes}
    if not any(re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text) for name in names):
        raise FuzzFailure(f"refusal: {type(exc).__name__} names no node", text)


@contextlib.contextmanager
def _silent_fds() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null: a failing exporter attempt prints whole
    TorchScript graphs and ONNX Runtime kernel errors there (the ExportError says what failed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _onnx(pruned: nn.Module, x: torch.Tensor, graph) -> str:
    """Export the pruned model; a failure counts only if the unpruned captured model exports."""
    dynamic = graph.captured.dynamic_batch
    with tempfile.TemporaryDirectory() as tmp, _silent_fds():
        try:
            export_onnx(pruned, (x,), None, Path(tmp) / "pruned.onnx", dynamic_batch=dynamic)
            return "passed"
        except ExportError as exc:
            try:
                export_onnx(graph.captured.module, (x,), None, Path(tmp) / "original.onnx", dynamic_batch=dynamic)
            except ExportError:
                return "unsupported"
            raise FuzzFailure("onnx: the pruned model fails export, the unpruned one passes", str(exc)) from exc


def _pattern(exc: BaseException) -> str:
    """Type, innermost graphprune frame and first message line with numbers blanked: one bug, one pattern."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/graphprune/" in f.filename]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    lines = str(exc).strip().splitlines()
    first = re.sub(r"\d+", "N", lines[0])[:100] if lines else ""
    return f"{type(exc).__name__}{where}: {first}"


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny models on busy cores: one intra-op thread is ~50x faster than two (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check(spec: dict, ratio: float, onnx: bool = False, options: dict | None = None) -> Outcome:
    """The fuzz property; raises FuzzFailure when graphprune breaks it.

    analyze -> plan(ratio, **options) -> rewrite either raises a GraphPruneError whose
    message names a node of the captured graph (or, for a capture failure, the user's
    source line), or:

    * ratio 0 removes nothing;
    * the pruned model's output shape equals the original's, at the example batch and, for
      a dynamic-batch capture, at batch 3; it has fewer parameters if the plan removes any;
    * the dead-channel oracle passes with atol = 1e-4 * max(1, max|output|), on the example
      and on a fresh random input, for the plan's exact part: groups marked inexact (their
      statistics, e.g. LayerNorm's, change when features go) are put back before the
      oracle, since their outputs change by design; the full plan is still rewritten, run
      and shape-checked;
    * with `onnx`, the full pruned model exports with parity in ONNX Runtime, unless the
      unpruned captured model fails to export as well (an exporter limit, not a pruning bug).

    Any other exception is a failure.
    """
    with _one_thread():
        return _check(spec, ratio, onnx, options or {})


def _check(spec: dict, ratio: float, onnx: bool, options: dict) -> Outcome:
    model, x = build(spec)
    scale = _run(model, x).abs().max().item()
    graph, stage, inexact, exported = None, "analyze", False, ""
    try:
        graph = graphprune.analyze(model, x)
        stage = "plan"
        plan = graphprune.plan(graph, ratio=ratio, **options)
        if ratio == 0 and plan.removed.any():
            raise FuzzFailure("plan: ratio 0 removes channels", f"{int(plan.removed.sum())} removed")
        stage = "rewrite"
        pruned = graphprune.rewrite(plan)
        stage = "run pruned"
        _same_shapes(model, pruned, x, graph.captured.dynamic_batch)
        _fewer_params(model, pruned, bool(plan.removed.any()))
        if onnx:
            stage = "onnx"
            exported = _onnx(pruned, x, graph)
        stage = "oracle"
        exact = exact_part(plan)
        inexact = bool((exact.removed != plan.removed).any())
        checked = dead_channel_check(exact, atol=1e-4 * max(1.0, scale))
        _same_shapes(model, checked, x, graph.captured.dynamic_batch)
        _same_values(_zeroed(graph, exact), checked, torch.randn_like(x), 1e-4 * max(1.0, scale))
    except FuzzFailure:
        raise
    except VerificationError as exc:
        raise FuzzFailure("oracle: pruning dead channels changed the outputs", str(exc)) from exc
    except GraphPruneError as exc:
        _names_node(exc, graph)
        return Outcome("refused", type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - anything else is a graphprune bug: report it with its stage
        raise FuzzFailure(f"{stage}: {_pattern(exc)}", traceback.format_exc(limit=-6)) from exc
    return Outcome("verified", onnx=exported, inexact=inexact)

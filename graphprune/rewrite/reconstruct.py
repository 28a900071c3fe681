"""Least-squares reconstruction: refit the layers that lost inputs so they answer as the original did.

Pruning a layer's input channels throws away what they carried into it. On calibration data the
lost part can largely be put back (ThiNet, He et al. 2017; Kwon et al. 2022 for transformers):
for each linear or convolution whose input width shrank, in graph order,

    [W' b'] = argmin  sum_r w_r |[x_r 1] [W' b']^T - y_r|^2  +  lam |[W' b'] - [W b]|^2

x_r: a row of that op's input in the *pruned* model (earlier layers already refit, so later ones
also absorb the error that reaches them); y_r: the *original* op's output on the same sample, at the
kept output channels; rows are tokens (linear: every leading position; convolution: patches, at
most ROWS positions per sample, seeded); w_r: the batch's attention_mask where its shape matches
the rows' leading dims, else 1, so padding does not count. Normal equations accumulate in float64.

lam is chosen on held-out calibration batches (every HOLD-th): from LAMBDAS (times the mean of
diag(G)), the one with the least held-out error, and the layer is left as it was unless the refit
lowers that error by GAIN or more. The report gives each refit layer's relative error before and after, held out.
Ops with shared (tied) weights, grouped convolutions and layers that lost no inputs are left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx
from torch.fx._pytree import tree_flatten_spec

from graphprune.rules.registry import Role, has_role

log = logging.getLogger(__name__)

LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HOLD = 4  # every 4th calibration batch is held out to choose lam (the last one, with fewer)
ROWS = 1024  # convolution: patches sampled per sample
GAIN = 0.01  # a refit is kept only if it lowers the held-out error by 1% or more
_LINEAR = (torch.ops.aten.linear.default,)  # the refit targets (Role.REFIT) that are not convolutions: rows = last dim


@dataclass(frozen=True)
class Refit:
    layer: str  # the weight's name
    inputs: tuple[int, int]  # input width (original, pruned)
    before: float  # held-out relative squared error of the pruned layer as cut
    after: float  # ... after the refit (equal to before when left alone)
    lam: float | None  # None: left alone


class _Stop(Exception):
    pass


class _Tap(fx.Interpreter):
    """Runs `module` until `node`, handing its (args, output) to `seen`."""

    def __init__(self, module: fx.GraphModule, node: fx.Node, seen):
        super().__init__(module)
        self.node, self.seen = node, seen

    def run_node(self, n):
        out = super().run_node(n)
        if n is self.node:
            self.seen(self.fetch_args_kwargs_from_env(n)[0], out)
            raise _Stop
        return out


def _run_to(module: fx.GraphModule, node: fx.Node, batch) -> tuple[tuple, torch.Tensor]:
    got = {}

    def seen(args, out):
        got["args"], got["out"] = args, out

    flat = tree_flatten_spec((batch.args, batch.kwargs), module._in_spec)
    with torch.no_grad():
        try:
            _Tap(module, node, seen).run(*flat)
        except _Stop:
            pass
    return got["args"], got["out"]


def _weight_nodes(gm: fx.GraphModule) -> dict[str, fx.Node]:
    """weight name -> its linear/conv op node, for weights read by exactly one op."""
    uses: dict[str, list[fx.Node]] = {}
    for n in gm.graph.nodes:
        if has_role(n, Role.REFIT) and len(n.args) > 1:
            w = n.args[1]
            if isinstance(w, fx.Node) and w.op == "get_attr":
                uses.setdefault(w.target, []).append(n)
    readers: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            readers[n.target] = readers.get(n.target, 0) + len(n.users)
    return {t: ns[0] for t, ns in uses.items() if len(ns) == 1 and readers.get(t) == 1}


def _conv_ok(node: fx.Node) -> bool:
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    return groups == 1


def _rows(node: fx.Node, args: tuple, y: torch.Tensor, weight_shape, gen: torch.Generator):
    """(x rows [R, k] from the pruned op's input `args`, y rows [R, m] from the original op's output
    `y`, leading shape of the rows or None) of one call."""
    x = args[0]
    if node.target in _LINEAR:
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), tuple(x.shape[:-1])
    conv2d = node.target == torch.ops.aten.conv2d.default
    stride, padding, dilation = (list(args[i]) if len(args) > i else [d] * (2 if conv2d else 1)
                                 for i, d in ((3, 1), (4, 0), (5, 1)))
    if not conv2d:  # conv1d as a conv2d of height 1
        x, y = x.unsqueeze(2), y.unsqueeze(2)
        stride, padding, dilation = [1, *stride], [0, *padding], [1, *dilation]
    kernel = tuple(weight_shape[2:]) if conv2d else (1, *weight_shape[2:])
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # [N, k, L]
    ys = y.flatten(2)  # [N, m, L]
    if cols.shape[-1] > ROWS:
        pick = torch.randperm(cols.shape[-1], generator=gen)[:ROWS]
        cols, ys = cols[..., pick], ys[..., pick]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]), ys.transpose(1, 2).reshape(-1, ys.shape[1]), None


def _row_weights(lead: tuple | None, rows: int, kwargs: dict) -> torch.Tensor:
    mask = kwargs.get("attention_mask")
    if lead is not None and isinstance(mask, torch.Tensor) and len(lead) >= 2 and tuple(mask.shape) == lead[:2]:
        return mask.reshape(lead[0], lead[1], *([1] * (len(lead) - 2))).expand(lead).reshape(-1).double()
    return torch.ones(rows, dtype=torch.float64)


class _Normal:
    """Weighted normal equations of one layer: G = X^T W X, C = X^T W Y, s = sum w |y|^2."""

    def __init__(self):
        self.G = self.C = None
        self.s = 0.0

    def add(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, bias: bool) -> None:
        x = x.double()
        if bias:
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        y, wx = y.double(), x * w[:, None]
        g, c = wx.T @ x, wx.T @ y
        self.G, self.C = (g, c) if self.G is None else (self.G + g, self.C + c)
        self.s += float((w[:, None] * y * y).sum())

    def error(self, theta: torch.Tensor) -> float:
        """Relative squared error of the rows under theta [k(+1), m]."""
        sq = float((theta * (self.G @ theta)).sum() - 2 * (theta * self.C).sum()) + self.s
        return max(sq, 0.0) / max(self.s, 1e-30)


def _theta(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    w = weight.detach().reshape(weight.shape[0], -1).double().T
    return torch.cat([w, bias.detach().double()[None]], 0) if bias is not None else w


def _solve(fit: _Normal, theta0: torch.Tensor, lam: float) -> torch.Tensor:
    scale = float(torch.diagonal(fit.G).mean()) or 1.0
    eye = torch.eye(len(fit.G), dtype=fit.G.dtype)
    return torch.linalg.solve(fit.G + lam * scale * eye, fit.C + lam * scale * theta0)


def _param(module: torch.nn.Module, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name)


@dataclass(frozen=True)
class _Layer:
    """One op to refit: its node in the original's graph and in the pruned graph, and its tensors."""

    target: str  # the weight's name (the same in both)
    ref: fx.Node
    node: fx.Node
    weight: torch.Tensor  # the pruned model's, refit in place
    bias: torch.Tensor | None
    keep_out: object  # kept output indices, or None when all are kept
    full_inputs: int


def reconstruct(plan, pruned: fx.GraphModule, data, limit: int | None = 16, seed: int = 0) -> list[Refit]:
    """Refit, in place, the linear and convolution layers of `pruned` whose inputs `plan` cut, to
    the outputs of `plan.graph.captured.module` on `data` (graphprune.data.Data). Returns what was done."""
    original = plan.graph.captured.module
    batches = list(data.batches(limit=limit))
    if len(batches) < 2:
        log.info("reconstruction needs 2 or more calibration batches; skipped")
        return []
    done = []
    for layer in _layers(plan, original, pruned):
        fit, held = _normal_equations(original, pruned, layer, batches, seed)
        done.append(_refit(layer, fit, held))
        log.info("reconstructed %s: held-out error %.4f -> %.4f", layer.target, done[-1].before, done[-1].after)
    return done


def _layers(plan, original: fx.GraphModule, pruned: fx.GraphModule) -> list[_Layer]:
    """The ops of `pruned`, in graph order, whose input width is below the original's."""
    before = _weight_nodes(original)
    out = []
    for target, node in _weight_nodes(pruned).items():
        ref = before.get(target)
        if ref is None or (node.target not in _LINEAR and not _conv_ok(node)):
            continue
        weight, full = _param(pruned, target), _param(original, target)
        if weight.dim() < 2 or weight.shape[1] == full.shape[1]:
            continue  # lost no inputs
        b = node.args[2] if len(node.args) > 2 else None
        bias = _param(pruned, b.target) if isinstance(b, fx.Node) and b.op == "get_attr" else None
        out.append(_Layer(target, ref, node, weight, bias, plan.kept(((ref.args[1], None), 0)), int(full.shape[1])))
    return out


def _normal_equations(original, pruned, layer: _Layer, batches: list, seed: int) -> tuple[_Normal, _Normal]:
    """(fit, held out): the layer's normal equations on the calibration batches, every HOLD-th held out."""
    fits = (_Normal(), _Normal())
    held_out = {i for i in range(len(batches)) if i % HOLD == HOLD - 1} or {len(batches) - 1}
    for i, batch in enumerate(batches):
        _, y = _run_to(original, layer.ref, batch)
        args, _ = _run_to(pruned, layer.node, batch)
        gen = torch.Generator().manual_seed(seed * 7919 + i)
        x_rows, y_rows, lead = _rows(layer.node, args, y, layer.weight.shape, gen)
        if layer.keep_out is not None:
            y_rows = y_rows[:, torch.as_tensor(layer.keep_out)]
        weights = _row_weights(lead, len(x_rows), batch.kwargs)
        fits[i in held_out].add(x_rows, y_rows, weights, layer.bias is not None)
    return fits


def _refit(layer: _Layer, fit: _Normal, held: _Normal) -> Refit:
    """Solve for each lam, keep the best on held-out rows if it gains GAIN or more; write it in place."""
    theta0 = _theta(layer.weight, layer.bias)
    before = err = held.error(theta0)
    best, lam = theta0, None
    for candidate in LAMBDAS:
        theta = _solve(fit, theta0, candidate)
        e = held.error(theta)
        if e < err and e < (1.0 - GAIN) * before:
            best, lam, err = theta, candidate, e
    if lam is not None:
        with torch.no_grad():
            k = layer.weight[0].numel()
            layer.weight.copy_(best[:k].T.reshape(layer.weight.shape).to(layer.weight.dtype))
            if layer.bias is not None:
                layer.bias.copy_(best[k].to(layer.bias.dtype))
    return Refit(layer.target, (layer.full_inputs, int(layer.weight.shape[1])), before, err, lam)

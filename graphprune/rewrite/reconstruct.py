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
lowers that error by GAIN or more. A layer whose fitting rows are fewer than its unknowns per output
(input width, plus one with a bias) is refused: the fit would be decided by lam, not by the data.
The report gives each refit layer's relative error before and after, held out.

Cost: each layer's rows need the pruned model's input to it with the earlier layers already refit, so
the layers are visited in graph order, all batches at each layer. The original and the pruned graph
are interpreted once per batch, paused at each refit op (`_Walk`; a layer's weights are read by that
op alone, so nothing computed before it changes when it is refit): linear in depth and batches, with
the paused activations bounded by MEMORY bytes (beyond it a batch's pass restarts from its inputs).
Ops with shared (tied) weights, grouped convolutions and layers that lost no inputs are left alone.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx
from torch.fx._pytree import tree_flatten_spec
from torch.utils import _pytree as pytree

from graphprune.rules.registry import Role, has_role

log = logging.getLogger(__name__)

LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HOLD = 4  # every 4th calibration batch is held out to choose lam (the last one, with fewer)
ROWS = 1024  # convolution: patches sampled per sample
GAIN = 0.01  # a refit is kept only if it lowers the held-out error by 1% or more
MEMORY = 2 << 30  # bytes of activations the paused cursors may hold (graphprune.rewrite.reconstruct._Walk)
_LINEAR = (torch.ops.aten.linear.default,)  # the refit targets (Role.REFIT) that are not convolutions: rows = last dim


class Verdict(enum.StrEnum):
    """What the refit did to one layer; the value is the JSON report's spelling."""

    REFIT = "refit"
    NO_GAIN = "left alone: no gain on held-out rows"
    FEW_ROWS = "refused: fewer rows than inputs"


@dataclass(frozen=True)
class Refit:
    layer: str  # the weight's name
    inputs: tuple[int, int]  # input width (original, pruned)
    before: float  # held-out relative squared error of the pruned layer as cut
    after: float  # ... after the refit (equal to before when left alone)
    lam: float | None  # None: left alone
    verdict: Verdict = Verdict.REFIT
    rows: int = 0  # rows the fit had (positive weight)


class _Cursor(fx.Interpreter):
    """`module` interpreted on one batch node by node, paused between calls: `before(node)` runs the
    nodes ahead of `node` and returns its positional arguments; `through(node)` runs `node` too and
    returns its output. Values no later node reads are freed as in `fx.Interpreter.run`."""

    def __init__(self, module: fx.GraphModule, batch):
        super().__init__(module)
        flat = tree_flatten_spec((batch.args, batch.kwargs), module._in_spec)
        self.args_iter = iter(self.graph.process_inputs(*flat))
        self.env = {}
        self.nodes = list(self.graph.nodes)
        self.at = 0  # index of the next node to run

    def before(self, node: fx.Node) -> tuple:
        self._run(node)
        return self.fetch_args_kwargs_from_env(node)[0]

    def through(self, node: fx.Node) -> torch.Tensor:
        self._run(node)
        with torch.no_grad():
            out = self.env[node] = self.run_node(node)
        self._free(node)
        self.at += 1
        return out

    def _run(self, stop: fx.Node) -> None:
        with torch.no_grad():
            while self.nodes[self.at] is not stop:
                n = self.nodes[self.at]
                if n.op == "output":
                    raise ValueError(f"{stop.format_node()} is not ahead of the cursor")
                self.env[n] = self.run_node(n)
                self._free(n)
                self.at += 1

    def _free(self, n: fx.Node) -> None:
        for gone in self.user_to_last_uses.get(n, []):
            del self.env[gone]

    def bytes(self) -> int:
        """Memory held by the values computed so far (not parameters, constants or inputs)."""
        seen, total = set(), 0
        for n, v in self.env.items():
            if n.op in ("get_attr", "placeholder"):
                continue
            for t in pytree.tree_leaves(v):
                if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter):
                    s = t.untyped_storage()
                    if s.data_ptr() not in seen:
                        seen.add(s.data_ptr())
                        total += s.nbytes()
        return total


class _Walk:
    """One cursor per batch on the original and on the pruned graph, moving forward with the refit:
    each graph is interpreted once per batch (not once per layer and batch). A cursor is kept while
    all kept cursors hold at most MEMORY bytes; one that is not kept starts again from the inputs
    at the next layer (still right, only slower)."""

    def __init__(self, original: fx.GraphModule, pruned: fx.GraphModule, batches: list):
        self.modules, self.batches = (original, pruned), batches
        self.cursors: list[list[_Cursor | None]] = [[None, None] for _ in batches]
        self.index = tuple({n: i for i, n in enumerate(m.graph.nodes)} for m in self.modules)
        self.restarts = 0
        self.peak = 0  # most bytes the kept cursors held after a layer

    def _cursor(self, i: int, which: int, node: fx.Node) -> _Cursor:
        c = self.cursors[i][which]
        if c is None or c.at > self.index[which][node]:
            self.restarts += c is not None
            c = self.cursors[i][which] = _Cursor(self.modules[which], self.batches[i])
        return c

    def original_output(self, i: int, node: fx.Node) -> torch.Tensor:
        return self._cursor(i, 0, node).through(node)

    def pruned_args(self, i: int, node: fx.Node) -> tuple:
        return self._cursor(i, 1, node).before(node)

    def bound(self) -> None:
        """Drop the cursors past MEMORY bytes, the last batches' first."""
        held = 0
        for pair in self.cursors:
            for which, c in enumerate(pair):
                if c is not None:
                    size = c.bytes()
                    if held + size > MEMORY:
                        pair[which] = None
                    else:
                        held += size
        self.peak = max(self.peak, held)


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
    pointwise = all(k == 1 for k in kernel) and all(s == 1 for s in stride) and not any(padding)
    # a 1x1 convolution's patches are its input's positions: no copy before the rows are picked
    cols = x.flatten(2) if pointwise else F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # [N, k, L]
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
        self.rows = 0

    def add(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, bias: bool) -> None:
        x = x.double()
        if bias:
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        y, wx = y.double(), x * w[:, None]
        g, c = wx.T @ x, wx.T @ y
        self.G, self.C = (g, c) if self.G is None else (self.G + g, self.C + c)
        self.s += float((w[:, None] * y * y).sum())
        self.rows += int((w > 0).sum())

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


def reconstruct(plan, pruned: fx.GraphModule, data, limit: int | None = 16, seed: int = 0,
                progress=None) -> list[Refit]:
    """Refit, in place, the linear and convolution layers of `pruned` whose inputs `plan` cut, to
    the outputs of `plan.graph.captured.module` on `data` (graphprune.data.Data). Returns what was done.
    `progress`: graphprune.data.progress.Stages (stage "refit", one unit per layer and batch)."""
    from graphprune.data.progress import stages_of

    original = plan.graph.captured.module
    batches = list(data.batches(limit=limit))
    if len(batches) < 2:
        log.info("reconstruction needs 2 or more calibration batches; skipped")
        return []
    layers = _layers(plan, original, pruned)
    walk, done = _Walk(original, pruned, batches), []
    with stages_of(progress).stage("refit", len(layers) * len(batches),
                                   f"refit: {len(layers)} layers x {len(batches)} batches") as tick:
        for layer in layers:
            fit, held = _normal_equations(walk, layer, seed, tick)
            done.append(_refit(layer, fit, held))
            walk.bound()
            log.info("reconstructed %s: held-out error %.4f -> %.4f", layer.target, done[-1].before, done[-1].after)
    log.info("refit: paused passes held at most %.1f MiB; %d restarted from the inputs to stay under %d bytes",
             walk.peak / 2**20, walk.restarts, MEMORY)
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


def _normal_equations(walk: _Walk, layer: _Layer, seed: int, tick) -> tuple[_Normal, _Normal]:
    """(fit, held out): the layer's normal equations on the calibration batches, every HOLD-th held out."""
    fits = (_Normal(), _Normal())
    n = len(walk.batches)
    held_out = {i for i in range(n) if i % HOLD == HOLD - 1} or {n - 1}
    for i, batch in enumerate(walk.batches):
        y = walk.original_output(i, layer.ref)
        args = walk.pruned_args(i, layer.node)
        gen = torch.Generator().manual_seed(seed * 7919 + i)
        x_rows, y_rows, lead = _rows(layer.node, args, y, layer.weight.shape, gen)
        if layer.keep_out is not None:
            y_rows = y_rows[:, torch.as_tensor(layer.keep_out)]
        weights = _row_weights(lead, len(x_rows), batch.kwargs)
        fits[i in held_out].add(x_rows, y_rows, weights, layer.bias is not None)
        tick()
    return fits


def _refit(layer: _Layer, fit: _Normal, held: _Normal) -> Refit:
    """Solve for each lam, keep the best on held-out rows if it gains GAIN or more; write it in place."""
    theta0 = _theta(layer.weight, layer.bias)
    before = err = held.error(theta0)
    shape = (layer.full_inputs, int(layer.weight.shape[1]))
    if fit.rows < len(theta0):
        return Refit(layer.target, shape, before, before, None, Verdict.FEW_ROWS, fit.rows)
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
    return Refit(layer.target, shape, before, err, lam, Verdict.REFIT if lam is not None else Verdict.NO_GAIN, fit.rows)

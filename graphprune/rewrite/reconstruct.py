"""Least-squares reconstruction: refit the layers that lost inputs so they answer as the original did.

Pruning a layer's input channels throws away what they carried into it. On calibration data the
lost part can largely be put back (ThiNet, He et al. 2017; Kwon et al. 2022 for transformers):
for each linear or convolution whose input width shrank, in graph order,

    [W' b'] = argmin  sum_r w_r |[x_r 1] [W' b']^T - y_r|^2  +  lam |[W' b'] - [W b]|^2

x_r: a row of that op's input in the *pruned* model (earlier layers already refit, so later ones
also absorb the error that reaches them); y_r: the *original* op's output on the same sample, at the
kept output channels; rows are tokens (linear: every leading position; convolution: patches, at
most ROWS (lstsq) positions per sample, seeded); w_r: the batch's attention_mask where its shape
matches the rows' leading dims, else 1, so padding does not count. Normal equations accumulate in float64.

lam is chosen on held-out calibration batches (every HOLD-th): from LAMBDAS (times the mean of
diag(G)), the one with the least held-out error, and the layer is left as it was unless the refit
lowers that error by GAIN or more. A layer whose fitting rows are fewer than its unknowns per output
(input width, plus one with a bias) is refused: the fit would be decided by lam, not by the data.
The report gives each refit layer's relative error before and after, held out.

Cost: each layer's rows need the pruned model's input to it with the earlier layers already refit, so
the layers are visited in graph order, all batches at each layer. The original and the pruned graph
are interpreted once per batch, paused at each refit op (graphprune.rewrite.walk; a layer's weights
are read by that op alone, so nothing computed before it changes when it is refit): linear in depth
and batches, with the paused activations bounded by MEMORY bytes (beyond it a batch's pass restarts
from its inputs). The rows and normal equations are graphprune.rewrite.lstsq's.
Ops with shared (tied) weights, grouped convolutions and layers that lost no inputs are left alone.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import torch
from torch import fx

from graphprune.rewrite.lstsq import LINEAR, NormalEquations, row_weights, rows, solve, theta
from graphprune.rewrite.walk import Walk
from graphprune.rules import conv
from graphprune.rules.registry import Role, has_role

log = logging.getLogger(__name__)

LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HOLD = 4  # every 4th calibration batch is held out to choose lam (the last one, with fewer)
GAIN = 0.01  # a refit is kept only if it lowers the held-out error by 1% or more
MEMORY = 2 << 30  # bytes of activations the paused passes may hold (graphprune.rewrite.walk.Walk)


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
    walk, done = Walk(original, pruned, batches, MEMORY), []
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
        if ref is None or (node.target not in LINEAR and conv.groups(node) != 1):
            continue
        weight, full = _param(pruned, target), _param(original, target)
        if weight.dim() < 2 or weight.shape[1] == full.shape[1]:
            continue  # lost no inputs
        b = node.args[2] if len(node.args) > 2 else None
        bias = _param(pruned, b.target) if isinstance(b, fx.Node) and b.op == "get_attr" else None
        out.append(_Layer(target, ref, node, weight, bias, plan.kept(((ref.args[1], None), 0)), int(full.shape[1])))
    return out


def _normal_equations(walk: Walk, layer: _Layer, seed: int, tick) -> tuple[NormalEquations, NormalEquations]:
    """(fit, held out): the layer's normal equations on the calibration batches, every HOLD-th held out."""
    fits = (NormalEquations(), NormalEquations())
    n = len(walk.batches)
    held_out = {i for i in range(n) if i % HOLD == HOLD - 1} or {n - 1}
    for i, batch in enumerate(walk.batches):
        y = walk.original_output(i, layer.ref)
        args = walk.pruned_args(i, layer.node)
        gen = torch.Generator().manual_seed(seed * 7919 + i)
        x_rows, y_rows, lead = rows(layer.node, args, y, layer.weight.shape, gen)
        if layer.keep_out is not None:
            y_rows = y_rows[:, torch.as_tensor(layer.keep_out)]
        weights = row_weights(lead, len(x_rows), batch.kwargs)
        fits[i in held_out].add(x_rows, y_rows, weights, layer.bias is not None)
        tick()
    return fits


def _refit(layer: _Layer, fit: NormalEquations, held: NormalEquations) -> Refit:
    """Solve for each lam, keep the best on held-out rows if it gains GAIN or more; write it in place."""
    theta0 = theta(layer.weight, layer.bias)
    before = err = held.error(theta0)
    shape = (layer.full_inputs, int(layer.weight.shape[1]))
    if fit.rows < len(theta0):
        return Refit(layer.target, shape, before, before, None, Verdict.FEW_ROWS, fit.rows)
    best, lam = theta0, None
    for candidate in LAMBDAS:
        solved = solve(fit, theta0, candidate)
        e = held.error(solved)
        if e < err and e < (1.0 - GAIN) * before:
            best, lam, err = solved, candidate, e
    if lam is not None:
        with torch.no_grad():
            k = layer.weight[0].numel()
            layer.weight.copy_(best[:k].T.reshape(layer.weight.shape).to(layer.weight.dtype))
            if layer.bias is not None:
                layer.bias.copy_(best[k].to(layer.bias.dtype))
    return Refit(layer.target, shape, before, err, lam, Verdict.REFIT if lam is not None else Verdict.NO_GAIN, fit.rows)

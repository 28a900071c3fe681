"""Selections in the dead-channel oracle: ops whose output is a choice of positions.

`topk`, `sort`, `argsort`, `max/min(dim)`, `kthvalue`, `argmax/argmin` pick positions by
comparing values. Pruning dead channels legitimately changes values by rounding (a sum over
fewer terms), and among tied or nearly tied values that flips the choice: RT-DETR's query
selection (`topk` of 300 over class scores that, at random init, hold many exact ties) then
gathers other rows, and every output moves by its own size although nothing is wrong.

So the oracle checks a selection by what it picks, not by where: at each selection node the
pruned model must pick values equal to the ones the reference picks (for `topk`/`sort`/`max`
the sorted values themselves; for `argmax`/`argsort` the input's values at the reference's
and at its own indices), and from there on it continues with the reference's choice,
sliced to the kept channels. A wrong index upstream still shows: the picked values differ.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx
from torch.fx import _pytree as fx_pytree

from graphprune.errors import VerificationError, describe

aten = torch.ops.aten

# op -> position of its indices in the output tuple (None: the output is the indices)
SELECTIONS = {
    aten.topk.default: 1, aten.sort.default: 1, aten.sort.stable: 1, aten.kthvalue.default: 1,
    aten.max.dim: 1, aten.min.dim: 1, aten.argsort.default: None, aten.argsort.stable: None,
    aten.argmax.default: None, aten.argmin.default: None,
}


class Pinned(fx.Interpreter):
    """Runs a captured (or rewritten) graph; records its selections, or follows recorded ones.

    `tensors` (name -> tensor) stand in for the module's parameters and buffers of those names.
    With `recorded` (node name -> output) and `plan`, each selection is checked against the
    recorded one and replaced by it (sliced to the plan's kept indices).
    """

    def __init__(self, gm: fx.GraphModule, tensors: dict | None = None, recorded: dict | None = None,
                 plan=None, atol: float = 1e-4) -> None:
        super().__init__(gm)
        self.tensors = tensors or {}
        self.recorded = recorded
        self.picks: dict = {}
        self.plan, self.atol = plan, atol
        self.nodes = {n.name: n for n in plan.graph.captured.graph.nodes} if plan is not None else {}

    def fetch_attr(self, target: str):
        found = self.tensors.get(target)
        return found if found is not None else super().fetch_attr(target)

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.op != "call_function" or n.target not in SELECTIONS:
            return out
        if self.recorded is None:
            self.picks[n.name] = out
            return out
        ref = self.recorded.get(n.name)
        old = self.nodes.get(n.name)
        if ref is None or old is None:
            return out
        ref = _kept(self.plan, old, ref)
        _same_picks(n, out, ref, self.env[n.args[0]], self.atol)
        return ref

    def outputs(self, args: tuple, kwargs: dict):
        flat = fx_pytree.tree_flatten_spec((list(args), dict(kwargs)), self.module._in_spec)
        with torch.no_grad():
            return self.run(*flat)


def _kept(plan, node: fx.Node, out):
    """The recorded output of `node` with the plan's removed indices dropped from every dim."""

    def slice_one(t: torch.Tensor, k: int | None) -> torch.Tensor:
        for d in range(t.dim()):
            keep = plan.kept(((node, k), d))
            if keep is not None:
                t = t.index_select(d, torch.as_tensor(np.asarray(keep)))
        return t

    if isinstance(out, tuple):
        return tuple(slice_one(t, k) for k, t in enumerate(out))
    return slice_one(out, None)


def _picked(x: torch.Tensor, idx: torch.Tensor, n: fx.Node) -> torch.Tensor:
    """x's values at the indices an index-only selection returned (argmax/argmin/argsort)."""
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
    if dim is None:  # argmax over the flattened input
        return x.flatten()[idx.flatten()]
    keep = idx.dim() == x.dim()
    got = torch.take_along_dim(x, idx if keep else idx.unsqueeze(dim), dim)
    return got if keep else got.squeeze(dim)


def _same_picks(n: fx.Node, own, ref, x: torch.Tensor, atol: float) -> None:
    """The pruned graph's selection picks the values the reference's picks; raise if not."""
    at = SELECTIONS[n.target]
    if at is None:
        a, b = _picked(x, own, n), _picked(x, ref, n)
    else:
        a, b = own[0], ref[0]
    if not a.is_floating_point() or a.shape != b.shape:
        if a.shape != b.shape or not torch.equal(a, b):
            raise VerificationError(f"{describe(n)} picked different values")
        return
    tol = atol * max(1.0, float(b.abs().max())) if b.numel() else atol
    if not torch.allclose(a, b, atol=tol, rtol=atol):
        raise VerificationError(f"{describe(n)} picked values that differ by up to {(a - b).abs().max().item():.3g}")

"""Paused interpretation: the original and the pruned graph run once per batch, stopping at each refit op.

The refit (graphprune.rewrite.reconstruct) visits layers in graph order and needs, at each one, the
original op's output and the pruned op's input on every calibration batch. A `Cursor` interprets
one graph on one batch node by node and pauses before or after a node; a `Walk` holds a cursor per
batch and graph and moves them forward with the refit, so each graph is interpreted once per batch
(a layer's weights are read by its op alone, so refitting it changes nothing computed before it).
The paused activations are bounded by `memory` bytes; beyond it a batch's pass restarts from its
inputs at the next layer (still right, only slower).
"""

from __future__ import annotations

import torch
from torch import fx
from torch.fx._pytree import tree_flatten_spec
from torch.utils import _pytree as pytree


class Cursor(fx.Interpreter):
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


class Walk:
    """One cursor per batch on the original and on the pruned graph, moving forward with the refit:
    each graph is interpreted once per batch (not once per layer and batch). A cursor is kept while
    all kept cursors hold at most `memory` bytes; one that is not kept starts again from the inputs
    at the next layer."""

    def __init__(self, original: fx.GraphModule, pruned: fx.GraphModule, batches: list, memory: int):
        self.modules, self.batches, self.memory = (original, pruned), batches, memory
        self.cursors: list[list[Cursor | None]] = [[None, None] for _ in batches]
        self.index = tuple({n: i for i, n in enumerate(m.graph.nodes)} for m in self.modules)
        self.restarts = 0
        self.peak = 0  # most bytes the kept cursors held after a layer

    def _cursor(self, i: int, which: int, node: fx.Node) -> Cursor:
        c = self.cursors[i][which]
        if c is None or c.at > self.index[which][node]:
            self.restarts += c is not None
            c = self.cursors[i][which] = Cursor(self.modules[which], self.batches[i])
        return c

    def original_output(self, i: int, node: fx.Node) -> torch.Tensor:
        return self._cursor(i, 0, node).through(node)

    def pruned_args(self, i: int, node: fx.Node) -> tuple:
        return self._cursor(i, 1, node).before(node)

    def bound(self) -> None:
        """Drop the cursors past `memory` bytes, the last batches' first."""
        held = 0
        for pair in self.cursors:
            for which, c in enumerate(pair):
                if c is not None:
                    size = c.bytes()
                    if held + size > self.memory:
                        pair[which] = None
                    else:
                        held += size
        self.peak = max(self.peak, held)

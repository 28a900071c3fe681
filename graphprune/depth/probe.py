"""Run a captured graph node by node, watching or bypassing blocks (an fx.Interpreter).

`Probe(gm, watch=..., bypass=...)`: for each watched block, `on_block(block, x, y)` is called
with the block's input and output values as they are computed; each bypassed block is not
run at all and its output is its input (what `remove_blocks` builds, without building it).
`node_macs` counts each node's multiply-accumulates, as graphprune.cost.macs counts a whole model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.fx as fx
from torch.fx import _pytree as fx_pytree
from torch.utils import _pytree as pytree
from torch.utils.flop_counter import FlopCounterMode

import graphprune.cost.macs  # noqa: F401 - registers the FLOP formula of CPU attention
from graphprune.depth.find import Block
from graphprune.depth.graphs import alias_chain, written


class Probe(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, watch: Iterable[Block] = (), bypass: Iterable[Block] = (),
                 on_block: Callable[[Block, torch.Tensor, torch.Tensor], None] | None = None):
        super().__init__(gm)
        nodes = {n.name: n for n in gm.graph.nodes}
        self.watch = {nodes[b.output]: (b, nodes[b.input]) for b in watch}
        self.bypass = {nodes[b.output]: nodes[b.input] for b in bypass}
        self.keep = {x for _, x in self.watch.values()} | set(self.bypass.values())
        self.skip = _unneeded(gm.graph, {nodes[name] for b in bypass for name in b.nodes}, set(self.bypass), self.keep)
        self.kept: dict = {}
        self.on_block = on_block

    def run_node(self, n: fx.Node):
        if n in self.skip:
            return None
        if n in self.bypass:
            value = self.kept[self.bypass[n]]
            if self.bypass[n] not in alias_chain(n) and any(n in written(u) for u in n.users):
                value = value.clone()  # a later in-place op writes into it (see remove._bypass)
        else:
            value = super().run_node(n)
        if n in self.watch and self.on_block is not None:
            block, x = self.watch[n]
            self.on_block(block, self.kept[x], value)
        if n in self.keep:
            self.kept[n] = value
        return value

    def __call__(self, args: tuple, kwargs: dict) -> list:
        """The flat list of output leaves of `gm(*args, **kwargs)`."""
        flat = fx_pytree.tree_flatten_spec((list(args), dict(kwargs)), self.module._in_spec)
        self.kept = {}
        with torch.no_grad():
            out = self.run(*flat)
        self.kept = {}
        return pytree.tree_leaves(out)


def _unneeded(graph: fx.Graph, owned: set, bypassed: set, keep: set) -> set:
    """Nodes not to run: the bypassed blocks' own nodes and whatever only they read (sizes of them)."""
    dead = owned | bypassed
    for n in reversed(list(graph.nodes)):
        if n not in keep and n.op not in ("placeholder", "output") and n.users and all(u in dead for u in n.users):
            dead.add(n)
    for n in graph.nodes:  # checks with no users (export's _assert_tensor_metadata) on values not computed
        if not n.users and n.op == "call_function" and n.all_input_nodes and all(i in dead for i in n.all_input_nodes):
            dead.add(n)
    return (dead - bypassed) - keep


class _Counting(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.macs: dict[str, int] = {}

    def run_node(self, n: fx.Node):
        if n.op != "call_function":
            return super().run_node(n)
        counter = FlopCounterMode(display=False)
        with counter:
            value = super().run_node(n)
        self.macs[n.name] = int(counter.get_total_flops() // 2)
        return value


def node_macs(gm: fx.GraphModule, args: tuple, kwargs: dict) -> dict[str, int]:
    """MACs of every node of `gm` on one input (eval-mode graph, no gradients)."""
    counting = _Counting(gm)
    flat = fx_pytree.tree_flatten_spec((list(args), dict(kwargs)), gm._in_spec)
    with torch.no_grad():
        counting.run(*flat)
    return counting.macs


def block_macs(gm: fx.GraphModule, blocks: Iterable[Block], args: tuple, kwargs: dict) -> dict[str, int]:
    """MACs each block costs on the example input: the sum over the nodes it owns."""
    macs = node_macs(gm, args, kwargs)
    return {b.name: sum(macs.get(n, 0) for n in b.nodes) for b in blocks}

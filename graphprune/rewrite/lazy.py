"""Models that slice or zero the captured module's own tensors when they run, holding no copy.

The dead-channel oracle (graphprune.oracle) compares two models: the original with the removed
channels' weights zeroed, and the pruned one. Built eagerly, they cost a zeroed copy of every
tensor that loses a channel plus a second pruned model: about twice a model's size, which a large
language model cannot spare. Here both are graphs over the captured module's tensors (shared, not
copied) with one op inserted after each `get_attr` that needs it:

    zeroed:  w' = index_fill(w, d, removed_d, 0)      for every dim d of w that loses indices
    pruned:  w' = index_select(w, d, kept_d)           (the rewriter's `_sliced`, done at run time)

placed just before the weight's first use, so a run holds one layer's sliced or zeroed weights at a
time (fx frees a value after its last use).
The pruned graph is the rewriter's own (node rewrites included); only where its weights come from
differs, so the oracle still checks what `rewrite` builds.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx

from graphprune.importance import parameter
from graphprune.plan.types import Plan


def _rebuild(old: fx.GraphModule, graph: fx.Graph, tensors: dict) -> fx.GraphModule:
    module = fx.GraphModule(tensors, graph, class_name=type(old).__name__)
    module._in_spec = old._in_spec
    module._out_spec = old._out_spec
    return module


def _insert(graph: fx.Graph, node: fx.Node, op, dim: int, index: str, extra: tuple = ()) -> fx.Node:
    """Replace every use of `node` by op(node, dim, <index buffer>, *extra), placed just before the first
    use (export puts every get_attr at the top: ops placed there would all hold their copies at once)."""
    if not node.users:
        return node
    order = {n: k for k, n in enumerate(graph.nodes)}
    first = min(node.users, key=order.__getitem__)
    with graph.inserting_before(first):
        holder = graph.get_attr(index)
        new = graph.call_function(op, (node, dim, holder, *extra))
    node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    return new


def _shared(module: fx.GraphModule, graph: fx.Graph) -> dict:
    return {n.target: parameter(module, n.target) for n in graph.nodes if n.op == "get_attr"}


def lazy_module(plan: Plan, old: fx.GraphModule, graph: fx.Graph, val_map: dict, constants: dict) -> fx.GraphModule:
    """The pruned graph `graph` (the rewriter's, `val_map`: old node -> new) reading the captured
    module's tensors through run-time `index_select`s."""
    tensors = _shared(old, graph) | constants
    for node in [n for n in old.graph.nodes if n.op == "get_attr" and n.users]:
        value, latest = tensors[node.target], val_map[node]
        for dim in range(value.dim() if isinstance(value, torch.Tensor) else 0):
            keep = plan.kept(((node, None), dim))
            if keep is not None:
                name = f"_lazy_keep_{len(tensors)}"
                tensors[name] = torch.as_tensor(keep, dtype=torch.long)
                latest = _insert(graph, latest, torch.ops.aten.index_select.default, dim, name)
    return _rebuild(old, graph, tensors)


def zeroed_module(plan: Plan) -> fx.GraphModule:
    """The captured module with every removed channel's slices zeroed at run time."""
    old = plan.graph.captured.module
    graph = fx.Graph()
    graph._codegen = copy.copy(old.graph._codegen)
    val_map: dict = {}
    graph.output(graph.graph_copy(old.graph, val_map))
    tensors = _shared(old, graph)
    spaces = plan.graph.spaces
    latest: dict = {}
    for space, entry in spaces.base.items():
        (node, _), dim = space
        if entry is None or node.op != "get_attr":
            continue
        dead = plan.removed[plan.graph.labels[spaces.ids(space)]]
        if dead.any():
            name = f"_lazy_dead_{len(tensors)}"
            tensors[name] = torch.as_tensor(dead.nonzero()[0], dtype=torch.long)
            at = latest.get(node, val_map[node])
            latest[node] = _insert(graph, at, torch.ops.aten.index_fill.int_Scalar, dim, name, (0,))
    return _rebuild(old, graph, tensors)

"""The block-removal pass: a Captured and block names in, a new Captured without those blocks out.

For each block, every use of its output is replaced by its input (a layer: `y := x`; a
residual branch: `s + b := s`), later blocks first so that chained blocks resolve to the
earliest surviving value. Nodes that lose their last user are erased (the input graph's own
unused nodes, such as export's unread `get_attr`s of a tied weight's other names, stay), and
the parameters, buffers and constants nothing reads any more leave the module
(graphprune.depth.graphs.dropped_targets), so `count_params` and `state_dict` drop them.
Node metadata is copied unchanged: every surviving value keeps its shape, so the dependency
graph and the planner run on the result. The input graph and its tensors are not touched.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

import torch
import torch.fx as fx

from graphprune.capture.trace import Captured
from graphprune.depth.find import Block, find_blocks
from graphprune.depth.graphs import alias_chain, attribute, dropped_targets, written
from graphprune.errors import InputError, RewriteError
from graphprune.rewrite.rewriter import _assign, _kind

log = logging.getLogger(__name__)


def resolve(captured: Captured, blocks: Iterable[Block | str]) -> list[Block]:
    """Blocks by name (or as found); a name that is not a removable block is refused."""
    found = {b.name: b for b in find_blocks(captured)}
    chosen = []
    for item in blocks:
        name = item.name if isinstance(item, Block) else str(item)
        if name not in found:
            known = ", ".join(found) or "none"
            raise InputError(f"{name!r} is not a removable block of this model; removable blocks: {known}")
        if found[name] not in chosen:
            chosen.append(found[name])
    return chosen


def remove_blocks(captured: Captured, blocks: Iterable[Block | str], *, share: bool = False) -> Captured:
    """A new Captured with `blocks` (Block objects or their names) removed.

    The result holds copies of the kept tensors; `share=True` reuses the input's tensors
    instead (cheaper, for a pass such as the rewriter that copies them anyway).
    """
    chosen = resolve(captured, blocks)
    old = captured.module
    graph = fx.Graph()
    graph._codegen = copy.copy(old.graph._codegen)
    val_map: dict = {}
    graph.output(graph.graph_copy(old.graph, val_map))
    by_name = {n.name: n for n in old.graph.nodes}
    order = {n: k for k, n in enumerate(old.graph.nodes)}
    for block in sorted(chosen, key=lambda b: order[by_name[b.output]], reverse=True):
        _bypass(graph, val_map[by_name[block.output]], val_map[by_name[block.input]])
    owned = {val_map[by_name[name]] for b in chosen for name in b.nodes}
    dead = _eliminate(graph, val_map, owned)
    dropped = set(dropped_targets(old, dead, {b.name for b in chosen if b.kind == "layer"}))
    _check_gone(chosen, dropped, graph)
    for node in list(graph.nodes):
        if node.op == "get_attr" and node.target in dropped and not node.users:
            graph.erase_node(node)
    module = _module(old, graph, dropped, share)
    log.info("removed %d blocks: %d nodes, %d tensors", len(chosen), len(dead), len(dropped))
    return Captured(module=module, args=captured.args, kwargs=captured.kwargs, dynamic_batch=captured.dynamic_batch)


def _bypass(graph: fx.Graph, out: fx.Node, value: fx.Node) -> None:
    """Make every user of `out` read `value`.

    An in-place op that wrote into `out` (`relu_` after a residual add) would now write into
    `value`, which other nodes read: it gets a copy of `value` instead, unless `out` was
    `value` written in place (`x += f(x)`), where writing into `value` is what happened before.
    """
    if value not in alias_chain(out) and any(out in written(u) for u in out.users):
        with graph.inserting_after(value):
            copied = graph.call_function(torch.ops.aten.clone.default, (value,))
        copied.meta = dict(value.meta)
        value = copied
    out.replace_all_uses_with(value)


def _eliminate(graph: fx.Graph, val_map: dict, owned: set) -> set:
    """Erase the blocks' own nodes (in-place ones and checks such as `_assert_tensor_metadata` too)
    and pure nodes that lost their last user; return the input graph's nodes whose copies went."""
    back = {new: n for n, new in val_map.items()}
    dead = set()
    for node in reversed(list(graph.nodes)):
        orig = back.get(node)
        if orig is None or node.users or node.op in ("placeholder", "output"):
            continue
        if node in owned or (orig.users and not node.is_impure()):
            graph.erase_node(node)
            dead.add(orig)
    return dead


def _check_gone(chosen: list[Block], dropped: set, graph: fx.Graph) -> None:
    """Postcondition: every tensor a removed block owned leaves the model."""
    for block in chosen:
        left = [t for t in block.params if t not in dropped]
        if left:
            readers = [n.name for n in graph.nodes if n.op == "get_attr" and n.target == left[0] for n in n.users]
            raise RewriteError(f"removing {block.describe()} leaves {left[0]} read by {', '.join(readers) or 'nothing'}; "
                               "this is a graphprune bug, please report it")


def _module(old: fx.GraphModule, graph: fx.Graph, dropped: set, share: bool) -> fx.GraphModule:
    root = torch.nn.Module()
    made: dict[int, object] = {}  # id of an input tensor -> its copy (tied names stay one tensor)
    names = [*dict(old.named_parameters(remove_duplicate=False)), *dict(old.named_buffers(remove_duplicate=False))]
    names += [n.target for n in graph.nodes if n.op == "get_attr" and n.target not in names]
    for target in names:
        if target in dropped:
            continue
        obj = attribute(old, target)
        if id(obj) not in made:
            made[id(obj)] = obj if share else _copy(obj)
        kind, persistent = _kind(old, target)
        if isinstance(obj, torch.nn.Module):
            *path, leaf = target.split(".")
            _holder(root, path).add_module(leaf, made[id(obj)])
        else:
            _assign(root, target, made[id(obj)], kind, persistent)
    module = fx.GraphModule(root, graph, class_name=type(old).__name__)
    for target in names:  # names no node reads (tied aliases, num_batches_tracked) are not copied by fx
        if target not in dropped and not isinstance(made[id(attribute(old, target))], torch.nn.Module):
            try:
                attribute(module, target)
            except AttributeError:
                _assign(module, target, made[id(attribute(old, target))], *_kind(old, target))
    module._in_spec = old._in_spec
    module._out_spec = old._out_spec
    module.meta.update(old.meta)
    module.train(old.training)
    module.graph.lint()
    module.recompile()
    return module


def _copy(obj):
    if isinstance(obj, torch.nn.Module):
        return copy.deepcopy(obj)
    if isinstance(obj, torch.nn.Parameter):
        return torch.nn.Parameter(obj.detach().clone(), requires_grad=obj.requires_grad)
    return obj.detach().clone() if isinstance(obj, torch.Tensor) else copy.deepcopy(obj)


def _holder(root: torch.nn.Module, path: list) -> torch.nn.Module:
    mod = root
    for part in path:
        if not hasattr(mod, part):
            mod.add_module(part, torch.nn.Module())
        mod = getattr(mod, part)
    return mod

"""Stage 4, the rewriter: a plan in, a new dense model out.

Every parameter and buffer the graph reads is sliced along each dim by the kept
indices of that dim's space (one generic rule, since every parameter dim is a space:
conv, linear, norm, embedding and PReLU weights need no code of their own). Node
arguments that carry sizes are rewritten by the op rule's `rewrite` hook from the new
shapes. The result is a fresh torch.fx.GraphModule (a graphprune.rewrite.pruned.PrunedModule, so
torch's exporters and tracers take it) with the user's calling convention and parameter names;
nothing is shared with, or changed in, the input model. It trains like the original (batch
norm and dropout follow train()/eval()) and takes forward hooks by the original's submodule
names (graphprune.rewrite.trainable).
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.fx as fx

from graphprune.errors import RewriteError, describe
from graphprune.importance import parameter
from graphprune.plan.types import Plan
from graphprune.rewrite.lazy import lazy_module as _lazy
from graphprune.rewrite.pruned import as_pruned
from graphprune.rewrite.trainable import make_trainable
from graphprune.rules import RewriteContext, lookup
from graphprune.rules.spaces import shape_of

log = logging.getLogger(__name__)


def _assign(root: torch.nn.Module, target: str, tensor: torch.Tensor, kind: str, persistent: bool) -> torch.Tensor:
    """Register `tensor` at `target` (a Parameter is registered as itself, so ties survive)."""
    *path, name = target.split(".")
    mod = root
    for part in path:
        if not hasattr(mod, part):
            mod.add_module(part, torch.nn.Module())
        mod = getattr(mod, part)
    if kind == "parameter":
        if not isinstance(tensor, torch.nn.Parameter):
            tensor = torch.nn.Parameter(tensor, requires_grad=tensor.requires_grad)
        mod.register_parameter(name, tensor)
    elif kind == "buffer":
        mod.register_buffer(name, tensor, persistent=persistent)
    else:
        setattr(mod, name, tensor)
    return tensor


def _owner(module: torch.nn.Module, target: str) -> tuple[torch.nn.Module, str]:
    *path, name = target.split(".")
    mod = module
    for part in path:
        mod = getattr(mod, part)
    return mod, name


def _kind(module: torch.nn.Module, target: str) -> tuple[str, bool]:
    mod, name = _owner(module, target)
    if name in mod._parameters:
        return "parameter", True
    if name in mod._buffers:
        return "buffer", name not in mod._non_persistent_buffers_set
    return "constant", False


def _sliced(plan: Plan, node: fx.Node, tensor: torch.Tensor, share: bool = False) -> torch.Tensor:
    """A new tensor (never a view of the user's, unless `share` and nothing is cut) holding the kept
    indices of every dim."""
    out, copied = tensor.detach(), False
    for dim in range(out.dim()):
        keep = plan.kept(((node, None), dim))
        if keep is not None:
            out = out.index_select(dim, torch.as_tensor(keep, dtype=torch.long, device=out.device))
            copied = True
    return out if copied or share else out.clone()


def _new_root(plan: Plan, gm: fx.GraphModule, tensors: dict, release: bool = False) -> torch.nn.Module:
    root = torch.nn.Module()
    used = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.users:  # export leaves unread get_attrs for a tied weight's other names
            used[node.target] = node
    names = dict(gm.named_parameters(remove_duplicate=False))
    names.update(dict(gm.named_buffers(remove_duplicate=False)))
    made: dict[int, torch.Tensor] = {}  # id of the user's tensor -> its new tensor (tied weights)
    order = list(used) + [t for t in names if t not in used]
    last = _last_reads(gm, order, tensors) if release else {}
    for k, target in enumerate(order):
        tensor = tensors[target] if target in tensors else parameter(gm, target)
        if isinstance(tensor, torch.nn.Module):  # subgraphs of higher-order ops: copied whole
            *path, name = target.split(".")
            holder = root
            for part in path:
                if not hasattr(holder, part):
                    holder.add_module(part, torch.nn.Module())
                holder = getattr(holder, part)
            holder.add_module(name, copy.deepcopy(tensor))
            continue
        if not isinstance(tensor, torch.Tensor):
            continue
        kind, persistent = _kind(gm, target)
        new = _sliced(plan, used[target], tensor, share=release) if target in used else None
        tied = made.get(id(tensor))
        if tied is not None and (new is None or (new.shape == tied.shape and torch.equal(new, tied))):
            new = tied  # another name of a tensor already rewritten: keep them one tensor
        elif new is None:
            new = tensor.detach() if release else tensor.detach().clone()
        if kind == "parameter" and new is not tied:
            new.requires_grad_(tensor.requires_grad)
        made.setdefault(id(tensor), _assign(root, target, new, kind, persistent))
        if last.get(_storage(tensor)) == k and new.untyped_storage().data_ptr() != _storage(tensor):
            tensor.untyped_storage().resize_(0)  # release: its last reader is done; the memory goes back now
    return root


def _storage(tensor) -> int | None:
    return tensor.untyped_storage().data_ptr() if isinstance(tensor, torch.Tensor) else None


def _last_reads(gm: fx.GraphModule, order: list[str], tensors: dict) -> dict:
    """Storage of each tensor -> the position in `order` of the last name that reads it."""
    last = {}
    for k, target in enumerate(order):
        tensor = tensors[target] if target in tensors else parameter(gm, target)
        if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().nbytes():
            last[_storage(tensor)] = k
    return last


def rewrite(plan: Plan, tensors: dict | None = None, lazy: bool = False, release: bool = False) -> fx.GraphModule:
    """Build the pruned model described by `plan`.

    `lazy`: a model that slices the captured module's own tensors when it runs (graphprune.rewrite.lazy),
    for checks that must not hold a second copy of a large model's weights. `release`: free each of
    the captured module's tensors (hence the user's model's, which they are) as soon as its slice is
    made, so that the pruned model is built in the original's memory: the original is unusable after.

    `tensors` (name -> tensor) stands in for the captured module's parameters and buffers of those
    names (the dead-channel oracle passes zeroed copies): the captured module is never changed.
    """
    old = plan.graph.captured.module
    graph = fx.Graph()
    graph._codegen = copy.copy(old.graph._codegen)
    val_map: dict = {}
    out = graph.graph_copy(old.graph, val_map)
    graph.output(out)

    def new_shape(value) -> tuple:
        shape = list(shape_of(value))
        for d in range(len(shape)):
            keep = plan.kept((value, d)) if isinstance(shape[d], int) else None
            if keep is not None:
                shape[d] = len(keep)
        return tuple(shape)

    constants: dict = {}
    for node in old.graph.nodes:
        found = lookup(node) if node.op == "call_function" else None
        if found is None or found.rewrite is None:
            continue
        try:
            found.rewrite(RewriteContext(node, val_map[node], new_shape, plan.kept, val_map, constants))
        except Exception as exc:  # noqa: BLE001 - re-raised with the node named
            raise RewriteError(f"cannot rewrite {describe(node)} for the pruned shapes: {exc}") from exc
    if lazy:
        return _lazy(plan, old, graph, val_map, constants)
    root = _new_root(plan, old, tensors or {}, release)
    for name, tensor in constants.items():
        root.register_buffer(name, tensor)
    pruned = fx.GraphModule(root, graph, class_name=type(old).__name__)
    for target, tensor in list(root.state_dict(keep_vars=True).items()):
        mod, name = _owner(pruned, target) if _has(pruned, target) else (None, None)
        if mod is None:
            kind, persistent = _kind(root, target)
            _assign(pruned, target, tensor, kind, persistent)
    pruned._in_spec = old._in_spec
    pruned._out_spec = old._out_spec
    pruned.meta["graphprune_dynamic_batch"] = old.meta.get("graphprune_dynamic_batch", False)
    return as_pruned(make_trainable(pruned))


def _has(module: torch.nn.Module, target: str) -> bool:
    try:
        parameter(module, target)
    except AttributeError:
        return False
    return True

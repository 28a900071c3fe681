"""What a model costs: parameters and multiply-accumulates (MACs) for one forward.

MACs come from torch's own FlopCounterMode (MACs = FLOPs / 2) on the example input,
so every op torch counts is counted, for the original and the pruned model alike. Both
run in eval mode (the user's model is put back in its mode after). Only the total is read,
so the counter runs without its per-module attribution (`totals_counter`): that part hooks
autograd on module inputs and fails on some models (timm's PiT and CaiT after pruning),
and counting cost must never fail a prune.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count

_CPU_SDPA = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
if _CPU_SDPA is not None and _CPU_SDPA not in flop_registry:  # torch counts the GPU kernels only

    @register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _NoModules:
    """Stands in for FlopCounterMode's ModuleTracker: every op is counted under 'Global' only.

    The tracker registers autograd hooks on every module's tensor inputs that require grad
    (`register_multi_grad_hook`), which raises "Expected gradient function to be set" for a view
    of a parameter taken under no_grad and passed to a submodule (PiT's and CaiT's expanded class
    token, once the pruned graph calls its blocks with it). Per-module counts are never read here.
    """

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        return None


def totals_counter() -> FlopCounterMode:
    """A FlopCounterMode that counts every op it knows into its total and tracks no modules."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModules()
    return counter


def count_macs(model: torch.nn.Module, args: tuple, kwargs: dict | None = None) -> int:
    from graphprune.capture.modes import eval_mode

    counter = totals_counter()
    with eval_mode(model), counter, torch.no_grad():
        model(*args, **(kwargs or {}))
    return int(counter.get_total_flops() // 2)


def symbol_values(captured) -> dict:
    """Symbolic input sizes (batch, sequence) -> their values in the user's example input."""
    from torch.utils import _pytree as pytree

    placeholders = [n for n in captured.graph.nodes if n.op == "placeholder"]
    given = pytree.tree_flatten((captured.args, captured.kwargs))[0]
    values = {}
    for node, arg in zip(placeholders, given, strict=False):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or not isinstance(arg, torch.Tensor):
            continue
        for size, actual in zip(val.shape, arg.shape, strict=False):
            if not isinstance(size, int) and getattr(size.node.expr, "is_Symbol", False):
                values[size.node.expr] = int(actual)
    return values


def _concrete(size, symbols: dict) -> int:
    """A size as an int: symbolic sizes (batch, sequence) at the example's value."""
    if isinstance(size, int):
        return size
    try:
        return int(size.node.expr.xreplace(symbols))
    except (AttributeError, TypeError):
        return int(size.node.hint)


def _kept_shape(plan, value, symbols: dict) -> tuple:
    from graphprune.rules.spaces import shape_of

    shape = list(shape_of(value))
    spaces, labels, removed = plan.graph.spaces, plan.graph.labels, plan.removed
    for d in range(len(shape)):
        entry = spaces.base.get((value, d))
        if entry is not None:
            start, size = entry
            kept = int((~removed[labels[start:start + size]]).sum())
            shape[d] = kept if isinstance(shape[d], int) else _concrete(shape[d], symbols) * kept // size
        else:
            shape[d] = _concrete(shape[d], symbols)
    return tuple(shape)


def plan_macs(plan) -> int:
    """MACs of the model `plan` would make, from the op rules' cost formulas and the kept sizes
    of every dim: no rewrite, no forward pass. Equals count_macs of the rewritten model."""
    from graphprune.rules import lookup

    total = 0
    symbols = symbol_values(plan.graph.captured)
    for node in plan.graph.captured.graph.nodes:
        found = lookup(node) if node.op == "call_function" else None
        if found is None or found.cost is None:
            continue
        total += int(found.cost(node, lambda a: _kept_shape(plan, a if isinstance(a, tuple) else (a, None), symbols)))
    return total


def graph_macs(plan) -> tuple[int, int] | None:
    """(MACs of the captured model, MACs of the model `plan` makes), counted on the captured graph.

    An op with a cost formula (graphprune.rules) is counted by it; any other op is run once on meta
    tensors (no data, no compute) under torch's FlopCounterMode at the original's shapes, and again
    at the kept shapes when it counts anything: so every op torch would count in a forward pass is
    counted, as count_macs does. None when some op cannot run on meta tensors (count by a forward
    pass then).
    """
    from graphprune.rules import lookup

    symbols = symbol_values(plan.graph.captured)
    full = dataclasses.replace(plan, removed=np.zeros_like(plan.removed))
    totals = [0, 0]
    for node in plan.graph.captured.graph.nodes:
        if node.op != "call_function":
            continue
        found = lookup(node)
        for k, which in enumerate((full, plan)):
            def shape(a, which=which):
                return _kept_shape(which, a if isinstance(a, tuple) else (a, None), symbols)

            if found is not None and found.cost is not None:
                totals[k] += int(found.cost(node, shape))
                continue
            macs = _probe(node, shape, symbols)
            if macs is None:
                return None
            totals[k] += macs
            if k == 0 and macs == 0:  # counts nothing at the original's shapes: a shape-only or elementwise op
                break
    return totals[0], totals[1]


_PROBED: dict = {}  # (op, argument signature) -> MACs; ops recur with the same shapes within and across models


def _may_count(op) -> bool:
    """Whether FlopCounterMode can count anything for `op`: a counted op, or a composite one it decomposes
    (an op with a kernel of its own and no formula in torch's registry counts nothing)."""
    packet = getattr(op, "_overloadpacket", None)
    if packet is None:
        return False
    if packet in flop_registry:
        return True
    return torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CompositeImplicitAutograd")


def _probe(node, shape, symbols: dict) -> int | None:
    """MACs torch's FlopCounterMode counts for one node run on meta tensors of `shape`'s sizes."""
    from torch.fx.node import map_aggregate

    if not _may_count(node.target):
        return 0

    def meta(a):
        if isinstance(a, torch.fx.Node):
            val = a.meta.get("val")
            if isinstance(val, torch.Tensor):
                return torch.empty(shape(a), dtype=val.dtype, device="meta")
            if isinstance(val, (list, tuple)):
                return [torch.empty(shape((a, k)), dtype=v.dtype, device="meta") if isinstance(v, torch.Tensor) else v
                        for k, v in enumerate(val)]
            a = val
        if isinstance(a, torch.SymInt):
            return _concrete(a, symbols)
        return torch.device("meta") if isinstance(a, torch.device) else a

    args, kwargs = map_aggregate((node.args, dict(node.kwargs)), meta)
    key = (node.target, repr(map_aggregate((args, kwargs), _signature)))
    if key not in _PROBED:
        if len(_PROBED) > 65536:
            _PROBED.clear()
        counter = FlopCounterMode(display=False)
        try:
            with counter:
                node.target(*args, **kwargs)
        except Exception:  # noqa: BLE001 - no meta kernel, a size list that no longer fits: counted by a forward pass
            return None
        _PROBED[key] = int(counter.get_total_flops() // 2)
    return _PROBED[key]


def _signature(a):
    return ("tensor", tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a


def plan_params(plan) -> int:
    """Parameters of the model `plan` would make (a tied weight counted once)."""
    from graphprune.importance import parameter

    module = plan.graph.captured.module
    seen, total = set(), 0
    for node in plan.graph.captured.graph.nodes:
        if node.op != "get_attr":
            continue
        tensor = parameter(module, node.target)
        if not isinstance(tensor, torch.nn.Parameter) or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        n = 1
        for s in _kept_shape(plan, (node, None), {}):
            n *= s
        total += n
    return total + sum(p.numel() for p in module.parameters() if id(p) not in seen)

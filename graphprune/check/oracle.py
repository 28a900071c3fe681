"""The dead-channel oracle: pruning channels that contribute nothing changes nothing.

For a plan, every parameter slice that belongs to a removed channel is set to zero (`killed`
makes zeroed copies; the check itself zeroes them as the model runs, graphprune.rewrite.lazy, so that a
large model is not copied; neither the captured module nor the user's model is touched). Those channels are
then dead: a zero weight column reads nothing from them, zero rows and norm affine parameters
write nothing into them. Pruning them must leave every output equal to the zeroed model's; the
pruned model of the check slices the captured tensors as it runs (`rewrite(plan, lazy=True)`). Channels whose removal is
inexact by nature (LayerNorm statistics, sums after a nonlinearity) are left out of the check: it
runs on `plan.exact()`. `shrink` runs it on every model it returns. Selections (`topk`, `sort`,
`argmax`, ...) are checked by the values they pick and then follow the reference's choice
(graphprune/check/selections.py): rounding may reorder ties, which is not a pruning error.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from graphprune.capture.pytrees import state_leaves
from graphprune.check import verify
from graphprune.check.selections import SELECTIONS, Pinned
from graphprune.importance import parameter
from graphprune.plan.types import Plan
from graphprune.rewrite.lazy import zeroed_module
from graphprune.rewrite.rewriter import rewrite


def killed(plan: Plan) -> dict[str, torch.Tensor]:
    """name -> a zeroed copy of every parameter and buffer that holds a removed channel's slice.

    Every name of a tied weight maps to the one zeroed copy.
    """
    module = plan.graph.captured.module
    spaces = plan.graph.spaces
    names = _names_by_tensor(module)
    made: dict[int, torch.Tensor] = {}
    for space, entry in spaces.base.items():
        (node, _), dim = space
        if entry is None or node.op != "get_attr":
            continue
        dead = plan.removed[plan.graph.labels[spaces.ids(space)]]
        if not dead.any():
            continue
        old = parameter(module, node.target)
        new = made.get(id(old))
        if new is None:
            new = made[id(old)] = old.detach().clone()
        new.index_fill_(dim, torch.as_tensor(dead.nonzero()[0]), 0)
    out = {}
    for key, new in made.items():
        for target in names.get(key, []):
            out[target] = new
    return out


def _names_by_tensor(module: torch.nn.Module) -> dict[int, list[str]]:
    """id of each parameter and buffer -> every name `module` holds it under (a tied weight has several)."""
    names: dict[int, list[str]] = {}
    for name, tensor in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(tensor), []).append(name)
    return names


def zeroed_outputs(plan: Plan) -> tuple[dict, object]:
    """({}, the captured model's outputs with the plan's exact channels zeroed as it runs): no copy of a
    weight (graphprune.rewrite.lazy); the kept slices of zeroed tensors are the original's, so pruning
    needs no zeroed tensors either."""
    exact = plan.exact()
    captured = plan.graph.captured
    with torch.no_grad(), verify.eval_mode(captured.module):
        return {}, zeroed_module(exact)(*captured.args, **captured.kwargs)


def dead_channel_check(plan: Plan, atol: float = 1e-4, rtol: float = 1e-4, built: tuple | None = None,
                       zeroed: tuple | None = None, lazy: bool = False) -> torch.nn.Module:
    """Zero the plan's exact channels, prune them, and assert the outputs did not change: within
    `atol` of each output's largest magnitude (a 6-layer transformer in float32 drifts by about
    1e-5 of it when widths change; a wrong index moves outputs by their own size), plus `rtol`; both at
    least 8 units of rounding of the outputs' dtype (bfloat16, float16: `_precision_floor`).

    `built`: (the model `rewrite(plan)` made, its outputs on the example input), already at hand
    (graphprune.shrink has them). Slicing drops every zeroed entry, so for an exact plan that model
    is the one pruning the zeroed tensors would make, and it is checked without a second rewrite and
    forward pass (unless a parameter is read by several nodes, whose kept slices may differ).
    `zeroed`: what `zeroed_outputs(plan)` returned, when the caller has it. `lazy`: a model built here
    slices the captured tensors as it runs (no copy of the weights; `release_model` checks this way).

    Returns the pruned model (of the exact part of the plan). Raises VerificationError.
    """
    exact = plan.exact()
    captured = plan.graph.captured
    if any(n.op == "call_function" and n.target in SELECTIONS for n in captured.graph.nodes):
        killed_tensors = killed(exact)
        pruned = rewrite(exact, tensors=killed_tensors)
        reference, output = _with_selections_pinned(exact, killed_tensors, pruned, atol)
        floor = _precision_floor(reference)
        verify.check_equal(reference, output, atol=max(atol, floor), rtol=max(rtol, floor), scaled=True)
        return pruned
    tensors, reference = zeroed or zeroed_outputs(plan)
    if built is not None and not (exact.removed != plan.removed).any() and _read_once(captured.module):
        pruned, output = built
    else:
        pruned = rewrite(exact, tensors=tensors or None, lazy=lazy)
        output = verify.run(pruned, captured.args, captured.kwargs)
    reference = _narrowed(exact, reference)
    floor = _precision_floor(reference)
    verify.check_equal(reference, output, atol=max(atol, floor), rtol=max(rtol, floor), scaled=True)
    return pruned


def _read_once(module: torch.fx.GraphModule) -> bool:
    """Whether every parameter and buffer is read by at most one node (a tied weight read under two
    names could be sliced two ways)."""
    readers: dict[int, int] = {}
    for node in module.graph.nodes:
        if node.op == "get_attr" and node.users:
            key = id(parameter(module, node.target))
            readers[key] = readers.get(key, 0) + 1
    return all(n == 1 for n in readers.values())


def _precision_floor(outputs) -> float:
    """8 units of rounding of the coarsest floating output dtype: a bfloat16 model summed in another order
    (narrower matrices) moves its outputs by a few of them (measured: logits of a 4-layer, 4096-wide
    bfloat16 LLaMA moved by 0.0625), while a wrong index moves them by their own size."""
    dtypes = {t.dtype for t in pytree.tree_leaves(outputs) if isinstance(t, torch.Tensor) and t.is_floating_point()}
    return max((8 * torch.finfo(d).eps for d in dtypes), default=0.0)


def _narrowed(plan: Plan, reference):
    """The zeroed model's outputs with the kept indices of every output dim that may narrow (a KV
    cache, graphprune.capture.pytrees): the pruned model must return exactly those."""
    leaves, spec = pytree.tree_flatten(reference)
    outputs = next(n for n in plan.graph.captured.graph.nodes if n.op == "output").args[0]
    for i, inside in enumerate(state_leaves(spec)):
        if not inside or not isinstance(leaves[i], torch.Tensor) or not isinstance(outputs[i], fx.Node):
            continue
        for dim in range(leaves[i].dim()):
            keep = plan.kept(((outputs[i], None), dim))
            if keep is not None:
                leaves[i] = leaves[i].index_select(dim, torch.as_tensor(keep, dtype=torch.long))
    return pytree.tree_unflatten(leaves, spec)


def _with_selections_pinned(plan: Plan, zeroed: dict, pruned, atol: float) -> tuple:
    """(reference outputs, pruned outputs), flat, the pruned graph following the reference's selections."""
    captured = plan.graph.captured
    first = Pinned(captured.module, tensors=zeroed)
    reference = first.outputs(captured.args, captured.kwargs)
    with verify.eval_mode(pruned):
        got = Pinned(pruned, recorded=first.picks, plan=plan, atol=atol).outputs(captured.args, captured.kwargs)
    return reference, got

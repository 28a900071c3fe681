"""The dead-channel oracle: pruning channels that contribute nothing changes nothing.

For a plan, every parameter slice that belongs to a removed channel is set to zero in copies of
those tensors (neither the captured module nor the user's model is touched). Those channels are
then dead: a zero weight column reads nothing from them, zero rows and norm affine parameters
write nothing into them. Pruning them must leave every output equal to the zeroed model's, which
is run with the zeroed copies through `torch.func.functional_call`. Channels whose removal is
inexact by nature (LayerNorm statistics, sums after a nonlinearity) are left out of the check: it
runs on `plan.exact()`. `shrink` runs it on every model it returns. Selections (`topk`, `sort`,
`argmax`, ...) are checked by the values they pick and then follow the reference's choice
(graphprune/check/selections.py): rounding may reorder ties, which is not a pruning error.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from graphprune.check import verify
from graphprune.check.selections import SELECTIONS, Pinned
from graphprune.importance import parameter
from graphprune.plan.types import Plan
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


def dead_channel_check(plan: Plan, atol: float = 1e-4, rtol: float = 1e-4) -> torch.nn.Module:
    """Zero the plan's exact channels, prune them, and assert the outputs did not change: within
    `atol` of each output's largest magnitude (a 6-layer transformer in float32 drifts by about
    1e-5 of it when widths change; a wrong index moves outputs by their own size), plus `rtol`.

    Returns the pruned model (of the exact part of the plan). Raises VerificationError.
    """
    plan = plan.exact()
    captured = plan.graph.captured
    zeroed = killed(plan)
    pruned = rewrite(plan, tensors=zeroed)
    if any(n.op == "call_function" and n.target in SELECTIONS for n in captured.graph.nodes):
        reference, got = _with_selections_pinned(plan, zeroed, pruned, atol)
    else:
        with torch.no_grad():
            reference = functional_call(captured.module, zeroed, captured.args, captured.kwargs, strict=False)
        got = verify.run(pruned, captured.args, captured.kwargs)
    verify.check_equal(reference, got, atol=atol, rtol=rtol, scaled=True)
    return pruned


def _with_selections_pinned(plan: Plan, zeroed: dict, pruned, atol: float) -> tuple:
    """(reference outputs, pruned outputs), flat, the pruned graph following the reference's selections."""
    captured = plan.graph.captured
    first = Pinned(captured.module, tensors=zeroed)
    reference = first.outputs(captured.args, captured.kwargs)
    with verify.eval_mode(pruned):
        got = Pinned(pruned, recorded=first.picks, plan=plan, atol=atol).outputs(captured.args, captured.kwargs)
    return reference, got

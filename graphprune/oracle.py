"""The dead-channel oracle: pruning channels that contribute nothing changes nothing.

For a plan, every parameter slice that belongs to a removed channel is set to zero in
the captured model (a copy: the user's model is not touched). Those channels are then
dead: a zero weight column reads nothing from them, zero rows and norm affine
parameters write nothing into them. Pruning them must leave every output equal to the
zeroed model's. Channels whose removal is inexact by nature (LayerNorm statistics, sums
after a nonlinearity) are left out of the check: it runs on `plan.exact()`.
"""

from __future__ import annotations

import torch

from graphprune import verify
from graphprune.importance import parameter
from graphprune.planner import Plan
from graphprune.rewriter import _assign, _kind, rewrite


def kill(plan: Plan) -> None:
    """Zero the removed channels' parameter slices in the captured module (replacing tensors)."""
    module = plan.graph.captured.module
    spaces = plan.graph.spaces
    names = _names_by_tensor(module)
    for space, entry in spaces.base.items():
        (node, _), dim = space
        if entry is None or node.op != "get_attr":
            continue
        dead = plan.removed[plan.graph.labels[spaces.ids(space)]]
        if not dead.any():
            continue
        old = parameter(module, node.target)
        new = old.detach().clone()
        new.index_fill_(dim, torch.as_tensor(dead.nonzero()[0]), 0)
        if isinstance(old, torch.nn.Parameter):
            new = torch.nn.Parameter(new, requires_grad=old.requires_grad)
        targets = names.pop(id(old), [node.target])
        for target in targets:  # every name of a tied weight gets the one new tensor
            _assign(module, target, new, *_kind(module, target))
        names[id(new)] = targets


def _names_by_tensor(module: torch.nn.Module) -> dict[int, list[str]]:
    """id of each parameter and buffer -> every name `module` holds it under (a tied weight has several)."""
    names: dict[int, list[str]] = {}
    for name, tensor in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(tensor), []).append(name)
    return names


def dead_channel_check(plan: Plan, atol: float = 1e-5, rtol: float = 1e-4) -> torch.nn.Module:
    """Kill the plan's exact channels, prune them, and assert the outputs did not change.

    Returns the pruned model (of the exact part of the plan).
    """
    plan = plan.exact()
    kill(plan)
    captured = plan.graph.captured
    reference = verify.run(captured.module, captured.args, captured.kwargs)
    pruned = rewrite(plan)
    verify.check_equal(reference, verify.run(pruned, captured.args, captured.kwargs), atol=atol, rtol=rtol)
    return pruned

"""The checks every model shrink returns has passed: it runs on the example input with the original's output
structure (equal outputs when nothing was removed), and the dead-channel oracle on its plan.
"""

from __future__ import annotations

from typing import Any

import torch

from graphprune.check import verify
from graphprune.check.oracle import dead_channel_check
from graphprune.errors import InputError, VerificationError, first_line
from graphprune.plan.types import Plan


def verified(plan: Plan, pruned: torch.nn.Module, reference, got=None) -> str:
    """Run the pruned model on the example input (unless its outputs `got` are given) and check it
    against the original's outputs `reference`."""
    captured = plan.graph.captured
    if got is None:
        got = verify.run(pruned, captured.args, captured.kwargs)
    if plan.removed.any():
        verify.check_structure(reference, got)
        return "output structure and shapes match the original"
    verify.check_equal(reference, got)
    return "nothing removed; outputs equal the original"


def run_original(model: torch.nn.Module, args: tuple, kwargs: dict):
    """Run the user's model on the example input; a failure is the user's input's fault."""
    try:
        return verify.run(model, args, kwargs)
    except Exception as exc:  # noqa: BLE001 - reported as one line naming the cause
        raise InputError(
            f"the model rejects the example input ({type(exc).__name__}: {first_line(exc)}); "
            "pass an input of the shape and dtype the model expects"
        ) from exc


def run_checks(chosen: Plan, pruned, reference, dead_channels: bool, clock, as_rewritten: bool = True) -> tuple[list, Any]:
    """Run the product's checks on a pruned model: (checks, each {check, passed, detail}; the pruned model's
    outputs on the example input); raise on failure.

    The pruned model runs once: its outputs serve the structure check and, when the model is still as
    the rewriter made it (`as_rewritten`), the dead-channel oracle. A model whose weights or statistics
    changed after the rewrite (BatchNorm re-estimated, refit) is not what pruning the zeroed original
    gives: the oracle then rewrites the plan itself."""
    checks = []
    try:
        with clock("verify"):
            got = verify.run(pruned, chosen.graph.captured.args, chosen.graph.captured.kwargs)
            checks.append({"check": "runs", "passed": True, "detail": verified(chosen, pruned, reference, got)})
    except VerificationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to run is a verification failure
        raise VerificationError(f"the pruned model does not run: {first_line(exc)}") from exc
    if dead_channels:
        with clock("oracle"):
            checks.extend(oracle_checks(chosen, built=(pruned, got) if as_rewritten else None))
    return checks, got


def stamp(model: torch.nn.Module) -> tuple:
    """What changes when any parameter or buffer is replaced or written in place (torch's version counters):
    equal stamps mean outputs measured in between still hold."""
    return tuple((id(t), t._version) for t in model.state_dict(keep_vars=True).values())


def oracle_checks(chosen: Plan, built: tuple | None = None) -> list[dict]:
    """The dead-channel check of a plan as a list of zero or one check entries; raises on failure.
    `built`: (pruned model, its outputs), to reuse (graphprune.check.oracle.dead_channel_check)."""
    if not chosen.exact().removed.any():
        return []
    try:
        dead_channel_check(chosen, built=built, lazy=True)  # no second copy of the weights
    except VerificationError as exc:
        raise VerificationError(f"dead-channel check failed ({exc}); this is a graphprune bug, please report it") from exc
    return [{"check": "dead channels", "passed": True,
             "detail": "zeroing the removed channels and pruning them left the outputs equal"}]



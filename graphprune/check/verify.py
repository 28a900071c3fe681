"""Checks every pruned model must pass before it is handed back.

`check_structure`: the pruned model runs on the example input and its outputs have the
same pytree structure, dtypes and shapes as the original's (state the model reads back, a KV
cache, keeps its rank and dtype; its widths narrow with the model). `check_equal`: outputs are
numerically equal (used for ratio 0 and the dead-channel oracle).
"""

from __future__ import annotations

import torch
from torch.utils import _pytree as pytree

from graphprune.capture.modes import eval_mode, run  # noqa: F401 - checks run models as captured
from graphprune.capture.pytrees import state_leaves
from graphprune.errors import VerificationError


def _leaves(out) -> tuple[list, object]:
    leaves, spec = pytree.tree_flatten(out)
    return leaves, spec


def check_structure(reference, candidate) -> None:
    ref, ref_spec = _leaves(reference)
    got, got_spec = _leaves(candidate)
    state = {i for i, inside in enumerate(state_leaves(ref_spec)) if inside}
    if len(ref) != len(got):
        raise VerificationError(
            f"pruned model returns {len(got)} outputs, the original {len(ref)}; this is a graphprune bug, please report it"
        )
    for k, (a, b) in enumerate(zip(ref, got, strict=True)):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            raise VerificationError(f"output {k}: tensor/non-tensor mismatch after pruning")
        if k in state and isinstance(a, torch.Tensor) and a.dim() == b.dim() and a.dtype == b.dtype:
            continue  # a KV cache narrows with the model (graphprune.capture.pytrees)
        if isinstance(a, torch.Tensor) and (a.shape != b.shape or a.dtype != b.dtype):
            raise VerificationError(
                f"output {k}: pruned shape {tuple(b.shape)} {b.dtype} differs from the original "
                f"{tuple(a.shape)} {a.dtype}; this is a graphprune bug, please report it"
            )
    if str(ref_spec) != str(got_spec):
        raise VerificationError("pruned model's output structure differs from the original")


def check_equal(reference, candidate, atol: float = 1e-5, rtol: float = 1e-4, scaled: bool = False) -> None:
    """Outputs equal up to |a - b| <= atol + rtol |a|; `scaled`: atol is relative to the output's
    largest magnitude (deep float32 models drift by a fixed fraction of their scale)."""
    check_structure(reference, candidate)
    for k, (a, b) in enumerate(zip(_leaves(reference)[0], _leaves(candidate)[0], strict=True)):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            tol = atol * max(1.0, float(a.abs().max())) if scaled and a.numel() else atol
            if not torch.allclose(a, b, atol=tol, rtol=rtol):
                err = (a - b).abs().max().item()
                raise VerificationError(f"output {k} changed by up to {err:.3g}")

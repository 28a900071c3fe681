"""Half-precision models (bfloat16, float16) and ONNX: exported and checked in float32.

LLMs are stored in bfloat16 or float16, and graphprune prunes, fine-tunes, evaluates and saves them
in their dtype. ONNX Runtime's CPU provider, where `export_onnx` checks parity, has no bfloat16
kernels for most ops (MatMul, Gemm, Softmax, ...) and float16 ones for few, so a half-precision
model is exported from a float32 copy: every floating parameter, buffer and input cast to float32,
and every dtype constant of a captured graph (`aten.to(x, torch.bfloat16)`, `new_zeros(...,
dtype=torch.bfloat16)`) rewritten to float32, so the copy computes in float32 throughout. The ONNX
file is float32 and is checked against that float32 copy in PyTorch; the export result names the
model's own dtype (`ExportResult.source_dtype`) and says so in its notes. The user's model is not
touched.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

HALF = (torch.bfloat16, torch.float16)


def half_dtype(model: torch.nn.Module, args: tuple, kwargs: dict) -> torch.dtype | None:
    """The half-precision dtype the model computes in (its parameters' or its float inputs'), else None."""
    tensors = [*model.parameters(), *model.buffers(), *pytree.tree_leaves((args, kwargs))]
    found = {t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.dtype in HALF}
    return next(iter(sorted(found, key=str)), None)


def _to_float32(x):
    if isinstance(x, torch.Tensor) and x.dtype in HALF:
        return x.float()
    if isinstance(x, torch.dtype) and x in HALF:
        return torch.float32
    return x


def _retype_graph(module: fx.GraphModule) -> None:
    """Every half dtype constant in the graph's node arguments becomes float32 (in place, on a copy)."""
    for node in module.graph.nodes:
        node.args = pytree.tree_map(_to_float32, node.args)
        node.kwargs = pytree.tree_map(_to_float32, node.kwargs)
    module.recompile()


def as_float32(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[torch.nn.Module, tuple, dict]:
    """A float32 copy of `model` and its inputs (see the module docstring); `model` is not changed."""
    twin = copy.deepcopy(model)
    twin._apply(_to_float32)  # half tensors only: a float64 buffer stays float64
    for sub in twin.modules():
        if isinstance(sub, fx.GraphModule):
            _retype_graph(sub)
    return twin, pytree.tree_map(_to_float32, args), pytree.tree_map(_to_float32, kwargs)

"""One flat signature for every exporter: `forward(*tensors) -> tuple[Tensor, ...]` over the tensor leaves of
`(args, kwargs)` in pytree order (non-tensor leaves baked in as constants), with ONNX input and output names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

from graphprune.capture.trace import is_token_input
from graphprune.errors import ExportError, InputError
from graphprune.onnx.files import PROTO_LIMIT


class Flat(torch.nn.Module):
    """`model(*args, **kwargs)` as `forward(*tensor_leaves) -> tuple of tensor output leaves`."""

    def __init__(self, model: torch.nn.Module, spec: pytree.TreeSpec, leaves: list, slots: list[int]):
        super().__init__()
        self.model = model
        self.training = model.training  # mirror the mode; never call train() on the user's model
        self._spec, self._slots = spec, slots
        self._constants = [None if i in slots else leaf for i, leaf in enumerate(leaves)]

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves = list(self._constants)
        for slot, tensor in zip(self._slots, tensors, strict=True):
            leaves[slot] = tensor
        args, kwargs = pytree.tree_unflatten(leaves, self._spec)
        out = self.model(*args, **kwargs)
        return tuple(x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor))


@dataclass(frozen=True, eq=False)
class Job:
    """Everything an exporter and the checks need, fixed before the first exporter runs."""

    module: Flat
    tensors: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    reference: tuple[np.ndarray, ...]
    batch: int | None  # the example's batch size when the batch is exported dynamic, else None
    batch_axes: tuple[bool, ...]  # per input: dim 0 is the batch
    seq_axes: tuple[bool, ...]  # per input: dim 1 is a token sequence, exported dynamic
    traced: tuple[torch.Tensor, ...]  # what the exporters trace: `tensors`, a batch of 1 tiled to 2
    out_batch_axes: tuple[bool, ...]  # per output: dim 0 is the batch
    opset: int | None
    large: bool  # weights over the protobuf limit: exporters must write external data
    atol: float


def _clean(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _key(k: Any) -> str:
    return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))


def _input_names(paths: list[tuple]) -> tuple[str, ...]:
    """`input_0` for positional leaves, the keyword for keyword leaves, nested keys appended."""
    names = []
    for path in paths:
        keys = [_key(k) for k in path]
        head = f"input_{keys[1]}" if keys[0] == "0" else keys[1]
        names.append(_clean("_".join([head, *keys[2:]])))
    return tuple(names)


def _output_names(out: Any) -> tuple[str, ...]:
    named = [p for p, x in pytree.tree_flatten_with_path(out)[0] if isinstance(x, torch.Tensor)]
    if len(named) == 1:
        return ("output",)
    return tuple(_clean("_".join(["output", *map(_key, p)]) if p else f"output_{i}") for i, p in enumerate(named))


def run_reference(model: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
    """PyTorch's output for the parity check (a test patches this to break parity on purpose)."""
    with torch.no_grad():
        return model(*args, **kwargs)


def prepare(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_batch: bool, dynamic_sequence: bool,
             opset: int | None, atol: float) -> Job:
    with_paths, spec = pytree.tree_flatten_with_path((args, kwargs))
    leaves = [x for _, x in with_paths]
    slots = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
    if not slots:
        raise InputError("the example inputs hold no tensor; pass at least one tensor in args or kwargs")
    module = Flat(model, spec, leaves, slots)
    tensors = tuple(leaves[i] for i in slots)
    out = run_reference(model, args, kwargs)
    out_leaves = [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]
    if not out_leaves:
        raise ExportError("the model returns no tensor, so there is nothing to export; return tensors")
    batch = next((t.shape[0] for t in tensors if t.dim() > 0), None) if dynamic_batch else None
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    batch_axes = tuple(batch is not None and t.dim() > 0 and t.shape[0] == batch for t in tensors)
    return Job(
        module=module,
        tensors=tensors,
        input_names=_input_names([with_paths[i][0] for i in slots]),
        output_names=_output_names(out),
        reference=tuple(t.detach().cpu().numpy() for t in out_leaves),
        batch=batch,
        batch_axes=batch_axes,
        seq_axes=tuple(dynamic_sequence and b and is_token_input(t) for t, b in zip(tensors, batch_axes, strict=True)),
        traced=tuple(torch.cat([t, t]) if b and batch == 1 else t for t, b in zip(tensors, batch_axes, strict=True)),
        out_batch_axes=tuple(batch is not None and t.dim() > 0 and t.shape[0] == batch for t in out_leaves),
        opset=opset,
        large=weights > PROTO_LIMIT,
        atol=atol,
    )


def names(job: Job) -> dict:
    return {"input_names": list(job.input_names), "output_names": list(job.output_names), "opset_version": job.opset}


def input_names(args: tuple, kwargs: dict) -> tuple[str, ...]:
    """The ONNX input names `export_onnx` gives the tensors of `(args, kwargs)`, in pytree order."""
    with_paths, _ = pytree.tree_flatten_with_path((args, kwargs))
    return _input_names([path for path, x in with_paths if isinstance(x, torch.Tensor)])



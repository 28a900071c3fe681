"""Inputs for ONNX Runtime runs: a user's example as named arrays, or arrays made from input types.

Given arrays are tiled along a symbolic dim 0 to each batch size: row i of the batch is
row i mod n of the example. An input without a given array is made from its ONNX type and
shape: floats standard normal from a seed fixed per input name (models with the same
inputs get the same arrays), integers and bools zero (0 is a valid token id, token type,
position and mask value in every vocabulary, so embedding lookups stay in range), static
dims as they are and a symbolic dim 0 set to the batch. Any other symbolic dim (a sequence
length) has no size to take: it needs an example.

An example (a tensor, a tuple of positional inputs or a dict of keyword inputs, as
`graphprune.io.files.load_example` reads it) is matched to a model's inputs by the names
`graphprune.onnx.export` gives them (`input_0`, ... for positional inputs, the keyword for
keyword inputs); positional inputs of a model named otherwise are matched in order.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch.utils import _pytree as pytree

from graphprune.errors import InputError

DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
FIX = "pass --example-input (API: inputs=)"


def graph_inputs(path: Path) -> list[str]:
    """Names of a model's inputs that are not weights, in order."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in weights]


def check_fillable(path: Path, given: Mapping[str, np.ndarray] | None) -> None:
    """Refuse, before any session exists, a model input that has no given array and no size to make one."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name in weights or (given is not None and value.name in given):
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if axis > 0 and not dim.HasField("dim_value"):
                raise InputError(f"{path.name} input '{value.name}' has symbolic dim {axis} ({dim.dim_param!r}) "
                                 f"with no size to take; {FIX}")


def example_arrays(example: Any, paths: list[Path]) -> dict[str, np.ndarray]:
    """The example's tensors as arrays named after the inputs of every model in `paths`."""
    from graphprune.capture.trace import normalize_inputs
    from graphprune.onnx.signature import input_names

    args, kwargs = normalize_inputs(example)
    tensors = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
    arrays = [t.detach().cpu().numpy() for t in tensors]
    names = input_names(args, kwargs)
    named = dict(zip(names, arrays, strict=True))
    out: dict[str, np.ndarray] = {}
    for path in paths:
        wanted = graph_inputs(path)
        if set(wanted) <= set(named):
            out.update({n: named[n] for n in wanted})
        elif not kwargs and len(wanted) == len(arrays):
            out.update(dict(zip(wanted, arrays, strict=True)))
        else:
            raise InputError(
                f"the example input gives {list(names)} but {path.name} takes {wanted}; "
                "save the inputs as a dict keyed by those names"
            )
    return out


def _shape(arg: ort.NodeArg, path: Path, batch: int) -> list[int]:
    """Static dims as they are, a symbolic dim 0 set to `batch`; any other symbolic dim is an error."""
    dims = []
    for axis, dim in enumerate(arg.shape):
        if isinstance(dim, int) and dim >= 0:
            dims.append(dim)
        elif axis == 0:
            dims.append(batch)
        else:
            raise InputError(f"{path.name} input '{arg.name}' has symbolic dim {axis} ({dim!r}) with no size to take; {FIX}")
    return dims


def _check_fixed_batch(args: list[ort.NodeArg], path: Path, batch: int) -> None:
    """A model with no symbolic dim 0 has a fixed batch: the first input's dim 0."""
    if not args or any(a.shape and not isinstance(a.shape[0], int) for a in args):
        return
    fixed = args[0].shape[0] if args[0].shape else None
    if fixed is not None and fixed != batch:
        raise InputError(f"{path.name} has a fixed batch of {fixed}; bench it at batch {fixed} or export it with a dynamic batch")


def make_feeds(sess: ort.InferenceSession, path: Path, batch: int, given: Mapping[str, np.ndarray] | None = None) -> dict:
    """Inputs for one run at `batch`: `given` arrays tiled along dim 0, else made from the input types."""
    args = sess.get_inputs()
    _check_fixed_batch(args, path, batch)
    feeds = {}
    for arg in args:
        dtype = DTYPES.get(arg.type)
        if dtype is None:
            raise InputError(f"{path.name} input '{arg.name}' has type {arg.type}, which the benchmark cannot fill; {FIX}")
        if given is not None and arg.name in given:
            array = np.asarray(given[arg.name], dtype=dtype)
            dynamic = bool(arg.shape) and not isinstance(arg.shape[0], int)
            feeds[arg.name] = array[np.arange(batch) % array.shape[0]] if dynamic and array.ndim else array
            continue
        shape = _shape(arg, path, batch)
        rng = np.random.default_rng(zlib.crc32(arg.name.encode()))
        floating = np.issubdtype(dtype, np.floating)
        feeds[arg.name] = rng.standard_normal(shape).astype(dtype) if floating else np.zeros(shape, dtype)
    return feeds

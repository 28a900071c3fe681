"""The user's models, example input and data checked against each other before any work starts.

A model that rejects the example input or the data's first batch, or models compared output by
output (an original and its pruned copy, a student and its teacher) whose outputs differ, are the
user's input's fault: each is refused in one line naming the model, the cause and the fix, never
left to fail later as an "unexpected" error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils import _pytree as pytree

from graphprune.capture.trace import normalize_inputs
from graphprune.check import verify
from graphprune.errors import InputError, first_line


def output_shapes(output: Any) -> tuple[list, str]:
    """(shape of every tensor leaf, or its type name; the structure) of a model's output."""
    leaves, spec = pytree.tree_flatten(output)
    return [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in leaves], str(spec)


def check_models(named: list[tuple[str, torch.nn.Module]], example: Any, same_outputs: bool = True) -> list:
    """Run every (name, model) on the example input; the outputs. A model that rejects it, or (with
    `same_outputs`) gives outputs of another structure or shape than the first's, is refused in one line
    naming it: models compared output by output must give the same outputs (an original and its pruned copy)."""
    args, kwargs = normalize_inputs(example)
    outputs = []
    for name, model in named:
        try:
            outputs.append(verify.run(model, args, kwargs))
        except Exception as exc:  # noqa: BLE001 - the user's model or input: named, not a bug
            raise InputError(f"{name} rejects the example input ({type(exc).__name__}: {first_line(exc)}); pass an "
                             "input of the shape and dtype the model expects (--example-input or --input-shape)") from exc
        if same_outputs and len(outputs) > 1 and output_shapes(outputs[-1]) != output_shapes(outputs[0]):
            raise InputError(f"{name} gives outputs {output_shapes(outputs[-1])[0]}, {named[0][0]} gives "
                             f"{output_shapes(outputs[0])[0]}; compare models with the same outputs "
                             "(the original and its pruned copy)")
    return outputs


def check_data(named: list[tuple[str, torch.nn.Module]], data) -> None:
    """Run every (name, model) on the first batch of `data`; a model that rejects it is refused in one
    line naming the model, the data and what to change (token ids beyond an embedding: the tokenizer)."""
    first = next(data.batches(limit=1))
    tokens = any(not t.is_floating_point() for t in [*first.args, *first.kwargs.values()] if isinstance(t, torch.Tensor))
    for name, model in named:
        try:
            verify.run(model, first.args, first.kwargs)
        except Exception as exc:  # noqa: BLE001 - the user's model or data: named, not a bug
            fix = ("token ids must be below the model's vocabulary size: use the tokenizer the model was trained with"
                   if tokens and isinstance(exc, IndexError) else "give data the model takes (as the example input)")
            raise InputError(f"{name} rejects the inputs of --data {data.description} ({type(exc).__name__}: "
                             f"{first_line(exc)}); {fix}") from exc

"""Saving a pruned model: a torch.export program (.pt2, no pickle) or a pickled module (.pt).

A `.pt2` holds `torch.export.export(pruned, example)` saved with `torch.export.save`;
`torch.export.load` reads it back without running code from the file, and
`.module()` runs it. Every input dim that is symbolic in the pruned graph (the batch, and
the sequence of token inputs, where capture could keep them dynamic) is exported as
`Dim.AUTO`, from an example whose size-1 dims are tiled to 2 (export specialises sizes 0
and 1). Before anything is written the program must keep those dims symbolic and, at one
more row of batch (or the example itself when nothing is dynamic), give the pruned
module's outputs. The program is exported in eval mode: it is for inference (batch norm
and dropout as in eval); the pickle keeps the train()/eval() switches.

Any other suffix gets `torch.save(model)`, a pickle: loading it runs code from the file.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import torch
from torch.export import Dim
from torch.utils import _pytree as pytree

from graphprune.check import verify
from graphprune.errors import ExportError, first_line

log = logging.getLogger(__name__)

PROGRAM_SUFFIX = ".pt2"


def _symbolic_dims(placeholders: list) -> list[set[int]]:
    """Per placeholder: the dims its captured value has symbolic (none for a non-tensor)."""
    dims = []
    for node in placeholders:
        val = node.meta.get("val")
        shape = val.shape if isinstance(val, torch.Tensor) else ()
        dims.append({d for d, size in enumerate(shape) if not isinstance(size, int)})
    return dims


def _input_dims(model: torch.nn.Module, leaves: list) -> list[set[int]]:
    """Per leaf of (args, kwargs): the dims the pruned graph has symbolic; none if it is not a graphprune graph."""
    graph = getattr(model, "graph", None)
    dims = _symbolic_dims(list(graph.find_nodes(op="placeholder"))) if graph is not None else []
    return dims if len(dims) == len(leaves) else [set() for _ in leaves]


def _program_dims(program: torch.export.ExportedProgram) -> list[set[int]]:
    users = set(program.graph_signature.user_inputs)
    return _symbolic_dims([n for n in program.graph.find_nodes(op="placeholder") if n.name in users])


def _tiled(x: Any, dims: set[int]) -> Any:
    for d in dims:
        if x.shape[d] == 1:
            x = torch.cat([x, x], dim=d)
    return x


def _spec(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict, dict | None, list[set[int]]]:
    """Tiled example inputs, `dynamic_shapes` by argument name, and the dynamic dims per leaf."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    symbolic = _input_dims(model, leaves)
    shapes: list[Any] = [None] * len(leaves)
    for i, dims in enumerate(symbolic):
        if isinstance(leaves[i], torch.Tensor) and dims:
            leaves[i] = _tiled(leaves[i], dims)
            shapes[i] = {d: Dim.AUTO for d in sorted(dims)}
    targs, tkwargs = pytree.tree_unflatten(leaves, spec)
    if not any(shapes):
        return targs, tkwargs, None, symbolic
    shape_args, shape_kwargs = pytree.tree_unflatten(shapes, spec)
    bound = inspect.signature(model.forward).bind(*shape_args, **shape_kwargs)
    return targs, tkwargs, dict(bound.arguments), symbolic


def _bigger(tree: Any, symbolic: list[set[int]]) -> Any:
    """The example with one more row in every input whose dim 0 is dynamic."""
    leaves, spec = pytree.tree_flatten(tree)
    for i, dims in enumerate(symbolic):
        if 0 in dims:
            leaves[i] = torch.cat([leaves[i], leaves[i][:1]])
    return pytree.tree_unflatten(leaves, spec)


def export_program(model: torch.nn.Module, args: tuple, kwargs: dict | None = None) -> torch.export.ExportedProgram:
    """`model` as a torch.export program with its dynamic dims kept, checked against `model`."""
    kwargs = dict(kwargs or {})
    targs, tkwargs, shapes, symbolic = _spec(model, args, kwargs)
    try:
        with verify.eval_mode(model):
            program = torch.export.export(model, targs, tkwargs, dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # noqa: BLE001 - any failure of export is one line naming the fix
        raise ExportError(f"torch.export cannot export the pruned model ({first_line(exc)}); save it as .pt instead") from exc
    kept = _program_dims(program)
    if len(kept) != len(symbolic):
        log.warning("the program has %d inputs, the example %d; only the batch is checked", len(kept), len(symbolic))
        kept = symbolic
    if lost := [(i, sorted(want - got)) for i, (want, got) in enumerate(zip(symbolic, kept, strict=True)) if want - got]:
        raise ExportError(f"torch.export made input dims {lost} (input, dims) static; save the model as .pt instead")
    (bigger_args, bigger_kwargs) = _bigger((args, kwargs), symbolic) if any(0 in s for s in symbolic) else (args, kwargs)
    try:
        got = verify.run(program.module(), bigger_args, bigger_kwargs)
    except Exception as exc:  # noqa: BLE001 - the program must run where the module runs
        raise ExportError(f"the exported program fails at another batch size ({first_line(exc)}); save it as .pt") from exc
    verify.check_equal(verify.run(model, bigger_args, bigger_kwargs), got)
    return program


def save_model(model: torch.nn.Module, example_args: tuple, example_kwargs: dict, path: Path, suffix: str) -> None:
    """Write `model` to `path` as a torch.export program when `suffix` is .pt2, else as a pickle."""
    if suffix == PROGRAM_SUFFIX:
        program = export_program(model, example_args, example_kwargs)
        with open(path, "wb") as f:  # a file object: the staged name does not end in .pt2
            torch.export.save(program, f)
    else:
        torch.save(model, path)

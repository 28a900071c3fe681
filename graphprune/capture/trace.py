"""Stage 1, capture: a model and example inputs in, an ATen-level fx graph with shapes out.

The route is `torch.export.export(strict=False)` (see docs/DESIGN.md for why). The
captured module keeps the user's calling convention (positional and keyword
inputs, nested outputs) and the user's parameter names, and it pickles.

The batch axis (dim 0 of every tensor input) is made dynamic when torch.export can
prove it is, so the pruned model and its ONNX export accept any batch size. A
batch of one is tiled to two for the capture, since export specialises sizes of 0
and 1. So is the sequence axis of token inputs (dim 1 of 2-D integer tensors: ids,
masks), so a pruned language model takes any sequence length its position table
allows; `Dim.AUTO` keeps a dim static wherever the model needs it to be.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch.export import Dim
from torch.utils import _pytree as pytree

from graphprune.capture.pytrees import register_for_model
from graphprune.errors import TraceError, first_line
from graphprune.rules.spaces import int_size  # a size export pinned to one value reads as that int

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Captured:
    """An fx.GraphModule whose nodes carry `meta['val']`, plus how it was made."""

    module: fx.GraphModule
    args: tuple
    kwargs: dict
    dynamic_batch: bool

    @property
    def graph(self) -> fx.Graph:
        return self.module.graph

    @property
    def dynamic_sequence(self) -> bool:
        """Whether a token input (2-D integer) kept a dynamic sequence length (its dim 1)."""
        vals = [n.meta.get("val") for n in self.graph.nodes if n.op == "placeholder"]
        return any(is_token_input(v) and int_size(v.shape[1]) is None for v in vals)


def normalize_inputs(example: Any) -> tuple[tuple, dict]:
    """A tensor, a tuple of positional inputs or a dict of keyword inputs -> (args, kwargs)."""
    if isinstance(example, torch.Tensor):
        return (example,), {}
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    raise TraceError(
        f"example input of type {type(example).__name__} is not supported; "
        "pass a tensor, a tuple of tensors (positional) or a dict (keyword inputs)"
    )


def _tile_batch(tree: Any) -> Any:
    def tile(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == 1:
            return x.repeat(2, *([1] * (x.dim() - 1)))
        return x

    return pytree.tree_map(tile, tree)


def is_token_input(x: Any) -> bool:
    """A 2-D integer tensor: token ids or a mask, [batch, sequence]; its dim 1 is made dynamic too."""
    return isinstance(x, torch.Tensor) and x.dim() == 2 and not x.is_floating_point() and not x.is_complex()


def _dims(x: Any, every_dim: bool = False) -> dict | None:
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        return None
    if every_dim:
        return dict.fromkeys(range(x.dim()), Dim.AUTO)
    return {0: Dim.AUTO, 1: Dim.AUTO} if is_token_input(x) else {0: Dim.AUTO}


def _batch_dims(tree: Any, every_dim: bool = False) -> Any:
    return pytree.tree_map(lambda x: _dims(x, every_dim), tree)


def _user_line(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        path = frame.filename
        if "/torch/" in path or "/graphprune/" in path or "site-packages/transformers" in path:
            continue
        return f"{path}:{frame.lineno}: {(frame.line or '').strip()}"
    return ""


def _data_dependent(exc: BaseException | None) -> bool:
    """Whether export failed on a branch or size that depends on tensor values (by exception type)."""
    from torch._subclasses.fake_tensor import DataDependentOutputException
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (GuardOnDataDependentSymNode, DataDependentOutputException)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _explain(exc: BaseException) -> TraceError:
    first = first_line(exc)
    if _data_dependent(exc):
        hint = (
            "the model branches on tensor values (data-dependent control flow); "
            "rewrite that line with torch.where / torch.cond or make the branch depend on shapes only"
        )
    else:
        hint = "make the model capturable by torch.export.export(model, args, strict=False)"
    where = _user_line(exc)
    return TraceError(f"cannot capture the model: {first}" + (f" [at {where}]" if where else "") + f"; {hint}", detail=first)


def _export(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: bool, every_dim: bool = False):
    with warnings.catch_warnings():
        # nn.LSTM/GRU re-assign _flat_weights during export; harmless, and not the user's to fix
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        logging.disable(logging.WARNING)  # export logs graph dumps on failure; our error says it in one line
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # ... and prints the partial graph to stderr
                return _export_quiet(model, args, kwargs, dynamic, every_dim)
        finally:
            logging.disable(logging.NOTSET)


def _export_quiet(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: bool, every_dim: bool = False):
    if not dynamic:
        return torch.export.export(model, args, kwargs, strict=False)
    targs, tkwargs = _tile_batch(args), _tile_batch(kwargs)
    bound = inspect.signature(model.forward).bind(*targs, **tkwargs)
    shapes = {}
    for name, value in bound.arguments.items():
        kind = inspect.signature(model.forward).parameters[name].kind
        spec = _batch_dims(value, every_dim)
        shapes[name] = spec if kind is not inspect.Parameter.VAR_KEYWORD else spec
    return torch.export.export(model, targs, tkwargs, dynamic_shapes=shapes, strict=False)


_NEW_FORM = {
    torch.ops.aten.zeros.default: torch.ops.aten.new_zeros.default,
    torch.ops.aten.ones.default: torch.ops.aten.new_ones.default,
    torch.ops.aten.empty.memory_format: torch.ops.aten.new_empty.default,
    torch.ops.aten.full.default: torch.ops.aten.new_full.default,
}


def _reloadable(graph: fx.Graph) -> None:
    """Rewrite zeros([.., batch, ..]) as new_zeros(<an input>, [...]) so the module unpickles.

    torch.load re-traces a GraphModule's code; an op whose only traced value is a SymInt
    inside a size list cannot be intercepted, while one with a tensor first argument can.
    """
    anchor = next((n for n in graph.nodes if n.op == "placeholder" and isinstance(n.meta.get("val"), torch.Tensor)), None)
    if anchor is None:
        return
    for node in graph.nodes:
        new = _NEW_FORM.get(node.target)
        if new is None or not any(isinstance(a, fx.Node) for a in node.args[0]):
            continue
        kwargs = dict(node.kwargs)
        kwargs.pop("memory_format", None)
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            kwargs.setdefault("dtype", val.dtype)
            kwargs.setdefault("device", val.device)
        node.target = new
        node.args = (anchor, *node.args)
        node.kwargs = kwargs


def _guard_inputs(graph: fx.Graph) -> None:
    """Assert every input's static sizes at run time (export's own guards do not pickle).

    Without it a wrong size can reach a kernel that does not check (an LSTM's hidden state
    built for another batch reads out of bounds); with it the call fails with the sizes.
    """
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    cursor = placeholders[-1] if placeholders else None
    for node in placeholders:
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or all(int_size(s) is None for s in val.shape):
            continue
        sizes = []
        for d, size in enumerate(val.shape):
            if int_size(size) is not None:
                sizes.append(int_size(size))
                continue
            with graph.inserting_after(cursor):
                cursor = graph.call_function(torch.ops.aten.sym_size.int, (node, d))
            cursor.meta["val"] = size
            sizes.append(cursor)
        with graph.inserting_after(cursor):
            cursor = graph.call_function(torch.ops.aten._assert_tensor_metadata.default, (node,), {"size": sizes})
        cursor.meta["val"] = None


def _free_batch(graph: fx.Graph) -> bool:
    """Whether some tensor input kept a free dim 0: export pins a dim it was asked to keep dynamic when the
    model fixes it (a sequence-first LSTM's time axis, a constant reshape); such a graph takes one size only."""
    vals = [n.meta.get("val") for n in graph.nodes if n.op == "placeholder"]
    return any(isinstance(v, torch.Tensor) and v.dim() > 0 and int_size(v.shape[0]) is None for v in vals)


def _plain_module(ep: torch.export.ExportedProgram) -> fx.GraphModule:
    """ep.module() without export's guard hook, so the result pickles like any GraphModule."""
    gm = ep.module()
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
    graph._tracer_cls = None
    graph._tracer_extras = {}
    _reloadable(graph)
    _guard_inputs(graph)
    out = fx.GraphModule(gm, graph)
    out._in_spec = gm._in_spec
    out._out_spec = gm._out_spec
    out.meta["graphprune_dynamic_batch"] = False
    return out


def capture(model: torch.nn.Module, args: tuple = (), kwargs: dict | None = None, every_dim: bool = False) -> Captured:
    """Capture `model(*args, **kwargs)` in eval mode. The model is not modified.

    `every_dim`: ask for every input dim to be dynamic, not only the batch (and sequence);
    used for parts of a model (graphprune.pipeline.parts) that see several input sizes.
    """
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
    kwargs = dict(kwargs or {})
    from graphprune.capture.modes import eval_mode

    register_for_model(model)  # e.g. transformers' DynamicCache, returned by causal LMs as loaded

    with eval_mode(model):
        try:
            ep = _export(model, args, kwargs, dynamic=True, every_dim=every_dim)
            dynamic = True
        except Exception as exc:  # noqa: BLE001 - retried statically, reported below if that fails too
            log.info("dynamic-batch capture failed (%s); retrying with static shapes", str(exc)[:200])
            try:
                ep = _export(model, args, kwargs, dynamic=False)
            except Exception as exc2:  # noqa: BLE001 - every capture failure becomes one TraceError
                raise _explain(exc2) from exc2
            dynamic = False
    try:
        module = _plain_module(ep)
    except Exception as exc:  # noqa: BLE001 - e.g. a submodule named like a GraphModule attribute
        raise TraceError(
            f"the captured graph cannot be rebuilt as a module ({first_line(exc, 200)}); "
            "rename submodules that clash with torch.fx.GraphModule attributes (such as 'meta')"
        ) from exc
    dynamic = dynamic and _free_batch(module.graph)  # export may pin the dim it was asked to keep free
    module.meta["graphprune_dynamic_batch"] = dynamic
    module.graph.lint()
    return Captured(module=module, args=copy.copy(args), kwargs=kwargs, dynamic_batch=dynamic)

"""The form of a pruned model: an fx.GraphModule that torch's tools take as they take the original.

`PrunedModule` is a `torch.fx.GraphModule` in every respect (graph, code, state_dict,
torch.export, torch.compile, torch.jit.trace all see a GraphModule) with one difference,
for the TorchScript ONNX exporter (`torch.onnx.export(..., dynamo=False)`):

    given `dynamic_axes`, the exporter reads `model.graph.inputs()` and `.outputs()` of any
    module that has a `graph` attribute, taking it for a `torch._C.Graph` (a ScriptModule's),
    only to list the names `dynamic_axes` may use; on an fx.Graph the call fails with
    `AttributeError: 'Graph' object has no attribute 'outputs'`
    (torch/onnx/_internal/torchscript_exporter/utils.py, `_validate_dynamic_axes`).

A PrunedModule's graph answers both the way the exporter names a traced module's values:
inputs by forward argument name (the placeholders), outputs unnamed (the exporter numbers
them), so the names checked are those an eager module would give.

Tracers (torch.jit.trace, hence that exporter) record a size read by `x.size(d)` and passed
to a Tensor method or `torch.*` function as a traced value, but one passed to an ATen
overload (`torch.ops.aten.view.default(x, [n, 12])`) as a constant: a captured graph traced
as it is bakes the example's batch into every view, expand and slice. So the graph is put
in the form eager code has, with the same values: `aten.sym_size.int(x, d)` becomes
`x.size(d)`, and an op that takes a symbolic size calls the Tensor method (else the `torch`
function) of its name, a slice becomes indexing. An op with neither keeps its ATen form. Pickles
(`torch.save(model)`) reload as a PrunedModule, so `graphprune` must be importable where
one is loaded; a `.pt2` program (graphprune.io.program) needs torch only.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

import torch
import torch.fx as fx
from torch.fx.graph_module import reduce_graph_module
from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)
_SYMBOLIC = (torch.SymInt, torch.SymFloat, torch.SymBool)


def _symbolic(arg: Any) -> bool:
    if isinstance(arg, fx.Node):
        return isinstance(arg.meta.get("val"), _SYMBOLIC)
    return isinstance(arg, (list, tuple)) and any(_symbolic(a) for a in arg)


def _as_indexing(graph: fx.Graph, node: fx.Node) -> None:
    """aten.slice.Tensor(x, dim, start, end, step) as x[:, ..., start:end:step] (dim-th position)."""
    x, dim, start, end, step = [*node.args, *(None, 0, None, None, 1)[len(node.args):]]
    dim = dim if dim >= 0 else node.meta["val"].dim() + dim
    with graph.inserting_before(node):
        index = graph.call_function(operator.getitem, (x, (slice(None),) * dim + (slice(start, end, step),)))
    index.meta = dict(node.meta)
    node.replace_all_uses_with(index)
    graph.erase_node(node)


def _eager_form(module: fx.GraphModule) -> None:
    """Rewrite ops that take symbolic sizes in the form a tracer follows (see the module docstring).

    An op on a plain tensor attribute (neither parameter nor buffer) keeps its ATen form: when a
    pickle is loaded, torch re-traces the code with that attribute as a real tensor, which cannot
    take a traced size in a method call or an index.
    """
    graph = module.graph
    traced = {name for name, _ in module.named_parameters(remove_duplicate=False)}
    traced |= {name for name, _ in module.named_buffers(remove_duplicate=False)}

    def plain_constant(arg: Any) -> bool:
        return isinstance(arg, fx.Node) and arg.op == "get_attr" and arg.target not in traced

    for node in list(graph.nodes):
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if node.target is torch.ops.aten.sym_size.int:
            node.op, node.target = "call_method", "size"
            continue
        if not _symbolic([*node.args, *node.kwargs.values()]):
            continue
        name = node.target._schema.name.split("::")[-1]
        first = node.args[0] if node.args else None
        if plain_constant(first):
            continue
        if node.target is torch.ops.aten.slice.Tensor and isinstance(node.meta.get("val"), torch.Tensor):
            _as_indexing(graph, node)
        elif isinstance(first, fx.Node) and not _symbolic(first) and hasattr(torch.Tensor, name):  # a tensor: get_attrs have no val
            node.op, node.target = "call_method", name
        elif hasattr(torch, name):
            node.target = getattr(torch, name)
        else:
            log.debug("%s keeps its ATen form: traced by torch.jit, its sizes are constants", node.format_node())


class ReloadTracer(fx.Tracer):
    """Re-traces a pickled PrunedModule's code: buffers become graph inputs (get_attr) as parameters do,
    so the code may index or call methods of them with sizes read at run time."""

    proxy_buffer_attributes = True

    def create_arg(self, a: Any) -> Any:
        """An output container fx cannot write (a Hugging Face ModelOutput, which fx would turn into a
        plain dict, or its DynamicCache: graphprune.capture.pytrees) but pytree knows becomes one node
        rebuilding it from its leaves, with the spec it was flattened by held by the module."""
        if type(a) in (tuple, list, dict) or hasattr(a, "_fields") or type(a) not in pytree.SUPPORTED_NODES:
            return super().create_arg(a)
        leaves, spec = pytree.tree_flatten(a)
        name = f"_graphprune_state_spec_{sum(k.startswith('_graphprune_state_spec_') for k in vars(self.root))}"
        setattr(self.root, name, spec)
        holder = self.create_proxy("get_attr", name, (), {})
        return self.create_node("call_function", pytree.tree_unflatten, (self.create_arg(leaves), holder.node), {})


class _ValueName:
    """What `_validate_dynamic_axes` needs of a torch._C.Value: its `debugName()`."""

    def __init__(self, name: str) -> None:
        self._name = name

    def debugName(self) -> str:  # noqa: N802 - the torch._C.Value method name
        return self._name


class PrunedGraph(fx.Graph):
    """An fx.Graph that also answers the two torch._C.Graph calls the TorchScript exporter makes."""

    def inputs(self) -> list[_ValueName]:
        return [_ValueName(node.name) for node in self.find_nodes(op="placeholder")]

    def outputs(self) -> list[_ValueName]:
        return []


class PrunedModule(fx.GraphModule):
    """The GraphModule graphprune returns (see the module docstring for why it is its own class)."""

    @property
    def graph(self) -> fx.Graph:
        return self._graph

    @graph.setter
    def graph(self, g: fx.Graph) -> None:
        if type(g) is fx.Graph:
            g.__class__ = PrunedGraph  # adds two methods and no state: every fx pass still sees its graph
        fx.GraphModule.graph.fset(self, g)

    def __reduce__(self) -> tuple[Any, ...]:
        _, (body, import_block) = super().__reduce__()
        return (_reload, (body, import_block))


def _reload(body: dict[str, Any], import_block: str) -> PrunedModule:
    """Unpickle: torch rebuilds a plain GraphModule from the saved code; it becomes a PrunedModule
    holding the same submodules, tensors and attributes (`meta` too, which torch drops)."""
    from graphprune.capture.pytrees import register_for_spec

    register_for_spec(body.get("_out_spec"))  # e.g. a causal LM's DynamicCache, in a fresh process
    meta = body.get("meta", {})
    module = as_pruned(reduce_graph_module(body, import_block))
    module.meta = meta
    return module


def as_pruned(module: fx.GraphModule) -> PrunedModule:
    """`module` as a PrunedModule that takes over its submodules, tensors, attributes and graph
    (they are shared, not copied: use the result in place of `module`)."""
    if isinstance(module, PrunedModule):
        return module
    out = PrunedModule.__new__(PrunedModule)
    type(out).__name__ = type(module).__name__  # the class name GraphModule(..., class_name=) gave
    out.__dict__.update(module.__dict__)
    _eager_form(module)
    out.graph = module.graph
    out._tracer_cls = out.graph._tracer_cls = ReloadTracer  # the graph's survives copy.deepcopy (fine-tuning copies)
    return out

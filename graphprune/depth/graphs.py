"""Graph facts the depth passes share: module-call scopes, value types, which tensors a set of nodes owns."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx


def attribute(module: torch.nn.Module, target: str):
    """The object at dotted `target` (a parameter, buffer, constant or submodule) of `module`."""
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


EMPTY_STACK = "_empty_nn_module_stack_from_metadata_hook"  # torch.export's marker for nodes without a stack


@dataclass(frozen=True, eq=False)
class Scope:
    """One call of a submodule: its dotted path, class (qualified name) and the nodes it computed."""

    key: str
    path: str
    kind: str
    nodes: list

    @property
    def parent(self) -> str:
        return self.path.rpartition(".")[0]


def module_calls(graph: fx.Graph) -> list[Scope]:
    """Every submodule call recorded in the nodes' `nn_module_stack`, in order of first appearance."""
    calls: dict[str, Scope] = {}
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        for key, entry in (node.meta.get("nn_module_stack") or {}).items():
            if key == EMPTY_STACK:
                continue
            if key not in calls:
                kind = entry[1] if isinstance(entry[1], str) else getattr(entry[1], "__qualname__", str(entry[1]))
                calls[key] = Scope(key, entry[0], kind, [])
            calls[key].nodes.append(node)
    return list(calls.values())


def is_tensor(node: fx.Node) -> bool:
    """The node's value is a tensor, or a tuple/list holding tensors (not a size or a scalar)."""
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        return any(isinstance(v, torch.Tensor) for v in val)
    return isinstance(val, torch.Tensor)


def signature(node: fx.Node) -> tuple | None:
    """(shape, dtype) of a tensor value, symbolic sizes by name; None for anything else."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    return tuple(str(s) for s in val.shape), val.dtype


def same_type(a: fx.Node, b: fx.Node) -> bool:
    sa = signature(a)
    return sa is not None and sa == signature(b)


def _tensors(gm: fx.GraphModule) -> dict[str, object]:
    found: dict[str, object] = dict(gm.named_parameters(remove_duplicate=False))
    found.update(dict(gm.named_buffers(remove_duplicate=False)))
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target not in found:
            found[node.target] = attribute(gm, node.target)  # lifted constants, subgraph modules
    return found


def dropped_targets(gm: fx.GraphModule, dead: set, paths: set) -> list[str]:
    """Names of the parameters, buffers and constants that nothing reads once the `dead` nodes are gone.

    A name read only by dead nodes goes, unless it is another name of a tensor still read (tied
    weights). A name nothing read before (a batch norm's num_batches_tracked) follows the other
    names of its module: it goes when they all go, or, if its module had none, when it lies
    inside a removed layer (`paths`).
    """
    users: dict[str, list] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            users.setdefault(node.target, []).extend(node.users)
    read_before = {t for t, us in users.items() if us}
    read_after = {t for t in read_before if any(u not in dead for u in users[t])}
    tensors = _tensors(gm)
    kept = {id(tensors[t]) for t in read_after}
    dropped = []
    for target, tensor in tensors.items():
        if target in read_after or id(tensor) in kept:
            continue
        if target in read_before:
            dropped.append(target)
            continue
        owner = target.rpartition(".")[0]
        beside = [t for t in read_before if t.rpartition(".")[0] == owner]
        gone = not any(t in read_after for t in beside) if beside else any(target.startswith(p + ".") for p in paths)
        if gone:
            dropped.append(target)
    return dropped


def exclusive_params(gm: fx.GraphModule, nodes: set, paths: set = frozenset()) -> tuple[tuple, int]:
    """(names the `nodes` alone read, elements of the parameters among them)."""
    names = dropped_targets(gm, nodes, paths)
    tensors = _tensors(gm)
    seen, count = set(), 0
    for name in names:
        t = tensors[name]
        if isinstance(t, torch.nn.Parameter) and id(t) not in seen:
            seen.add(id(t))
            count += t.numel()
    return tuple(names), count


def written(node: fx.Node) -> list:
    """The argument nodes an in-place op writes into (`relu_(x)`, `add_(x, y)`: x); [] for pure ops."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload) or not target._schema.is_mutable:
        return []
    out = []
    for k, arg in enumerate(target._schema.arguments):
        value = node.args[k] if k < len(node.args) else node.kwargs.get(arg.name)
        if arg.alias_info is not None and arg.alias_info.is_write and isinstance(value, fx.Node):
            out.append(value)
    return out


def alias_chain(node: fx.Node) -> list:
    """`node`, then the value it wrote into, and so on: `relu_(add_(x, f))` -> [relu_, add_, x]."""
    chain = [node]
    while written(chain[-1]) and len(written(chain[-1])) == 1:
        chain.append(written(chain[-1])[0])
    return chain


def writes_outside(nodes, members: set, allowed: set) -> bool:
    """Some node of `nodes` writes in place into a value outside `members` other than `allowed` ones."""
    return any(v not in members and v not in allowed for n in nodes for v in written(n))

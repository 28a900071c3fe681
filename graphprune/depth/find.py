"""Removable blocks of a captured graph: repeated residual layers and inline residual branches.

Two shapes of block are found, from the graph alone (no knowledge of any model family):

* **Layer**: a submodule call (one `nn_module_stack` scope) whose nodes are used outside it
  through exactly one tensor `y`, that reads a *main input* `x` of the same shape and dtype as
  `y` (other tensor inputs, such as attention masks or position tables, are read-only side
  inputs), holds parameters, contains a residual add `x + f` (so the layer is an identity plus
  a correction), is called once, and is one of >= 2 sibling calls of the same class under the
  same parent (a ModuleList or Sequential of repeated layers). Removing it: `y := x`.
  A layer that contains another such layer gives way to it (the innermost unit wins).
* **Residual branch**: an add `out = s + b` (either operand order; `b` may be scaled) where `b`
  is computed from `s` alone plus parameters, constants and shape arithmetic, reads at least one
  parameter, and none of its nodes is used elsewhere; `out` has the shape and dtype of `s`.
  Removing it: `out := s` (later ops, such as a ReLU after the add, stay). A branch inside a
  found layer, or one that contains another branch, is not listed.

Blocks are disjoint, so any subset of them can be removed together.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch
import torch.fx as fx

from graphprune.capture.trace import Captured
from graphprune.depth.graphs import (
    Scope,
    alias_chain,
    exclusive_params,
    is_tensor,
    module_calls,
    same_type,
    writes_outside,
)
from graphprune.rules.registry import Role, has_role

log = logging.getLogger(__name__)

aten = torch.ops.aten


@dataclass(frozen=True)
class Block:
    """One removable block; node and parameter names are those of the captured graph."""

    name: str  # the module path of a layer, or 'residual(<modules the branch covers>)'
    kind: str  # 'layer' or 'residual'
    module_class: str  # a layer's class name; '' for a residual branch
    input: str  # the node whose value replaces the block's output
    output: str  # the node replaced: the layer's output, or the residual add
    nodes: frozenset  # names of the nodes computed only for the block
    params: tuple  # parameter and buffer names only the block reads
    num_params: int  # elements of those parameters (not buffers), as count_params counts them

    def describe(self) -> str:
        if self.kind == "layer":
            return f"{self.name} ({self.module_class})"
        return f"{self.name}: residual branch into {self.output}"


def find_blocks(captured: Captured) -> tuple[Block, ...]:
    """Every removable block of `captured`, in graph order."""
    gm = captured.module
    layers = _innermost(_layers(gm))
    inside = set().union(*(b.nodes for b in layers)) if layers else set()
    residuals = [b for b in _residuals(gm) if not (b.nodes & inside)]
    residuals = [b for b in residuals if not any(o is not b and o.output in b.nodes for o in residuals)]
    order = {n.name: k for k, n in enumerate(gm.graph.nodes)}
    blocks = sorted([*layers, *residuals], key=lambda b: order[b.output])
    log.info("%d removable blocks: %d layers, %d residual branches", len(blocks), len(layers), len(residuals))
    return tuple(blocks)


def _layers(gm: fx.GraphModule) -> list[Block]:
    calls = module_calls(gm.graph)
    times = Counter(c.path for c in calls)
    siblings = Counter((c.parent, c.kind) for c in calls)
    found = []
    for call in calls:
        if not call.path or times[call.path] > 1 or siblings[(call.parent, call.kind)] < 2:
            continue
        block = _layer(gm, call)
        if block is not None:
            found.append(block)
    return found


def _layer(gm: fx.GraphModule, call: Scope) -> Block | None:
    members = set(call.nodes)
    escaping = [n for n in call.nodes if any(u not in members for u in n.users)]
    tensors = [n for n in escaping if is_tensor(n)]
    if len(tensors) != 1:
        return None
    out = tensors[0]
    shared = _shape_nodes([n for n in escaping if n is not out], members)  # sizes a later call reuses (CSE)
    if shared is None:
        return None
    inputs = {a for n in call.nodes for a in n.all_input_nodes if a not in members and a.op != "get_attr" and is_tensor(a)}
    mains = [x for x in inputs if same_type(x, out) and _has_residual(call.nodes, x, members)]
    if len(mains) != 1 or writes_outside(call.nodes, members, set(alias_chain(out)) & {mains[0]}):
        return None
    nodes = members - shared
    names, count = exclusive_params(gm, nodes, {call.path})
    if count == 0:
        return None
    kind = call.kind.rsplit(".", 1)[-1]
    return Block(call.path, "layer", kind, mains[0].name, out.name, frozenset(n.name for n in nodes), names, count)


def _shape_nodes(escaping: list, members: set) -> set | None:
    """Size arithmetic inside the scope that outlives it; None if it reads a tensor computed inside."""
    kept, stack = set(), list(escaping)
    while stack:
        n = stack.pop()
        if n in kept or n not in members:
            continue
        if is_tensor(n):
            return None
        kept.add(n)
        stack.extend(n.all_input_nodes)
    return kept


def _has_residual(nodes: list, x: fx.Node, members: set) -> bool:
    """Some add inside the scope adds `x` (or a same-valued copy of it) to a value computed inside it."""
    for n in nodes:
        if not has_role(n, Role.RESIDUAL_ADD):
            continue
        for mine, other in ((n.args[0], n.args[1]), (n.args[1], n.args[0])):
            if isinstance(mine, fx.Node) and isinstance(other, fx.Node) and other in members and _copy_of(mine, x):
                return True
    return False


def _copy_of(node: fx.Node, x: fx.Node) -> bool:
    """`node` is `x`, or `x` through ops that keep every value (`.to` its own dtype, `alias`, `clone`, ...).

    Non-strict export traces a no-op `x.to(torch.float32)` as a node and then reads that node
    wherever the same tensor object is used again (a LLaMA layer's `residual`).
    """
    while node is not x:
        source = node.args[0] if node.op == "call_function" and node.args else None
        if not has_role(node, Role.SAME_VALUE) or not isinstance(source, fx.Node) or not same_type(node, source):
            return False
        node = source
    return True


def _innermost(layers: list[Block]) -> list[Block]:
    return [b for b in layers if not any(o is not b and o.name.startswith(b.name + ".") for o in layers)]


def _residuals(gm: fx.GraphModule) -> list[Block]:
    calls = module_calls(gm.graph)
    found = []
    for add in gm.graph.nodes:
        if not has_role(add, Role.RESIDUAL_ADD) or len(add.args) < 2:
            continue
        a, b = add.args[:2]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node) and is_tensor(a) and is_tensor(b)):
            continue
        for skip, operand in ((a, b), (b, a)):
            region = _branch(skip, operand, add) if same_type(skip, add) else None
            if region is None or writes_outside(region, region, set()):
                continue
            names, count = exclusive_params(gm, region)
            if count:
                found.append(Block(_residual_name(calls, region, add), "residual", "", skip.name, add.name,
                                   frozenset(n.name for n in region | {add}), names, count))
            break
    return found


def _branch(skip: fx.Node, operand: fx.Node, add: fx.Node) -> set | None:
    """Nodes computing `operand` from `skip` alone, used nowhere but in the branch; None if there are none."""
    region, stack, reached = set(), [operand], False
    while stack:
        n = stack.pop()
        if n is skip:
            reached = True
            continue
        if n in region or n.op == "get_attr" or not is_tensor(n):
            continue  # parameters, constants and shape arithmetic may feed a branch
        if n.op != "call_function":
            return None  # a model input (or a module call) other than the skip
        region.add(n)
        stack.extend(n.all_input_nodes)
    if not reached or not region:
        return None
    for n in region:
        if any(c not in region and c is not add for c in _consumers(n)):
            return None
    return region


def _consumers(node: fx.Node) -> list:
    """Tensor-valued users of `node`, looking through shape arithmetic (sym_size and friends)."""
    out = []
    for user in node.users:
        out.extend([user] if is_tensor(user) or user.op == "output" else _consumers(user))
    return out


def _residual_name(calls: list[Scope], region: set, add: fx.Node) -> str:
    covered = [c.path for c in calls if c.path and c.nodes and all(n in region for n in c.nodes)]
    top = [p for p in covered if not any(p.startswith(q + ".") for q in covered)]
    return f"residual({', '.join(dict.fromkeys(top)) or add.name})"

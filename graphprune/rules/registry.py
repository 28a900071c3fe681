"""The one registry of op rules.

A rule is registered for one or more fx targets (ATen overloads, or builtins such as
`operator.getitem`) and says how the op moves channel indices: which elements of its
inputs and outputs are the same channel. Optionally it rewrites the node's arguments
for the pruned shapes (a `view`'s target size, a conv's `groups`).

Dims a rule does not *claim* are frozen after it runs, so an op with no rule freezes
every dim it touches. That is the whole safety argument: nothing is guessed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch.fx as fx

from graphprune.errors import describe
from graphprune.reasons import Cause, Reason
from graphprune.rules.spaces import Space, Spaces, Value, composite, int_size, shape_of, tensor_values


class Role(enum.Enum):
    """What an op is besides how it moves indices, for the stages that look for such ops."""

    NORMALIZES = "normalizes"  # per-channel affine normalisation, weight at arg 1: the bn criterion scores |gamma|
    ACTIVATION = "activation"  # a nonlinearity: the activation criteria measure its output
    REFIT = "refit"  # a dense linear map, weight at arg 1 and bias at arg 2: the least-squares refit's target
    RESIDUAL_ADD = "residual-add"  # a + b that may close a residual block (graphprune.depth.find)
    SAME_VALUE = "same-value"  # passes its input on unchanged but for dtype, device or copy: depth looks through it


@dataclass(frozen=True)
class Rule:
    name: str
    couple: Callable[[RuleContext], None]
    rewrite: Callable[[RewriteContext], None] | None = None
    # position of the op's `training` argument (dropout, batch norm): graphprune.rewrite.trainable makes it
    # follow the pruned module's train()/eval() mode
    train_arg: int | None = None
    # MACs of one call from the (new) shapes of its values: graphprune.cost.macs.plan_macs
    cost: Callable | None = None
    roles: frozenset = frozenset()  # Role members


RULES: dict = {}


def dim_index(dim: int, rank: int) -> int:
    """A dim argument in [-rank, rank) as an index in [0, rank); out of range raises, as torch does
    (a 0-d tensor takes 0 and -1). Never wrapped: dim 5 of a 4-d tensor is a bug, not dim 1."""
    bound = max(rank, 1)
    if not isinstance(dim, int) or not -bound <= dim < bound:
        raise IndexError(f"dim {dim} is out of range for a tensor of rank {rank}")
    return dim % bound


def rule(*targets, rewrite: Callable | None = None, train_arg: int | None = None, cost: Callable | None = None,
         roles: tuple = ()):
    """Register `fn(ctx)` as the coupling rule of every target given."""

    def wrap(fn):
        for target in targets:
            if target is None:
                continue
            if target in RULES:
                raise RuntimeError(f"two rules for {target}")
            RULES[target] = Rule(name=fn.__name__, couple=fn, rewrite=rewrite, train_arg=train_arg, cost=cost,
                                 roles=frozenset(roles))
        return fn

    return wrap


def lookup(node: fx.Node) -> Rule | None:
    return RULES.get(node.target)


def has_role(node: fx.Node, role: Role) -> bool:
    """Whether `node` calls an op whose rule has `role` (an op without a rule has none)."""
    found = RULES.get(node.target) if node.op == "call_function" else None
    return found is not None and role in found.roles


class RuleContext:
    """What a rule sees of one node: its values and shapes, and the relation to add to."""

    def __init__(self, node: fx.Node, spaces: Spaces, hints=None):
        self.node = node
        self.spaces = spaces
        self.claimed: set = set()
        self.hints = hints

    def choose_factor(self, value: Value, dims: list[int], sizes: list[int]) -> int:
        """Which of several factor dims a reshape relates to the merged dim (index into dims).

        Without hints: the largest factor. With hints from a first pass (graphprune.capture.depgraph):
        factors frozen for other reasons are avoided, and attention-head factors are preferred
        or avoided as the options ask.
        """
        if self.hints is None or not self.hints.informed:
            return max(range(len(dims)), key=lambda k: (sizes[k], -k))
        return self.hints.choose(value, dims, sizes)

    # -- values ---------------------------------------------------------------
    def arg(self, i: int, name: str | None = None):
        """Positional arg i (or keyword `name`); a Value for tensors, the raw arg otherwise."""
        args, kwargs = self.node.args, self.node.kwargs
        a = args[i] if i < len(args) else kwargs.get(name) if name else None
        if isinstance(a, fx.Node) and tensor_values(a) == [(a, None)]:
            return (a, None)
        return a

    def out(self, index: int | None = None) -> Value:
        return (self.node, index)

    def inputs(self) -> list[Value]:
        """Every tensor value this node reads."""
        seen = []
        for a in self.node.all_input_nodes:
            for v in tensor_values(a):
                if v[1] is None and v not in seen:
                    seen.append(v)
        return seen

    def outputs(self) -> list[Value]:
        return tensor_values(self.node)

    @staticmethod
    def shape(value: Value) -> tuple:
        return shape_of(value)

    @staticmethod
    def size(value: Value, dim: int) -> int | None:
        return int_size(shape_of(value)[dim])

    # -- relation -------------------------------------------------------------
    def claim(self, value: Value, dim: int) -> None:
        space = (value, dim_index(dim, len(shape_of(value))))
        self.claimed.add(space)
        self.spaces.claimed.add(space)

    def same(self, a: Value, da: int, b: Value, db: int) -> None:
        """Element k of a[da] is element k of b[db]."""
        da, db = dim_index(da, len(shape_of(a))), dim_index(db, len(shape_of(b)))
        self.claim(a, da)
        self.claim(b, db)
        na, nb = self.size(a, da), self.size(b, db)
        if na is None and nb is None:
            self._same_composite(a, da, b, db)
            return
        if na is None or nb is None or na != nb:
            reason = Reason.at(self.node, Cause.SIZES, "relates dims of different sizes")
            self.spaces.freeze((a, da), reason)
            self.spaces.freeze((b, db), reason)
            return
        k = np.arange(na)
        self.spaces.link((a, da), k, (b, db), k)

    def _same_composite(self, a: Value, da: int, b: Value, db: int) -> None:
        """Two symbolic dims: c * batch on both sides relates their c indices, layout carried over."""
        ca, cb = composite(shape_of(a)[da]), composite(shape_of(b)[db])
        if ca is None and cb is None:
            return
        la, lb = self.spaces.layout.get((a, da)), self.spaces.layout.get((b, db))
        if ca is None or cb is None or str(ca) != str(cb) or (la and lb and la != lb) or not (la or lb):
            reason = Reason.at(self.node, Cause.SIZES, "relates a batch-merged dim it cannot follow")
            self.spaces.freeze((a, da), reason)
            self.spaces.freeze((b, db), reason)
            return
        self.spaces.layout[(a, da)] = self.spaces.layout[(b, db)] = la or lb
        k = np.arange(ca[0])
        self.spaces.link((a, da), k, (b, db), k)

    def link(self, a: Value, da: int, ia, b: Value, db: int, ib) -> None:
        """Element ia[k] of a[da] is element ib[k] of b[db]."""
        da, db = dim_index(da, len(shape_of(a))), dim_index(db, len(shape_of(b)))
        self.claim(a, da)
        self.claim(b, db)
        if not self.spaces.link((a, da), ia, (b, db), ib):
            reason = Reason.at(self.node, Cause.SIZES, "maps a symbolic dim")
            self.spaces.freeze((a, da), reason)
            self.spaces.freeze((b, db), reason)

    def freeze(self, value: Value, dim: int, why: str, elements=None, cause: Cause = Cause.OP) -> None:
        dim = dim_index(dim, len(shape_of(value)))
        self.claim(value, dim)
        self.spaces.freeze((value, dim), Reason.at(self.node, cause, why), elements)

    def inexact(self, value: Value, dim: int, why: str) -> None:
        """Pruning this dim is allowed but changes values (e.g. LayerNorm statistics)."""
        self.spaces.mark_inexact((value, dim_index(dim, len(shape_of(value)))), f"{describe(self.node)}: {why}")

    def mark_heads(self, value: Value, dim: int) -> None:
        """Note that this dim indexes attention heads (used to choose reshape factors)."""
        ids = self.spaces.ids((value, dim_index(dim, len(shape_of(value)))))
        if ids is not None:
            self.spaces.heads.append(ids)

    @property
    def attention(self) -> str:
        """'heads', 'head-dim' or 'none': which attention dims may be pruned."""
        return self.hints.attention if self.hints is not None else "heads"

    def freeze_unclaimed(self, reason: Reason) -> None:
        for value in self.inputs() + self.outputs():
            for dim in range(len(shape_of(value))):
                if (value, dim) not in self.claimed:
                    self.spaces.freeze((value, dim), reason)


class RewriteContext:
    """What a rewrite hook sees: the old node, its copy in the new graph, the new shapes."""

    def __init__(self, old: fx.Node, new: fx.Node, new_shape, keep, val_map: dict | None = None,
                 constants: dict | None = None):
        self.old = old
        self.new = new
        self._new_shape = new_shape
        self._keep = keep
        self._val_map = val_map if val_map is not None else {}
        self._constants = constants if constants is not None else {}

    def mapped(self, old_node: fx.Node) -> fx.Node:
        """The new graph's copy of an old-graph node."""
        return self._val_map[old_node]

    def constant(self, tensor) -> fx.Node:
        """A get_attr node (inserted before the node being rewritten) for a new constant tensor."""
        name = f"_graphprune_constant_{len(self._constants)}"
        self._constants[name] = tensor
        with self.new.graph.inserting_before(self.new):
            return self.new.graph.get_attr(name)

    def new_shape(self, value: Value) -> tuple:
        """Shape of an (old-graph) value after pruning; symbolic dims stay symbolic."""
        return self._new_shape(value)

    @staticmethod
    def old_shape(value: Value) -> tuple:
        return shape_of(value)

    def keep(self, space: Space) -> np.ndarray | None:
        """Kept original indices of a space (sorted), or None if untouched."""
        return self._keep(space)

    def set_arg(self, i: int, value) -> None:
        args = list(self.new.args)
        args[i] = value
        self.new.args = tuple(args)

"""Index spaces: every integer-sized dim of every tensor value gets a range of element ids.

A *value* is one tensor in the graph: `(node, None)` for a node that produces a tensor,
`(node, k)` for the k-th tensor of a node that produces a tuple. A *space* is
`(value, dim)`. Op rules relate elements of spaces; two related elements must be
removed together. Connected components of that relation are the prunable channels.

Dims with a symbolic size (the dynamic batch axis) get no elements; a rule that
couples them to an integer dim freezes the integer dim instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx as fx

Value = tuple  # (fx.Node, int | None)
Space = tuple  # (Value, int)


def value_of(value: Value):
    """The FakeTensor (or other meta value) behind a value."""
    node, index = value
    val = node.meta.get("val")
    if index is None:
        return val
    return val[index] if isinstance(val, (list, tuple)) and index < len(val) else None


def is_tensor_value(value: Value) -> bool:
    return isinstance(value_of(value), torch.Tensor)


def tensor_values(node: fx.Node) -> list[Value]:
    """The tensor values a node produces."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return [(node, None)]
    if isinstance(val, (list, tuple)):
        return [(node, k) for k, v in enumerate(val) if isinstance(v, torch.Tensor)]
    return []


def shape_of(value: Value) -> tuple:
    return tuple(value_of(value).shape)


def composite(size) -> tuple[int, object] | None:
    """(c, s) for a symbolic size c * s (an integer times one symbol, c > 1), else None.

    Such a dim is the batch merged with c other indices (multi-head attention's
    [L, B * H, E] layout); its space holds the c indices, and `Spaces.layout` says whether
    the symbol is the major ('sc') or the minor ('cs') factor.
    """
    if isinstance(size, int) or not hasattr(size, "node"):
        return None
    expr = size.node.expr
    coeff, rest = expr.as_coeff_Mul()
    if coeff.is_Integer and int(coeff) > 1 and rest.is_Symbol:
        return int(coeff), rest
    return None


def space_size(size) -> int | None:
    """How many prunable indices a dim of this size has: its int size, c for c * batch, else None."""
    n = int_size(size)
    if n is not None:
        return n
    c = composite(size)
    return c[0] if c else None


def int_size(size) -> int | None:
    """A concrete dim size, or None for a symbolic one."""
    if isinstance(size, int):
        return size
    try:
        return int(size.node.maybe_as_int()) if size.node.maybe_as_int() is not None else None
    except AttributeError:
        return None


@dataclass
class Spaces:
    """Element ids per space, the element relation, and what is frozen and why."""

    base: dict = field(default_factory=dict)  # Space -> (first id, size)
    total: int = 0
    edges: list = field(default_factory=list)  # (ids_a, ids_b) arrays
    frozen: list = field(default_factory=list)  # (ids, reason)
    inexact: list = field(default_factory=list)  # (ids, reason): pruning changes values
    links: list = field(default_factory=list)  # (Space, Space) pairs that share elements
    layout: dict = field(default_factory=dict)  # composite Space -> 'sc' (batch major) or 'cs'
    heads: list = field(default_factory=list)  # ids of attention-head dims (for factor hints)
    claimed: set = field(default_factory=set)  # spaces some op's rule relates or freezes itself (a channel-like dim)

    def ids(self, space: Space) -> np.ndarray | None:
        """Element ids of a space (allocated on first use), None if its size is symbolic."""
        if space not in self.base:
            value, dim = space
            size = space_size(shape_of(value)[dim])
            if size is None:
                self.base[space] = None
                return None
            self.base[space] = (self.total, size)
            self.total += size
        entry = self.base[space]
        if entry is None:
            return None
        start, size = entry
        return np.arange(start, start + size, dtype=np.int64)

    def size(self, space: Space) -> int | None:
        ids = self.ids(space)
        return None if ids is None else len(ids)

    def link(self, a: Space, ia: np.ndarray, b: Space, ib: np.ndarray) -> bool:
        """Relate element ia[k] of a with ib[k] of b. False if either is symbolic."""
        ids_a, ids_b = self.ids(a), self.ids(b)
        if ids_a is None or ids_b is None:
            return False
        self.edges.append((ids_a[np.asarray(ia, dtype=np.int64)], ids_b[np.asarray(ib, dtype=np.int64)]))
        self.links.append((a, b))
        return True

    def freeze(self, space: Space, reason: str, elements: np.ndarray | None = None) -> None:
        ids = self.ids(space)
        if ids is not None:
            self.frozen.append((ids if elements is None else ids[elements], reason))

    def mark_inexact(self, space: Space, reason: str) -> None:
        ids = self.ids(space)
        if ids is not None:
            self.inexact.append((ids, reason))

    def space_of_ids(self) -> tuple[list, np.ndarray]:
        """(spaces in id order, start offsets) for mapping element ids back to spaces."""
        spaces = [s for s, e in self.base.items() if e is not None]
        spaces.sort(key=lambda s: self.base[s][0])
        starts = np.array([self.base[s][0] for s in spaces], dtype=np.int64)
        return spaces, starts

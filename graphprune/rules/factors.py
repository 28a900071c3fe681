"""The algebra of a reshape: input and output dims paired into runs of equal product.

A reshape is factorised into runs of input dims and output dims with equal products (symbolic dims must
match one to one). In a run where one dim of size n = s_1 * ... * s_k maps to several, the flat index
f = sum_j i_j * stride_j relates element f of the single dim to element i_* = (f // stride_*) % s_* of ONE
factor (graphprune.rules.reshape chooses which); the others are frozen, so the kept set stays a rectangle.
Batch-merged dims (`c * batch`) carry their layout (batch major or minor) through the runs.
"""

from __future__ import annotations

from graphprune.rules.spaces import composite, int_size


def int_runs(left: list, right: list) -> list[tuple[list, list]] | None:
    """Pair runs of integer factors (d, n) with equal products; size-1 factors stand alone."""
    runs, i, j = [], 0, 0
    while i < len(left) or j < len(right):
        if i < len(left) and left[i][1] == 1:
            runs.append(([left[i]], []))
            i += 1
            continue
        if j < len(right) and right[j][1] == 1:
            runs.append(([], [right[j]]))
            j += 1
            continue
        if i >= len(left) or j >= len(right):
            return None
        gi, gj, pi, pj = [left[i]], [right[j]], left[i][1], right[j][1]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                if i >= len(left):
                    return None
                pi *= left[i][1]
                gi.append(left[i])
                i += 1
            else:
                if j >= len(right):
                    return None
                pj *= right[j][1]
                gj.append(right[j])
                j += 1
        runs.append((gi, gj))
    return runs


def _factors(shape: tuple, layouts: dict) -> list | None:
    """A shape as a sequence of ('s', d, symbol) and ('i', d, n) factors, major first.

    An integer dim is one factor; a symbolic size (batch, sequence, sequence + 1) is one,
    and a product of them one per term; c * batch is two, ordered by its recorded layout
    ('sc': batch major). None if a size is an integer times several symbolic terms or a
    layout is unknown.
    """
    out = []
    for d, size in enumerate(shape):
        n = int_size(size)
        if n is not None:
            out.append(("i", d, n))
            continue
        comp = composite(size)
        if comp is None:
            coeff, rest = size.node.expr.as_coeff_Mul()
            if coeff != 1:
                return None  # c * (several symbols): no recorded layout
            # batch, sequence, sequence + 1 (a class token), or their product: opaque symbolic factors
            out.extend(("s", d, str(a)) for a in (rest.args if rest.is_Mul else (rest,)))
            continue
        layout = layouts.get(d)
        if layout is None:
            return None
        pair = [("s", d, str(comp[1])), ("i", d, comp[0])]
        out.extend(pair if layout == "sc" else pair[::-1])
    return out


def _segments(factors: list) -> tuple[list, list]:
    """Split at symbols: (symbols in order, integer factors (d, n) between them).

    Symbols with no integer factor between them count as one: a view may merge or split
    them (batch and sequence into tokens) without moving any channel."""
    symbols, segments = [], [[]]
    for kind, d, x in factors:
        if kind == "s":
            if symbols and not segments[-1]:  # adjacent symbols (batch * sequence) are one, in any order
                symbols[-1] = "*".join(sorted([*symbols[-1].split("*"), x]))
                continue
            symbols.append(x)
            segments.append([])
        else:
            segments[-1].append((d, x))
    return symbols, segments


def factor_plan(src: tuple, dst: tuple, src_layouts: dict) -> tuple[list, dict] | None:
    """Runs of integer factors with equal products between src and dst, and the layouts
    that dst's batch-merged dims must then have; None when the reshape cannot be followed."""
    left = _factors(src, src_layouts)
    if left is None:
        return None
    merged = [d for d, size in enumerate(dst) if composite(size) is not None]
    for choice in range(2 ** len(merged)):
        layouts = {d: ("sc" if (choice >> k) & 1 == 0 else "cs") for k, d in enumerate(merged)}
        right = _factors(dst, layouts)
        if right is None:
            continue
        sym_l, seg_l = _segments(left)
        sym_r, seg_r = _segments(right)
        if sym_l != sym_r:
            continue
        runs = []
        for a, b in zip(seg_l, seg_r, strict=True):
            found = int_runs(a, b)
            if found is None:
                break
            runs.extend(found)
        else:
            return runs, layouts
    return None


def factor_runs(src: tuple, dst: tuple) -> list[tuple[list[int], list[int]]] | None:
    """Dims of src and dst paired in runs of equal product (no batch-merged dims)."""
    plan = factor_plan(src, dst, {})
    if plan is None:
        return None
    return [([d for d, _ in a], [d for d, _ in b]) for a, b in plan[0]]



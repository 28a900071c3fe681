"""Stage 2, the dependency graph: which elements of which dims must be removed together.

Each node's op rule relates elements of its input and output dims (graphprune.rules);
model inputs and outputs are frozen; dims a rule does not claim are frozen. Connected
components of the element relation are *channels*: the unit of removal. Spaces that
share any channel form a *group*: the set the planner prunes by one ratio.

A channel is a candidate for removal when it touches at least one parameter, at least
one activation (parameter entries that no computation reads, such as the unused rows of a
sliced position table, are left alone) and no frozen element. Every frozen channel keeps the reason it was frozen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch.fx as fx
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from graphprune.capture.pytrees import state_leaves
from graphprune.capture.trace import Captured
from graphprune.errors import PlanError, describe
from graphprune.reasons import Cause, Reason
from graphprune.rules import RuleContext, lookup
from graphprune.rules.spaces import Space, Spaces, shape_of, tensor_values

log = logging.getLogger(__name__)

def _rank(reason: Reason) -> int:
    """Which reason a channel frozen several times reports: a missing or failed rule, then the boundary."""
    if reason.cause in (Cause.NO_RULE, Cause.RULE_FAILED):
        return 0
    return 1 if reason.cause.boundary else 2


@dataclass(frozen=True, eq=False)
class Group:
    """Spaces coupled by shared channels, and which of its channels may go."""

    index: int
    name: str
    spaces: tuple
    reference: Space  # the parameter space whose width is reported
    channels: np.ndarray  # candidate channel ids (component labels)
    width: int  # elements of the reference space
    frozen_channels: int
    reason: str  # why the frozen channels are frozen; '' when none are
    inexact: str  # why pruning this group changes values; '' when it does not
    cause: Reason | None = None  # `reason` as data (graphprune.reasons); None when nothing is frozen
    # no op's rule claims any of its spaces (a kernel's spatial dims): a dim of the model's structure,
    # not a width that could be pruned; the report keeps it apart from the frozen groups
    structural: bool = False


@dataclass(frozen=True, eq=False)
class DependencyGraph:
    captured: Captured
    spaces: Spaces
    labels: np.ndarray  # element id -> channel id
    frozen: np.ndarray  # channel id -> frozen?
    reasons: dict  # channel id -> Reason
    groups: tuple
    unknown: tuple  # descriptions of nodes without a rule
    inexact: np.ndarray  # channel id -> does removing it change values even when dead?

    @property
    def num_channels(self) -> int:
        return len(self.frozen)


def _freeze_boundary(spaces: Spaces, node: fx.Node, why: Reason) -> None:
    for value in tensor_values(node):
        for d in range(len(shape_of(value))):
            spaces.freeze((value, d), why)


def _state_outputs(captured: Captured) -> set[int]:
    """Positions of the outputs that are state the model reads back (a KV cache, graphprune.capture.pytrees):
    the caller does not read their widths, so they narrow with the model instead of being frozen."""
    spec = getattr(captured.module, "_out_spec", None)
    return {i for i, inside in enumerate(state_leaves(spec)) if inside} if spec is not None else set()


def _output_values(node: fx.Node, state: set[int] = frozenset()) -> list:
    """The tensor values the caller reads: every output but the positions in `state`."""
    found = []

    def visit(a):
        if isinstance(a, fx.Node):
            found.extend(tensor_values(a))
        elif isinstance(a, (list, tuple)):
            for x in a:
                visit(x)
        elif isinstance(a, dict):
            for x in a.values():
                visit(x)

    outputs = node.args[0]
    if state and isinstance(outputs, (list, tuple)):
        outputs = [a for i, a in enumerate(outputs) if i not in state]
    visit(outputs)
    return found


ATTENTION_MODES = ("heads", "head-dim", "none")


class Hints:
    """What a first pass learned, for choosing which factor of a reshape is prunable.

    A factor frozen for reasons other than the reshape itself (a spatial dim, say) is
    avoided; an attention-head factor is preferred when heads are pruned and avoided when
    head dims are; then the largest factor wins.
    """

    def __init__(self, attention: str, spaces: Spaces | None = None, labels=None, blocked=None, head=None):
        self.attention = attention
        self.informed = spaces is not None
        self._spaces, self._labels, self._blocked, self._head = spaces, labels, blocked, head

    def _any(self, mask: np.ndarray, space: Space) -> bool:
        entry = self._spaces.base.get(space)
        if entry is None:
            return False
        return bool(mask[self._labels[self._spaces.ids(space)]].any())

    def choose(self, value, dims: list[int], sizes: list[int]) -> int:
        want_head = self.attention == "heads"

        def key(k: int):
            space = (value, dims[k])
            return (not self._any(self._blocked, space), self._any(self._head, space) == want_head, sizes[k], -k)

        return max(range(len(dims)), key=key)


def _learn(spaces: Spaces, attention: str) -> Hints:
    labels = _components(spaces)
    count = int(labels.max()) + 1 if len(labels) else 0
    blocked = np.zeros(count, dtype=bool)
    for ids, reason in spaces.frozen:
        if reason.cause is not Cause.RESHAPE_FACTOR and len(ids):
            blocked[labels[ids]] = True
    head = np.zeros(count, dtype=bool)
    for ids in spaces.heads:
        head[labels[ids]] = True
    return Hints(attention, spaces, labels, blocked, head)


def _apply_rules(captured: Captured, hints: Hints) -> tuple[Spaces, list]:
    spaces = Spaces()
    unknown = []
    for node in captured.graph.nodes:
        if node.op == "placeholder":
            _freeze_boundary(spaces, node, Reason(Cause.INPUT, node=node.name))
        elif node.op == "output":
            for value in _output_values(node, _state_outputs(captured)):
                for d in range(len(shape_of(value))):
                    spaces.freeze((value, d), Reason(Cause.OUTPUT))
        elif node.op in ("call_function", "call_method", "call_module"):
            ctx = RuleContext(node, spaces, hints)
            found = lookup(node) if node.op == "call_function" else None
            if found is None:
                unknown.append(describe(node))
                ctx.freeze_unclaimed(Reason.at(node, Cause.NO_RULE))
                continue
            try:
                found.couple(ctx)
            except Exception as exc:  # noqa: BLE001 - a rule that cannot handle a node freezes it
                log.warning("rule %s failed on %s: %s; its dims are frozen", found.name, describe(node), exc)
                unknown.append(f"{describe(node)} (rule {found.name} failed: {exc})")
                ctx.claimed.clear()
                ctx.freeze_unclaimed(Reason.at(node, Cause.RULE_FAILED, found.name))
                continue
            ctx.freeze_unclaimed(Reason.at(node, Cause.UNMAPPED))
    return spaces, unknown


def _components(spaces: Spaces) -> np.ndarray:
    n = spaces.total
    if spaces.edges:
        a = np.concatenate([e[0] for e in spaces.edges])
        b = np.concatenate([e[1] for e in spaces.edges])
    else:
        a = b = np.zeros(0, dtype=np.int64)
    matrix = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(matrix, directed=False)
    return labels.astype(np.int64)


def _frozen(spaces: Spaces, labels: np.ndarray) -> tuple[np.ndarray, dict]:
    count = int(labels.max()) + 1 if len(labels) else 0
    frozen = np.zeros(count, dtype=bool)
    reasons, rank = {}, {}
    for ids, reason in spaces.frozen:
        if len(ids) == 0:
            continue
        comps = np.unique(labels[ids])
        frozen[comps] = True
        p = _rank(reason)
        for c in comps.tolist():
            if c not in rank or p < rank[c]:
                rank[c], reasons[c] = p, reason
    return frozen, reasons


def _space_groups(spaces: Spaces) -> list[list[Space]]:
    parent: dict = {}

    def find(s):
        while parent.setdefault(s, s) != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    for a, b in spaces.links:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    for s, entry in spaces.base.items():
        if entry is not None:
            find(s)
    members: dict = {}
    for s in parent:
        members.setdefault(find(s), []).append(s)
    return list(members.values())


def _is_param(space: Space) -> bool:
    return space[0][0].op == "get_attr"


def build(captured: Captured, attention: str = "heads") -> DependencyGraph:
    """Run every op rule over the captured graph and group the channels.

    Two passes: the first learns which reshape factors are frozen or index attention heads
    (Hints); the second builds the relation with that knowledge. `attention` says what
    attention may lose: 'heads' (whole heads), 'head-dim' (the width of every head), 'none'.
    """
    if attention not in ATTENTION_MODES:
        raise PlanError(f"attention mode {attention!r} is not one of {ATTENTION_MODES}")
    first, _ = _apply_rules(captured, Hints(attention))
    spaces, unknown = _apply_rules(captured, _learn(first, attention))
    labels = _components(spaces)
    frozen, reasons = _frozen(spaces, labels)
    has_param = np.zeros(len(frozen), dtype=bool)
    flows = np.zeros(len(frozen), dtype=bool)  # touches an activation, not only parameters
    for space, entry in spaces.base.items():
        if entry is not None and not _is_param(space):
            flows[labels[spaces.ids(space)]] = True
    inexact: dict = {}
    inexact_mask = np.zeros(len(frozen), dtype=bool)
    for ids, reason in spaces.inexact:
        comps = np.unique(labels[ids])
        inexact_mask[comps] = True
        for c in comps.tolist():
            inexact.setdefault(c, reason)
    groups = []
    for members in _space_groups(spaces):
        params = [s for s in members if _is_param(s)]
        if not params:
            continue
        for s in params:
            has_param[labels[spaces.ids(s)]] = True
        ids = np.concatenate([spaces.ids(s) for s in members])
        comps = np.unique(labels[ids])
        candidates = comps[~frozen[comps] & has_param[comps] & flows[comps]]
        frozen_comps = comps[frozen[comps]]
        reference = max(params, key=lambda s: (spaces.size(s), len(shape_of(s[0])), -params.index(s)))
        cause = reasons.get(int(frozen_comps[0])) if len(frozen_comps) else None
        why_inexact = next((inexact[c] for c in candidates.tolist() if c in inexact), "")
        name = f"{reference[0][0].target}[{reference[1]}]"
        structural = not len(candidates) and cause is not None and cause.cause is Cause.UNMAPPED and \
            not any(s in spaces.claimed for s in members)
        groups.append(Group(len(groups), name, tuple(members), reference, candidates,
                            spaces.size(reference), len(frozen_comps), str(cause or ""), why_inexact, cause, structural))
    log.info("%d groups, %d channels, %d ops without a rule", len(groups), len(frozen), len(unknown))
    return DependencyGraph(captured, spaces, labels, frozen, reasons, tuple(groups), tuple(unknown), inexact_mask)

"""Why a dim is frozen, as data: a cause, and the op, node and source line it came from.

The dependency graph records a `Reason` with every frozen dim; code that needs to know
why (which reshape factors a first pass may avoid, which channels are the model's
boundary, which frozen groups the report shows) reads `cause`, never the wording.
`str(reason)` is the sentence `graphprune inspect` and the report print.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch.fx as fx

from graphprune.errors import user_frame


class Cause(enum.StrEnum):
    """What froze a dim. The value is the JSON report's spelling."""

    INPUT = "model input"  # a dim of a model input: the caller's tensors keep their shape
    OUTPUT = "model output"  # a dim of a model output: the caller reads it
    NO_RULE = "no rule"  # the op has no rule: nothing is guessed
    RULE_FAILED = "rule failed"  # the op's rule raised on this node
    UNMAPPED = "not mapped"  # the op's rule relates no element of this dim (spatial dims, reductions)
    RESHAPE_FACTOR = "reshape factor"  # a reshape splits this factor off a pruned dim
    SIZES = "sizes differ"  # an op relates dims of different or symbolic sizes
    OP = "op"  # the op's rule froze it for the reason in `detail`

    @property
    def boundary(self) -> bool:
        return self in (Cause.INPUT, Cause.OUTPUT)


@dataclass(frozen=True)
class Reason:
    cause: Cause
    detail: str = ""  # the rule's own words, for OP and SIZES; the rule's name for RULE_FAILED
    op: str = ""  # the fx target, e.g. 'aten.index.Tensor'
    node: str = ""  # the fx node's name
    where: str = ""  # the user's source line, 'file:line', or ''

    @classmethod
    def at(cls, node: fx.Node, cause: Cause, detail: str = "") -> Reason:
        return cls(cause, detail, str(node.target), node.name, user_frame(node))

    def _node(self) -> str:
        return f"{self.node} ({self.op})" + (f" at {self.where}" if self.where else "")

    def __str__(self) -> str:
        if self.cause is Cause.INPUT:
            return f"model input {self.node}"
        if self.cause is Cause.OUTPUT:
            return "model output"
        if self.cause is Cause.NO_RULE:
            return f"no rule for {self.op} ({self._node()})"
        if self.cause is Cause.RULE_FAILED:
            return f"rule {self.detail} could not handle {self._node()}"
        if self.cause is Cause.UNMAPPED:
            return f"{self._node()} does not map this dim"
        if self.cause is Cause.SIZES:
            return f"{self._node()} {self.detail}"
        return f"{self._node()}: {self.detail}"

    def to_dict(self) -> dict:
        return {"cause": self.cause.value, "detail": self.detail, "op": self.op, "node": self.node, "where": self.where}


class Outcome(enum.StrEnum):
    """What became of a data-driven step judged on held-out data (graphprune.pipeline.decide). The value is
    the JSON report's spelling."""

    KEPT = "kept"  # held-out fidelity as good or better with the step
    UNDONE = "undone: worse on held-out data"  # the step made held-out fidelity worse; the model is as before it
    UNJUDGED = "kept unjudged: no held-out data"  # no held-out slice (a DataLoader factory cannot be split)
    # removed blocks without an equal budget for widths alone to reach (a ratio, a latency search); detail says which
    UNCOMPARED = "kept unjudged: nothing to compare with at an equal budget"
    NOTHING = "nothing to do"  # the step found nothing to change

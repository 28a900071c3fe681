"""Op rules; importing this package registers all of them."""

from graphprune.rules import (  # noqa: F401
    attention,
    concat,
    conv,
    creation,
    einsum,
    linear,
    meta,
    norm,
    pointwise,
    pool,
    recurrent,
    reshape,
    shape,
    shuffle,
)
from graphprune.rules.registry import RULES, RewriteContext, RuleContext, lookup, rule

__all__ = ["RULES", "RewriteContext", "RuleContext", "lookup", "rule"]

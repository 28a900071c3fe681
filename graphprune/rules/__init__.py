"""Op rules; importing this package registers all of them."""

from graphprune.rules import concat, conv, linear, meta, norm, pointwise, pool, shape  # noqa: F401
from graphprune.rules.registry import RULES, RewriteContext, RuleContext, lookup, rule

__all__ = ["RULES", "RewriteContext", "RuleContext", "lookup", "rule"]

"""graphprune: a structured-pruning compiler for PyTorch.

Give it a model and a target ratio; get back a smaller dense model with channels,
neurons and groups physically removed, every coupled tensor kept consistent, checked.
"""

from graphprune import data, importance
from graphprune.api import analyze, plan, rewrite, shrink
from graphprune.errors import GraphPruneError
from graphprune.plan.types import PlanOptions
from graphprune.rewrite.recalibrate import recalibrate

__version__ = "0.1.0"
__all__ = ["GraphPruneError", "PlanOptions", "analyze", "data", "importance", "plan", "recalibrate", "rewrite", "shrink",
           "__version__"]

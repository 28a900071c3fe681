"""graphprune: a structured-pruning compiler for PyTorch.

Give it a model and a target; get back a smaller dense model with channels, neurons, heads and
layers physically removed, every coupled tensor kept consistent, checked.

    import graphprune
    from graphprune import CalibrationOptions, PlanOptions

    pruned, report = graphprune.shrink(model, x, plan=PlanOptions(ratio=0.4))
    data = graphprune.data.load_data("train.npz", x)
    pruned, report = graphprune.shrink(model, x, data=data, plan=PlanOptions(criterion="taylor", target_macs=0.5),
                                       calibration=CalibrationOptions(batches=32))
    graphprune.export_onnx(pruned, (x,), None, "pruned.onnx")
"""

from graphprune import data, importance
from graphprune.api import analyze, plan, rewrite, shrink
from graphprune.data.options import CalibrationOptions
from graphprune.depth.options import DepthOptions
from graphprune.errors import (
    ExportError,
    GraphPruneError,
    InputError,
    LoadError,
    PlanError,
    RewriteError,
    TraceError,
    VerificationError,
)
from graphprune.plan.types import PlanOptions
from graphprune.report.report import Report
from graphprune.rewrite.recalibrate import recalibrate

__version__ = "0.1.0"

# imported when first used: ONNX, ONNX Runtime and the search are heavy, and most commands need none of them
_LAZY = {"export_onnx": ("graphprune.onnx.export", "export_onnx"), "SearchRequest": ("graphprune.search.request", "SearchRequest"),
         "TrainOptions": ("graphprune.recovery.options", "TrainOptions"), "finetune": ("graphprune.recovery.loop", "finetune")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'graphprune' has no attribute {name!r}")


__all__ = ["CalibrationOptions", "DepthOptions", "ExportError", "GraphPruneError", "InputError", "LoadError", "PlanError",
           "PlanOptions", "Report", "RewriteError", "SearchRequest", "TraceError", "TrainOptions", "VerificationError",
           "analyze", "data", "export_onnx", "finetune", "importance", "plan", "recalibrate", "rewrite", "shrink",
           "__version__"]

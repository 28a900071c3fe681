"""The typed errors graphprune raises.

Every message is one line that names the cause and what to do about it. Errors
about a graph node name the node, its op and the user's source line.
"""

from __future__ import annotations

import torch.fx as fx


class GraphPruneError(Exception):
    """Base class: anything graphprune refuses, with the reason."""


class InputError(GraphPruneError):
    """The user's input (a path, an option, an example input) is unusable."""


class LoadError(InputError):
    """A model or input file could not be loaded."""


class TraceError(GraphPruneError):
    """torch.export could not capture the model. `detail` is the cause alone (torch's first line),
    for messages that quote it inside their own sentence."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail if detail is not None else message


class PlanError(GraphPruneError):
    """The planner cannot meet the request (ratio, constraints)."""


class RewriteError(GraphPruneError):
    """A node could not be rewritten for the pruned shapes."""


class VerificationError(GraphPruneError):
    """The pruned model failed a check it must pass; nothing was written."""


class ExportError(GraphPruneError):
    """ONNX export, simplification or the ONNX Runtime parity check failed."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, or its type's name if it has none."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__


def user_frame(node: fx.Node) -> str:
    """The last line of the user's code in a node's stack trace, or ''."""
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.splitlines() if ln.strip().startswith("File ")]
    for line in reversed(lines):
        if "/torch/" not in line and "/graphprune/" not in line:
            return line.replace('File "', "").replace('", line ', ":").split(",")[0]
    return lines[-1].replace('File "', "").replace('", line ', ":").split(",")[0] if lines else ""


def describe(node: fx.Node) -> str:
    """`name (aten.op) at file:line` for messages."""
    where = user_frame(node)
    return f"{node.name} ({node.target})" + (f" at {where}" if where else "")

"""The exporters graphprune tries, in order: torch.onnx's dynamo exporter, then TorchScript; onnxsim simplification;
ONNX dims named after the example's dynamic dims.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch

from graphprune.errors import first_line
from graphprune.onnx.signature import Job, names

log = logging.getLogger(__name__)


def export_dynamo(job: Job, file: Path) -> None:
    # Dim.AUTO, not a named Dim: on `ep.module()` GraphModules a named Dim trips export's shape
    # guards and torch.onnx then silently drops it; AUTO keeps the batch symbolic (measured).
    auto = torch.export.Dim.AUTO
    dims = tuple(({0: auto, 1: auto} if s else {0: auto}) if b else None
                 for b, s in zip(job.batch_axes, job.seq_axes, strict=True))
    shapes = (dims,) if any(job.batch_axes) else None
    with quiet():
        torch.onnx.export(
            job.module,
            job.traced,
            str(file),
            dynamo=True,
            dynamic_shapes=shapes,
            external_data=job.large,
            verbose=False,
            **names(job),
        )


def export_torchscript(job: Job, file: Path) -> None:
    axes = {n: ({0: "batch", 1: "sequence"} if s else {0: "batch"})
            for n, b, s in zip(job.input_names, job.batch_axes, job.seq_axes, strict=True) if b}
    if axes:
        axes.update({n: {0: "batch"} for n, b in zip(job.output_names, job.out_batch_axes, strict=True) if b})
    # PRESERVE: EVAL would call train(False) on the user's model (and ep.module() refuses train()).
    with quiet():
        torch.onnx.export(
            job.module,
            job.traced,
            str(file),
            dynamo=False,
            dynamic_axes=axes or None,
            training=torch.onnx.TrainingMode.PRESERVE,
            **names(job),
        )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter warnings that are expected here; the checks below judge the result."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*(training mode|constant folding|axis name).*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def name_dims(proto: onnx.ModelProto, job: Job) -> None:
    """Rename the exporter's batch and sequence symbols (dynamo writes e.g. `s77`), in place."""
    inputs = {i.name: i for i in proto.graph.input}
    for axis, flags, name in ((0, job.batch_axes, "batch"), (1, job.seq_axes, "sequence")):
        symbols = {
            inputs[n].type.tensor_type.shape.dim[axis].dim_param
            for n, b in zip(job.input_names, flags, strict=True)
            if b and n in inputs and len(inputs[n].type.tensor_type.shape.dim) > axis
        }
        symbols.discard("")  # an input the exporter kept static
        for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param in symbols:  # inputs that never meet may get a symbol each
                    dim.dim_param = name


def simplify_model(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    import onnxsim  # imported here: slow to import, and only this stage uses it

    try:
        simplified, ok = onnxsim.simplify(proto)
    except Exception as exc:  # noqa: BLE001 - onnxsim raises anything; the unsimplified model is kept
        log.warning("onnxsim failed (%s); keeping the unsimplified model", first_line(exc, 200))
        return None
    if not ok:
        log.warning("onnxsim's own check failed; keeping the unsimplified model")
        return None
    return simplified



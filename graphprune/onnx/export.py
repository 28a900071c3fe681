"""Stage 5, export: a module and example inputs in, a verified ONNX file out.

The module is wrapped so that every exporter sees one flat signature,
`forward(*tensors) -> tuple[Tensor, ...]`: `tensors` are the tensor leaves of
`(args, kwargs)` in `torch.utils._pytree` order (non-tensor leaves are baked in
as constants) and the outputs are the tensor leaves of the model's output.

Exporters are tried in order, `dynamo` (`torch.onnx.export(dynamo=True)`) first,
then `torchscript` (`dynamo=False`); the first whose model passes every check wins.
Measured with torch 2.14 on resnet18, mobilenet_v3_small, shufflenet_v2_x0_5,
convnext_tiny and efficientnet_b0, eager, as `torch.export.export(m, (x,)).module()`
and as `graphprune.capture.trace` GraphModules: dynamo passes on all of them except the
statically captured shufflenet (batch baked into its channel shuffle; both fail);
torchscript, though 1.5-5x faster, also fails on the dynamic-batch capture of
shufflenet, where tracing turns the symbolic batch of the shuffle's view into a
constant. Torchscript is kept as the fallback; torch also marks it deprecated.

Every exported model is checked, simplified by onnxsim first and, if the
simplified one fails a check, unsimplified:

1. `onnx.checker.check_model`.
2. Parity in ONNX Runtime (CPU) on the example inputs. For each output o with
   PyTorch reference r: err = max|o - r|, scale = max|r|, rel = err / max(1, scale);
   the check fails when rel > atol, i.e. err > atol * max(1, scale).
3. With `dynamic_batch`, an example batch of 1 is traced as a batch of 2 (a size-1
   dim is specialised to the constant 1 by both exporters, e.g. in the batch-major views
   of nn.MultiheadAttention), and every batch input (dim 0 equal to the first input's dim 0)
   gets one more row: the model must run, batch outputs must grow by one row, and
   their first rows must match step 2's run to the same tolerance.
4. With `dynamic_sequence`, where the exported model takes any length, every token
   input (dim 1 of a 2-D integer batch input) gets one more token, repeating its last:
   ONNX Runtime must match PyTorch at that length.

Files are written in a hidden staging folder beside `path` and moved onto `path`
(plus `path.data` for models over the 2 GiB protobuf limit, `data_path`) with
`graphprune.io.files.atomic_outputs` only after every check has passed: the files appear
together, and a failure never leaves a file behind.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from graphprune.errors import ExportError, InputError, first_line
from graphprune.onnx.exporters import export_dynamo, export_torchscript, name_dims, simplify_model
from graphprune.onnx.files import onnx_size_bytes, publish, save
from graphprune.onnx.parity import Parity, verify
from graphprune.onnx.precision import as_float32, half_dtype
from graphprune.onnx.signature import Job, prepare

log = logging.getLogger(__name__)

DEFAULT_EXPORTERS: tuple[str, ...] = ("dynamo", "torchscript")
@dataclass(frozen=True)
class ExportResult:
    """What was written, by which exporter, and how closely it matches PyTorch."""

    path: Path
    exporter: str
    simplified: bool
    max_abs_error: float
    max_rel_error: float
    output_scale: float
    opset: int
    file_size_bytes: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_batch: bool = False
    dynamic_sequence: bool = False  # dim 1 of the token inputs
    source_dtype: str = ""  # a half-precision model's dtype: the file is float32 (graphprune.onnx.precision)
    notes: tuple[str, ...] = ()  # why earlier exporters or the simplified model were rejected


_EXPORTERS: dict[str, Callable[[Job, Path], None]] = {
    "dynamo": export_dynamo,
    "torchscript": export_torchscript,
}


@dataclass(frozen=True)
class _Candidate:
    file: Path
    exporter: str
    simplified: bool
    parity: Parity
    seconds: float


def _attempt(job: Job, exporter: str, stage: Path, name: str, simplify: bool, notes: list[str]) -> _Candidate:
    """Export with one exporter, then verify the simplified model, else the unsimplified one."""
    start = time.perf_counter()
    raw_file = stage / exporter / "export.onnx"
    raw_file.parent.mkdir()
    try:
        _EXPORTERS[exporter](job, raw_file)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported, then the next is tried
        raise ExportError(f"the exporter failed: {first_line(exc, 200)}") from exc
    proto = onnx.load(str(raw_file))
    name_dims(proto, job)
    simplified = simplify_model(proto) if simplify else None
    rejected = ""
    if simplified is not None:
        file = save(simplified, stage / f"{exporter}-simplified" / name)
        try:
            return _Candidate(file, exporter, True, verify(job, file), time.perf_counter() - start)
        except ExportError as exc:
            rejected = str(exc)
    file = save(proto, stage / f"{exporter}-plain" / name)
    parity = verify(job, file)
    if rejected:
        notes.append(f"{exporter}: the onnxsim-simplified model failed ({rejected}); kept the unsimplified one")
        log.warning(notes[-1])
    return _Candidate(file, exporter, False, parity, time.perf_counter() - start)


def _check_request(model, args, kwargs, path, exporters: Sequence[str], atol: float) -> Path:
    """Refuse what cannot be exported before anything runs; the output path as a Path."""
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(args, tuple) or not isinstance(kwargs or {}, dict):
        raise InputError("pass args as a tuple and kwargs as a dict or None")
    if unknown := [e for e in exporters if e not in _EXPORTERS]:
        raise InputError(f"unknown exporters {unknown}; choose from {sorted(_EXPORTERS)}")
    if not atol >= 0:
        raise InputError(f"atol must be >= 0, got {atol}")
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"folder {path.parent} does not exist; create it first")
    return path


def _first_verified(job: Job, exporters: Sequence[str], path: Path, simplify: bool, notes: list[str]) -> ExportResult | None:
    """The exporters tried in order in a staging folder beside `path`; the first model that passes every
    check is published to `path`. None when none did (`notes` says why each failed)."""
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for exporter in exporters:
            try:
                best = _attempt(job, exporter, stage, path.name, simplify, notes)
            except Exception as exc:  # noqa: BLE001 - any failure of one exporter: note it, try the next
                notes.append(f"{exporter}: {exc if isinstance(exc, ExportError) else first_line(exc, 200)}")
                log.warning("ONNX export with %s failed: %s", exporter, notes[-1])
                continue
            publish(best.file, path)
            return _result(job, best, path, notes)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return None


def export_onnx(
    model: torch.nn.Module,
    args: tuple,
    kwargs: dict | None,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    dynamic_sequence: bool = True,
    opset: int | None = None,
    simplify: bool = True,
    atol: float = 1e-4,
    exporters: Sequence[str] = DEFAULT_EXPORTERS,
    static_fallback: bool = True,
) -> ExportResult:
    """Export `model(*args, **kwargs)` to `path`, verified in ONNX Runtime; raises ExportError.

    `dynamic_sequence` also makes dim 1 of token inputs (2-D integer tensors) dynamic where
    the model allows it. With `static_fallback`, a model no exporter can give a dynamic
    sequence is exported with the example's sequence length, then one that cannot have a
    dynamic batch (an exporter's limit, e.g. LSTMs with dynamo) with the example's batch,
    and `notes` says so.

    The model is used in its current mode (call `model.eval()` first) and is not modified. A bfloat16 or
    float16 model is exported and checked as a float32 copy (graphprune.onnx.precision; `source_dtype`, `notes`).
    """
    path = _check_request(model, args, kwargs, path, exporters, atol)
    source = half_dtype(model, args, dict(kwargs or {}))
    if source is not None:  # ONNX Runtime's CPU kernels take float32: export a float32 copy
        twin, args32, kwargs32 = as_float32(model, args, dict(kwargs or {}))
        result = export_onnx(twin, args32, kwargs32, path, dynamic_batch=dynamic_batch, dynamic_sequence=dynamic_sequence,
                             opset=opset, simplify=simplify, atol=atol, exporters=exporters, static_fallback=static_fallback)
        name = str(source).removeprefix("torch.")
        note = (f"the model is {name}; exported and parity-checked in float32 (ONNX Runtime's CPU kernels "
                f"do not run {name}), from a float32 copy of the model")
        return dataclasses.replace(result, source_dtype=name, notes=(note, *result.notes))
    if model.training and not isinstance(model, torch.fx.GraphModule):  # ep.module() always reads as training
        log.warning("%s is in training mode; exporting it as it is (call model.eval() first for inference)", type(model).__name__)
    job = prepare(model, args, dict(kwargs or {}), dynamic_batch, dynamic_sequence, opset, atol)
    notes: list[str] = []
    result = _first_verified(job, exporters, path, simplify, notes)
    if result is not None:
        return result
    if any(job.seq_axes) and static_fallback:
        log.warning("no exporter kept the sequence dynamic; exporting %s with the example's sequence length", path.name)
        result = export_onnx(model, args, kwargs, path, dynamic_batch=dynamic_batch, dynamic_sequence=False, opset=opset,
                             simplify=simplify, atol=atol, exporters=exporters, static_fallback=True)
        note = "dynamic sequence failed with every exporter (" + " | ".join(notes) + "); exported with a fixed length"
        return dataclasses.replace(result, notes=(note, *result.notes))
    if dynamic_batch and static_fallback:
        log.warning("no exporter kept the batch dynamic; exporting %s with the example's fixed batch", path.name)
        result = export_onnx(model, args, kwargs, path, dynamic_batch=False, dynamic_sequence=False, opset=opset,
                             simplify=simplify, atol=atol, exporters=exporters, static_fallback=False)
        note = "dynamic batch failed with every exporter (" + " | ".join(notes) + "); exported with a fixed batch"
        return dataclasses.replace(result, notes=(note, *result.notes))
    raise ExportError(f"no exporter produced a verified ONNX model for {path.name}: " + " | ".join(notes))


def _graph_inputs(proto: onnx.ModelProto, job: Job) -> list:
    """The ONNX inputs in the order of job.input_names (None where the exporter dropped one)."""
    by_name = {i.name: i for i in proto.graph.input}
    return [by_name.get(n) for n in job.input_names]


def _dynamic_dim(value: onnx.ValueInfoProto | None, axis: int) -> bool:
    dims = value.type.tensor_type.shape.dim if value is not None else ()
    return len(dims) > axis and dims[axis].dim_param != ""


def _result(job: Job, best: _Candidate, path: Path, notes: list[str]) -> ExportResult:
    proto = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    weights = {t.name for t in proto.graph.initializer}
    log.info("exported %s with %s in %.1fs (max abs error %.2g)", path, best.exporter, best.seconds, best.parity.max_abs_error)
    return ExportResult(
        path=path,
        exporter=best.exporter,
        simplified=best.simplified,
        max_abs_error=best.parity.max_abs_error,
        max_rel_error=best.parity.max_rel_error,
        output_scale=best.parity.output_scale,
        opset=opset,
        file_size_bytes=onnx_size_bytes(path),
        input_names=tuple(i.name for i in proto.graph.input if i.name not in weights),
        output_names=tuple(o.name for o in proto.graph.output),
        dynamic_batch=job.batch is not None and any(job.batch_axes),
        dynamic_sequence=any(s and _dynamic_dim(i, 1) for i, s in zip(_graph_inputs(proto, job), job.seq_axes, strict=True)),
        notes=tuple(notes),
    )

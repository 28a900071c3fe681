"""Stage 5, export: a module and example inputs in, a verified ONNX file out.

The module is wrapped so that every exporter sees one flat signature,
`forward(*tensors) -> tuple[Tensor, ...]`: `tensors` are the tensor leaves of
`(args, kwargs)` in `torch.utils._pytree` order (non-tensor leaves are baked in
as constants) and the outputs are the tensor leaves of the model's output.

Exporters are tried in order, `dynamo` (`torch.onnx.export(dynamo=True)`) first,
then `torchscript` (`dynamo=False`); the first whose model passes every check wins.
Measured with torch 2.14 on resnet18, mobilenet_v3_small, shufflenet_v2_x0_5,
convnext_tiny and efficientnet_b0, eager, as `torch.export.export(m, (x,)).module()`
and as `graphprune.capture` GraphModules: dynamo passes on all of them except the
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
`graphprune.io.atomic_outputs` only after every check has passed: the files appear
together, and a failure never leaves a file behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch.utils import _pytree as pytree

from graphprune.capture import is_token_input
from graphprune.errors import ExportError, InputError, first_line
from graphprune.io import atomic_outputs
from graphprune.precision import as_float32, half_dtype

log = logging.getLogger(__name__)

DEFAULT_EXPORTERS: tuple[str, ...] = ("dynamo", "torchscript")
# Above this many bytes of initializers, weights go to `<name>.data` (protobuf caps a file at 2 GiB).
_PROTO_LIMIT = 1_500_000_000


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
    source_dtype: str = ""  # a half-precision model's dtype: the file is float32 (graphprune.precision)
    notes: tuple[str, ...] = ()  # why earlier exporters or the simplified model were rejected


@dataclass(frozen=True)
class _Parity:
    max_abs_error: float
    max_rel_error: float
    output_scale: float


class _Flat(torch.nn.Module):
    """`model(*args, **kwargs)` as `forward(*tensor_leaves) -> tuple of tensor output leaves`."""

    def __init__(self, model: torch.nn.Module, spec: pytree.TreeSpec, leaves: list, slots: list[int]):
        super().__init__()
        self.model = model
        self.training = model.training  # mirror the mode; never call train() on the user's model
        self._spec, self._slots = spec, slots
        self._constants = [None if i in slots else leaf for i, leaf in enumerate(leaves)]

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves = list(self._constants)
        for slot, tensor in zip(self._slots, tensors, strict=True):
            leaves[slot] = tensor
        args, kwargs = pytree.tree_unflatten(leaves, self._spec)
        out = self.model(*args, **kwargs)
        return tuple(x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor))


@dataclass(frozen=True, eq=False)
class _Job:
    """Everything an exporter and the checks need, fixed before the first exporter runs."""

    module: _Flat
    tensors: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    reference: tuple[np.ndarray, ...]
    batch: int | None  # the example's batch size when the batch is exported dynamic, else None
    batch_axes: tuple[bool, ...]  # per input: dim 0 is the batch
    seq_axes: tuple[bool, ...]  # per input: dim 1 is a token sequence, exported dynamic
    traced: tuple[torch.Tensor, ...]  # what the exporters trace: `tensors`, a batch of 1 tiled to 2
    out_batch_axes: tuple[bool, ...]  # per output: dim 0 is the batch
    opset: int | None
    large: bool  # weights over the protobuf limit: exporters must write external data
    atol: float


def _clean(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _key(k: Any) -> str:
    return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))


def _input_names(paths: list[tuple]) -> tuple[str, ...]:
    """`input_0` for positional leaves, the keyword for keyword leaves, nested keys appended."""
    names = []
    for path in paths:
        keys = [_key(k) for k in path]
        head = f"input_{keys[1]}" if keys[0] == "0" else keys[1]
        names.append(_clean("_".join([head, *keys[2:]])))
    return tuple(names)


def _output_names(out: Any) -> tuple[str, ...]:
    named = [p for p, x in pytree.tree_flatten_with_path(out)[0] if isinstance(x, torch.Tensor)]
    if len(named) == 1:
        return ("output",)
    return tuple(_clean("_".join(["output", *map(_key, p)]) if p else f"output_{i}") for i, p in enumerate(named))


def _reference(model: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
    """PyTorch's output for the parity check (a test patches this to break parity on purpose)."""
    with torch.no_grad():
        return model(*args, **kwargs)


def _prepare(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_batch: bool, dynamic_sequence: bool,
             opset: int | None, atol: float) -> _Job:
    with_paths, spec = pytree.tree_flatten_with_path((args, kwargs))
    leaves = [x for _, x in with_paths]
    slots = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
    if not slots:
        raise InputError("the example inputs hold no tensor; pass at least one tensor in args or kwargs")
    module = _Flat(model, spec, leaves, slots)
    tensors = tuple(leaves[i] for i in slots)
    out = _reference(model, args, kwargs)
    out_leaves = [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]
    if not out_leaves:
        raise ExportError("the model returns no tensor, so there is nothing to export; return tensors")
    batch = next((t.shape[0] for t in tensors if t.dim() > 0), None) if dynamic_batch else None
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    batch_axes = tuple(batch is not None and t.dim() > 0 and t.shape[0] == batch for t in tensors)
    return _Job(
        module=module,
        tensors=tensors,
        input_names=_input_names([with_paths[i][0] for i in slots]),
        output_names=_output_names(out),
        reference=tuple(t.detach().cpu().numpy() for t in out_leaves),
        batch=batch,
        batch_axes=batch_axes,
        seq_axes=tuple(dynamic_sequence and b and is_token_input(t) for t, b in zip(tensors, batch_axes, strict=True)),
        traced=tuple(torch.cat([t, t]) if b and batch == 1 else t for t, b in zip(tensors, batch_axes, strict=True)),
        out_batch_axes=tuple(batch is not None and t.dim() > 0 and t.shape[0] == batch for t in out_leaves),
        opset=opset,
        large=weights > _PROTO_LIMIT,
        atol=atol,
    )


def _names(job: _Job) -> dict:
    return {"input_names": list(job.input_names), "output_names": list(job.output_names), "opset_version": job.opset}


def _export_dynamo(job: _Job, file: Path) -> None:
    # Dim.AUTO, not a named Dim: on `ep.module()` GraphModules a named Dim trips export's shape
    # guards and torch.onnx then silently drops it; AUTO keeps the batch symbolic (measured).
    auto = torch.export.Dim.AUTO
    dims = tuple(({0: auto, 1: auto} if s else {0: auto}) if b else None
                 for b, s in zip(job.batch_axes, job.seq_axes, strict=True))
    shapes = (dims,) if any(job.batch_axes) else None
    with _quiet():
        torch.onnx.export(
            job.module,
            job.traced,
            str(file),
            dynamo=True,
            dynamic_shapes=shapes,
            external_data=job.large,
            verbose=False,
            **_names(job),
        )


def _export_torchscript(job: _Job, file: Path) -> None:
    axes = {n: ({0: "batch", 1: "sequence"} if s else {0: "batch"})
            for n, b, s in zip(job.input_names, job.batch_axes, job.seq_axes, strict=True) if b}
    if axes:
        axes.update({n: {0: "batch"} for n, b in zip(job.output_names, job.out_batch_axes, strict=True) if b})
    # PRESERVE: EVAL would call train(False) on the user's model (and ep.module() refuses train()).
    with _quiet():
        torch.onnx.export(
            job.module,
            job.traced,
            str(file),
            dynamo=False,
            dynamic_axes=axes or None,
            training=torch.onnx.TrainingMode.PRESERVE,
            **_names(job),
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter warnings that are expected here; the checks below judge the result."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*(training mode|constant folding|axis name).*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def _name_dims(proto: onnx.ModelProto, job: _Job) -> None:
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


_EXPORTERS: dict[str, Callable[[_Job, Path], None]] = {
    "dynamo": _export_dynamo,
    "torchscript": _export_torchscript,
}


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.HasField("raw_data"):
        return len(t.raw_data)
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize


def _save(proto: onnx.ModelProto, file: Path) -> Path:
    """Save `proto`; its weights go to `<file>.data` when they would pass the 2 GiB limit."""
    file.parent.mkdir(parents=True, exist_ok=True)
    large = sum(_tensor_bytes(t) for t in proto.graph.initializer) > _PROTO_LIMIT
    onnx.save_model(
        proto,
        str(file),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=f"{file.name}.data",
        size_threshold=1024,
    )
    return file


def data_path(path: Path) -> Path:
    """Where `export_onnx(..., path)` puts the weights of a model over the protobuf limit."""
    return path.with_name(f"{path.name}.data")


def onnx_files(path: str | Path) -> list[Path]:
    """An ONNX file and the external data files it references (they must move together)."""
    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    return [path, *(path.parent / loc for loc in sorted(locations))]


def stage_onnx(src: Path, dst: Path, stage: Callable[[Path], Path]) -> None:
    """Move the ONNX model at `src` and its data files into `stage`d files for `dst` (io.atomic_outputs)."""
    for file in onnx_files(src):
        os.replace(file, stage(dst.parent / file.relative_to(src.parent)))


def onnx_size_bytes(path: str | Path) -> int:
    """Bytes of an ONNX file plus the external data files it references."""
    return sum(file.stat().st_size for file in onnx_files(path))


def input_names(args: tuple, kwargs: dict) -> tuple[str, ...]:
    """The ONNX input names `export_onnx` gives the tensors of `(args, kwargs)`, in pytree order."""
    with_paths, _ = pytree.tree_flatten_with_path((args, kwargs))
    return _input_names([path for path, x in with_paths if isinstance(x, torch.Tensor)])


def _simplify(proto: onnx.ModelProto) -> onnx.ModelProto | None:
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


def _compare(names: Sequence[str], ref: Sequence[np.ndarray], got: Sequence[np.ndarray], atol: float) -> _Parity:
    """Per output: err = max|got - ref|, rel = err / max(1, max|ref|); fails when rel > atol."""
    if len(ref) != len(got):
        raise ExportError(f"the ONNX model has {len(got)} outputs, PyTorch {len(ref)}; try simplify=False or the other exporter")
    worst = _Parity(0.0, 0.0, 0.0)
    for name, r, g in zip(names, ref, got, strict=True):
        if r.shape != g.shape:
            raise ExportError(f"ONNX output '{name}' has shape {tuple(g.shape)}, PyTorch {tuple(r.shape)}; try the other exporter")
        r64, g64 = r.astype(np.float64), g.astype(np.float64)
        diff = np.where((r64 == g64) | (np.isnan(r64) & np.isnan(g64)), 0.0, np.abs(r64 - g64))
        err = float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0
        finite = np.abs(r64[np.isfinite(r64)])
        scale = float(finite.max()) if finite.size else 0.0
        rel = err / max(1.0, scale)
        if not rel <= atol:
            raise ExportError(
                f"ONNX Runtime output '{name}' differs from PyTorch by {err:.3g} "
                f"(> atol {atol:g} x max(1, {scale:.3g})); put the model in eval mode, "
                "try the other exporter or raise atol"
            )
        worst = _Parity(max(worst.max_abs_error, err), max(worst.max_rel_error, rel), max(worst.output_scale, scale))
    return worst


def _check_batch(job: _Job, sess: ort.InferenceSession, feeds: dict, got: list) -> None:
    """One more row in every batch input: batch outputs grow by one row and keep their rows."""
    fix = "pass dynamic_batch=False or capture the model with a dynamic batch"
    grow = {n for n, b in zip(job.input_names, job.batch_axes, strict=True) if b}
    more_feeds = {n: np.concatenate([v, v[:1]]) if n in grow else v for n, v in feeds.items()}
    try:
        more = sess.run(None, more_feeds)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types; this is the check failing
        raise ExportError(f"the ONNX model fails at batch {job.batch + 1} ({first_line(exc, 200)}); {fix}") from exc
    for name, old, new, is_batch in zip(job.output_names, got, more, job.out_batch_axes, strict=True):
        if not is_batch:
            continue
        if new.shape[0] != job.batch + 1:
            raise ExportError(f"ONNX output '{name}' keeps dim 0 = {new.shape[0]} at batch {job.batch + 1}; {fix}")
        _compare([name], [old], [new[: job.batch]], job.atol)


def _check_sequence(job: _Job, sess: ort.InferenceSession, feeds: dict) -> None:
    """One more token in every sequence input: ONNX Runtime matches PyTorch at that length too."""
    wanted = {n for n, s in zip(job.input_names, job.seq_axes, strict=True) if s}
    if not any(i.name in wanted and not isinstance(i.shape[1], int) for i in sess.get_inputs()):
        return  # the exporter kept the example's length (the model needs it): nothing dynamic to check
    longer = tuple(torch.cat([t, t[:, -1:]], dim=1) if s else t for t, s in zip(job.tensors, job.seq_axes, strict=True))
    length = longer[job.seq_axes.index(True)].shape[1]
    fix = "pass dynamic_sequence=False"
    try:
        reference = [t.detach().cpu().numpy() for t in _reference(job.module, longer, {})]
    except Exception as exc:  # noqa: BLE001 - the PyTorch model refuses the length its ONNX model takes
        raise ExportError(f"the ONNX model takes any sequence length but PyTorch fails at {length} "
                          f"({first_line(exc, 200)}); {fix}") from exc
    given = dict(zip(job.input_names, longer, strict=True))
    try:
        got = sess.run(None, {n: given[n].numpy() for n in feeds})
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types; this is the check failing
        raise ExportError(f"the ONNX model fails at sequence length {length} ({first_line(exc, 200)}); {fix}") from exc
    _compare(job.output_names, reference, got, job.atol)


def _verify(job: _Job, file: Path) -> _Parity:
    try:
        onnx.checker.check_model(str(file))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejects the model: {first_line(exc, 200)}; try the other exporter") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    given = {n: t.detach().cpu().numpy() for n, t in zip(job.input_names, job.tensors, strict=True)}
    try:
        sess = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        feeds = {i.name: given[i.name] for i in sess.get_inputs()}
        got = sess.run(None, feeds)
    except KeyError as exc:
        raise ExportError(f"the ONNX model wants input {exc} that the example does not have; try the other exporter") from exc
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types; this is the check failing
        raise ExportError(f"ONNX Runtime cannot run the model ({first_line(exc, 200)}); try another opset or exporter") from exc
    parity = _compare(job.output_names, job.reference, got, job.atol)
    if job.batch is not None and any(job.batch_axes):
        _check_batch(job, sess, feeds, got)
    if any(job.seq_axes):
        _check_sequence(job, sess, feeds)
    return parity


@dataclass(frozen=True)
class _Candidate:
    file: Path
    exporter: str
    simplified: bool
    parity: _Parity
    seconds: float


def _attempt(job: _Job, exporter: str, stage: Path, name: str, simplify: bool, notes: list[str]) -> _Candidate:
    """Export with one exporter, then verify the simplified model, else the unsimplified one."""
    start = time.perf_counter()
    raw_file = stage / exporter / "export.onnx"
    raw_file.parent.mkdir()
    try:
        _EXPORTERS[exporter](job, raw_file)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported, then the next is tried
        raise ExportError(f"the exporter failed: {first_line(exc, 200)}") from exc
    proto = onnx.load(str(raw_file))
    _name_dims(proto, job)
    simplified = _simplify(proto) if simplify else None
    rejected = ""
    if simplified is not None:
        file = _save(simplified, stage / f"{exporter}-simplified" / name)
        try:
            return _Candidate(file, exporter, True, _verify(job, file), time.perf_counter() - start)
        except ExportError as exc:
            rejected = str(exc)
    file = _save(proto, stage / f"{exporter}-plain" / name)
    parity = _verify(job, file)
    if rejected:
        notes.append(f"{exporter}: the onnxsim-simplified model failed ({rejected}); kept the unsimplified one")
        log.warning(notes[-1])
    return _Candidate(file, exporter, False, parity, time.perf_counter() - start)


def _publish(src: Path, dst: Path) -> None:
    """Move the checked model and its `.data`, if any, onto `dst`: all files or none."""
    with atomic_outputs() as stage:
        stage_onnx(src, dst, stage)


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
    float16 model is exported and checked as a float32 copy (graphprune.precision; `source_dtype`, `notes`).
    """
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
    job = _prepare(model, args, dict(kwargs or {}), dynamic_batch, dynamic_sequence, opset, atol)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    notes: list[str] = []
    try:
        for exporter in exporters:
            try:
                best = _attempt(job, exporter, stage, path.name, simplify, notes)
            except Exception as exc:  # noqa: BLE001 - any failure of one exporter: note it, try the next
                notes.append(f"{exporter}: {exc if isinstance(exc, ExportError) else first_line(exc, 200)}")
                log.warning("ONNX export with %s failed: %s", exporter, notes[-1])
                continue
            _publish(best.file, path)
            return _result(job, best, path, notes)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
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


def _graph_inputs(proto: onnx.ModelProto, job: _Job) -> list:
    """The ONNX inputs in the order of job.input_names (None where the exporter dropped one)."""
    by_name = {i.name: i for i in proto.graph.input}
    return [by_name.get(n) for n in job.input_names]


def _dynamic_dim(value: onnx.ValueInfoProto | None, axis: int) -> bool:
    dims = value.type.tensor_type.shape.dim if value is not None else ()
    return len(dims) > axis and dims[axis].dim_param != ""


def _result(job: _Job, best: _Candidate, path: Path, notes: list[str]) -> ExportResult:
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

"""Parity of an exported model with PyTorch in ONNX Runtime.

For each output o with PyTorch reference r: err = max|o - r|, scale = max|r|, rel = err / max(1, scale); the
check fails when rel > atol. A dynamic batch must grow by one row with equal first rows; a dynamic sequence
must take one more token and still match PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from graphprune.errors import ExportError, first_line
from graphprune.onnx.signature import Job, run_reference


@dataclass(frozen=True)
class Parity:
    max_abs_error: float
    max_rel_error: float
    output_scale: float


def _compare(names: Sequence[str], ref: Sequence[np.ndarray], got: Sequence[np.ndarray], atol: float) -> Parity:
    """Per output: err = max|got - ref|, rel = err / max(1, max|ref|); fails when rel > atol."""
    if len(ref) != len(got):
        raise ExportError(f"the ONNX model has {len(got)} outputs, PyTorch {len(ref)}; try simplify=False or the other exporter")
    worst = Parity(0.0, 0.0, 0.0)
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
        worst = Parity(max(worst.max_abs_error, err), max(worst.max_rel_error, rel), max(worst.output_scale, scale))
    return worst


def _check_batch(job: Job, sess: ort.InferenceSession, feeds: dict, got: list) -> None:
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


def _check_sequence(job: Job, sess: ort.InferenceSession, feeds: dict) -> None:
    """One more token in every sequence input: ONNX Runtime matches PyTorch at that length too."""
    wanted = {n for n, s in zip(job.input_names, job.seq_axes, strict=True) if s}
    if not any(i.name in wanted and not isinstance(i.shape[1], int) for i in sess.get_inputs()):
        return  # the exporter kept the example's length (the model needs it): nothing dynamic to check
    longer = tuple(torch.cat([t, t[:, -1:]], dim=1) if s else t for t, s in zip(job.tensors, job.seq_axes, strict=True))
    length = longer[job.seq_axes.index(True)].shape[1]
    fix = "pass dynamic_sequence=False"
    try:
        reference = [t.detach().cpu().numpy() for t in run_reference(job.module, longer, {})]
    except Exception as exc:  # noqa: BLE001 - the PyTorch model refuses the length its ONNX model takes
        raise ExportError(f"the ONNX model takes any sequence length but PyTorch fails at {length} "
                          f"({first_line(exc, 200)}); {fix}") from exc
    given = dict(zip(job.input_names, longer, strict=True))
    try:
        got = sess.run(None, {n: given[n].numpy() for n in feeds})
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types; this is the check failing
        raise ExportError(f"the ONNX model fails at sequence length {length} ({first_line(exc, 200)}); {fix}") from exc
    _compare(job.output_names, reference, got, job.atol)


def verify(job: Job, file: Path) -> Parity:
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



"""ONNX Runtime sessions pinned alike for fair timing: threads, sequential execution, no spinning; the
execution providers present (CUDA only where a GPU is).
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from graphprune.errors import InputError, first_line

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# CUDA: cuDNN's convolution algorithm chosen by exhaustive search, not a heuristic that differs between runs
PROVIDER_OPTIONS: dict[str, dict[str, str]] = {
    CUDA: {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1"},
}
def _gpu_present() -> bool:
    import torch  # imported here: only needed to see whether a GPU exists

    return torch.cuda.device_count() > 0


def available_providers() -> list[str]:
    """CPU always; CUDA when this onnxruntime build has it and a GPU is present."""
    found = [CPU]
    if CUDA in ort.get_available_providers() and _gpu_present():
        found.append(CUDA)
    return found


def session_options(threads: int) -> ort.SessionOptions:
    """The pinned options every benchmarked session gets."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def make_session(path: Path, provider: str, threads: int) -> ort.InferenceSession:
    """A pinned session on `provider`; refuses ORT's silent fallback to another provider."""
    providers = [(provider, PROVIDER_OPTIONS.get(provider, {}))]
    try:
        sess = ort.InferenceSession(str(path), session_options(threads), providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types: the file is the user's input
        raise InputError(f"onnxruntime cannot load {path.name} ({first_line(exc)}); check it with onnx.checker") from exc
    if sess.get_providers()[:1] != [provider]:
        raise InputError(
            f"onnxruntime ran {path.name} on {sess.get_providers()} instead of {provider}; "
            "check the provider's install (e.g. onnxruntime-gpu and CUDA libraries) or drop it from providers"
        )
    return sess



"""Peak memory of one ONNX Runtime session: resident-set growth from creating it and running warm-up, less the
inputs, measured in a child forked before any timing session exists (Linux only; None elsewhere and for CUDA).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import resource
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from graphprune.errors import InputError
from graphprune.onnx.feeds import make_feeds
from graphprune.onnx.sessions import CPU, make_session

# ru_maxrss restarts at the current RSS in a forked child on Linux; the memory column relies on it.
CAN_FORK = sys.platform.startswith("linux")
_MEMORY_TIMEOUT_S = 300.0
def _rss_bytes() -> int:
    """Current resident set size (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

log = logging.getLogger(__name__)


def release_freed_memory() -> None:
    """Return freed heap to the OS before forking, so children start lean (glibc only)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _peak_child(send: Connection, path: Path, provider: str, batch: int, opts: dict) -> None:
    """In a forked child: ru_maxrss starts at the current RSS, so peak - start is this model's growth."""
    try:
        start = _rss_bytes()
        sess = make_session(path, provider, opts["threads"])
        feed = make_feeds(sess, path, batch, opts["inputs"])
        for _ in range(max(1, opts["warmup"])):
            sess.run(None, feed)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        send.send(max(0, peak - start - sum(a.nbytes for a in feed.values())))
    except InputError as exc:  # the model or its inputs are unusable: the parent refuses them
        send.send(exc)
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which reports it and times the model anyway
        send.send(f"{type(exc).__name__}: {exc}")


def isolated_peak(path: Path, provider: str, batch: int, opts: dict) -> int | None:
    """Peak memory of one model on the CPU provider, measured in a forked child; None where not measurable."""
    if provider != CPU or not CAN_FORK:
        return None
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_peak_child, args=(send, path, provider, batch, opts), daemon=True)
    child.start()
    send.close()
    answer: int | str | InputError = "no answer in time"
    with contextlib.suppress(EOFError):
        if receive.poll(_MEMORY_TIMEOUT_S):
            answer = receive.recv()
    child.join(5)
    if child.is_alive():
        child.kill()
    if isinstance(answer, int):
        return answer
    if isinstance(answer, InputError):  # the timed sessions would fail the same way: refuse now, one line
        raise answer
    log.warning("peak memory of %s at batch %d not measured: %s", path.name, batch, answer)
    return None



"""Progress of the passes over calibration data, and the seconds each stage took.

Every stage that touches data (scoring, allocation, the refit, BatchNorm re-estimation) counts its
units of work, batches or batches x layers, through one `Stages` object, so a front end can show a
bar with an estimate and the report can give each stage's seconds:

    with stages.stage("refit", total=len(layers) * len(batches)) as tick:
        for ...:
            ...
            tick()            # one unit done (tick(n): n units)

`stages(text)` names a step that does not count (capturing, planning). The base class draws
nothing: it passes step names to `say` and adds up each stage's seconds (a stage run twice, as
recalibration is under iterative pruning, sums). graphprune.recovery.progress.StageBar draws it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Stages:
    """Step names to `say`, per-stage seconds in `seconds`; subclasses draw counted stages."""

    def __init__(self, say: Callable[[str], None] | None = None):
        self.say = say
        self.seconds: dict[str, float] = {}
        self._depth = 0

    def __call__(self, text: str) -> None:
        if self.say is not None:
            self.say(text)

    @contextmanager
    def stage(self, name: str, total: int, text: str | None = None) -> Iterator[Callable[..., None]]:
        """A counted stage of `total` units, named `name` in `seconds`; yields tick(n=1). A stage inside
        another is timed but not drawn: its ticks are not the outer stage's units."""
        outer = self._depth == 0
        self._depth += 1
        start = time.perf_counter()
        if outer:
            self(text or name)
            self.begin(name, total, text or name)
        try:
            yield self.advance if outer else _ignore
        finally:
            self._depth -= 1
            if outer:
                self.end(name)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def begin(self, name: str, total: int, text: str) -> None:
        """A counted stage starts (drawing hook)."""

    def advance(self, n: int = 1) -> None:
        """`n` units of the current stage are done (drawing hook)."""

    def end(self, name: str) -> None:
        """The current stage ends (drawing hook)."""


def _ignore(n: int = 1) -> None:
    pass


def stages_of(progress) -> Stages:
    """`progress` as a Stages: itself, a callable taking step names, or None (silent)."""
    if isinstance(progress, Stages):
        return progress
    return Stages(say=progress)


def count(limit: int | None, data) -> int:
    """Batches a pass over `data` (graphprune.data.Data) bounded by `limit` will give."""
    try:
        n = len(data)
    except (TypeError, ValueError):
        n = limit or 0
    return n if limit is None else min(n, limit)


class _Within(Stages):
    """`parent`'s drawing, every name prefixed; seconds of its own."""

    def __init__(self, parent: Stages, prefix: str):
        super().__init__()
        self.parent, self.prefix = parent, prefix

    def __call__(self, text: str) -> None:
        self.parent(self.prefix + text)

    def begin(self, name: str, total: int, text: str) -> None:
        self.parent.begin(name, total, self.prefix + text)

    def advance(self, n: int = 1) -> None:
        self.parent.advance(n)

    def end(self, name: str) -> None:
        self.parent.end(name)


def within(progress, prefix: str):
    """`progress` (a Stages, a callable taking step names, or None) with every name prefixed."""
    if progress is None:
        return None
    if isinstance(progress, Stages):
        return _Within(progress, prefix)
    return lambda text: progress(prefix + text)

"""Rich progress bars on stderr: fine-tuning (steps done, the last loss, the last validation metric)
and the stages of `shrink` that pass over data (graphprune.data.progress)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from graphprune.data.progress import Stages


class Bar:
    """The `progress` argument of graphprune.recovery.finetune, drawn on `console` (stderr)."""

    def __init__(self, console: Console | None = None, title: str = "fine-tuning", pause=None):
        self.console = console or Console(stderr=True)
        self.pause = pause  # a rich Status spinner to stop while the bar shows (one live display at a time)
        self.title = title
        self.bar: Progress | None = None
        self.task = None
        self.metric_name = "metric"

    def start(self, total: int, metric: str, done: int = 0) -> None:
        self.metric_name = metric
        if self.pause is not None:
            self.pause.stop()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[metric]}"),
                            TimeRemainingColumn(), console=self.console, transient=False)
        self.bar.start()
        self.task = self.bar.add_task(self.title, total=total, completed=done, loss="-", metric="")

    def step(self, loss: float) -> None:
        self.bar.update(self.task, advance=1, loss=f"{loss:.4g}")

    def epoch(self, epoch: int, loss: float, metric: float) -> None:
        self.bar.update(self.task, description=f"{self.title} (epoch {epoch})", metric=f"{self.metric_name} {metric:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        if self.pause is not None:
            self.pause.start()


class StageBar(Stages):
    """graphprune.data.progress.Stages drawn on `console` (stderr): step names on the `status` spinner,
    each counted stage (scoring, allocation, refit, BatchNorm re-estimation) as a bar with its
    elapsed time and an estimate of the time left. Nothing is drawn when the console is not a terminal."""

    def __init__(self, console: Console, status=None):
        super().__init__(say=status.update if status is not None else None)
        self.console, self.status = console, status
        self.bar: Progress | None = None
        self.task = None

    def begin(self, name: str, total: int, text: str) -> None:
        if not self.console.is_terminal or self.bar is not None:
            return
        if self.status is not None:
            self.status.stop()  # one live display at a time
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=False)
        self.bar.start()
        self.task = self.bar.add_task(text, total=max(total, 1))

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=n)

    def end(self, name: str) -> None:
        if self.bar is None:
            return
        self.bar.stop()
        self.bar = None
        if self.status is not None:
            self.status.start()

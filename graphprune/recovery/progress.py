"""A rich progress bar for fine-tuning: steps done, the last loss, the last validation metric."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


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

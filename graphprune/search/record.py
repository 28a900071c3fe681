"""The search log: every configuration tried, with its latency and metric, for the report and plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Entry:
    step: int
    strategy: str
    config: dict  # Config.to_dict(): narrowed widths and removed blocks
    predicted_ratio: float  # from the latency table (fitted from measurements)
    loss: float | None = None
    metric: float | None = None
    measured_ratio: float | None = None  # a whole-model measurement at the latency batch, when one was made
    measured_ms: float | None = None
    note: str = ""


@dataclass
class SearchLog:
    strategy: str
    entries: list[Entry] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # settings, table, final figures, timings

    def add(self, entry: Entry) -> Entry:
        self.entries.append(entry)
        return entry

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, **self.facts, "tried": [asdict(e) for e in self.entries]}

"""A per-group latency table, fitted from measurements and corrected by whole-model ones.

Probes (at the table batch, a small batch whose ratios predict the latency batch's; the report
gives both for the chosen model): each group alone narrowed to about half its width (p_g of
W_g), and each block alone removed. Each probe is a whole exported model timed against the
original; with M the exact MACs (graphprune.cost.plan_macs):

    s_g  = 1 - ratio(probe g)                 latency saved by g alone (a fraction)
    mu_g = 1 - M(probe g) / M(original)       MACs saved by g alone
    e_g  = s_g / mu_g                         g's latency saved per MAC saved (layers differ widely)

Prediction for a configuration c. A group alone saves MACs linearly in its removed width,
mu_g(c) = mu_g (W_g - w_g(c)) / (W_g - p_g) (mu_b for a removed block); groups interact (a
conv's MACs are the product of its two widths), which the exact MACs of c capture:

    raw(c)   = (1 - M(c) / M(original)) * sum_g e_g mu_g(c) / sum_g mu_g(c)
    ratio(c) = 1 - C(raw(c))

i.e. the exact MAC saving at the measured efficiencies of the groups it comes from. The table
batch is not the latency batch, and latency is not only MACs: the correction C absorbs the rest.
C is the identity at first; each whole-model confirmation at the latency batch adds a point (raw
saving, measured saving), and C becomes the piecewise-linear curve through (0, 0) and those
points (beyond the last, proportional: C(x) = x m_last / raw_last), so predictions near the
configurations confirmed so far (the budget) are as good as the measurements.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from graphprune.search.space import Config, Knob, SearchSpace

log = logging.getLogger(__name__)


@dataclass
class LatencyTable:
    probe: dict[str, int] = field(default_factory=dict)  # group -> probed width
    saving: dict[str, float] = field(default_factory=dict)  # group or block -> latency saved at its probe
    macs_saving: dict[str, float] = field(default_factory=dict)  # group or block -> MACs saved at its probe
    base_macs: int = 1
    confirmed: list[tuple[float, float]] = field(default_factory=list)  # (raw predicted, measured) savings

    def alone(self, space: SearchSpace, config: Config) -> dict[str, float]:
        """mu_g(c): the MACs each narrowed group (or removed block) of c would save on its own."""
        parts = {}
        for name, width in config.widths:
            knob: Knob | None = space.by_name.get(name)
            if knob is not None and name in self.probe:
                parts[name] = self.macs_saving[name] * (knob.full - width) / (knob.full - self.probe[name])
        for block in config.blocks:
            parts[block] = self.macs_saving.get(block, 0.0)
        return parts

    def raw_saving(self, space: SearchSpace, config: Config) -> float:
        parts = self.alone(space, config)
        weight = sum(parts.values())
        if weight <= 0:
            return 0.0
        efficiency = sum(self.efficiency(n) * mu for n, mu in parts.items()) / weight
        return (1.0 - space.macs(config) / self.base_macs) * efficiency

    def alone_latency(self, knob: Knob, width: int, narrower: int) -> float:
        """Latency saved by taking one group alone from `width` to `narrower` (the probe's line; cheap)."""
        if knob.name not in self.probe:
            return 0.0
        return self.saving[knob.name] * (width - narrower) / (knob.full - self.probe[knob.name])

    def efficiency(self, name: str) -> float:
        mu = self.macs_saving.get(name, 0.0)
        return self.saving[name] / mu if mu > 1e-9 else 0.0

    def corrected(self, raw: float) -> float:
        points = sorted({(0.0, 0.0), *self.confirmed})
        xs, ys = [p for p, _ in points], [m for _, m in points]
        if raw <= xs[-1]:
            return float(np.interp(raw, xs, ys))
        return raw * ys[-1] / xs[-1] if xs[-1] > 0 else raw

    def predict(self, space: SearchSpace, config: Config) -> float:
        """Predicted latency / original latency at the latency batch."""
        return max(1.0 - self.corrected(self.raw_saving(space, config)), 0.02)

    def correct(self, space: SearchSpace, config: Config, measured_ratio: float) -> None:
        """Add a whole-model confirmation to the correction curve."""
        raw = self.raw_saving(space, config)
        if raw <= 1e-6:
            return
        self.confirmed = [(p, m) for p, m in self.confirmed if abs(p - raw) > 1e-9] + [(raw, 1.0 - measured_ratio)]
        log.info("latency table corrected at raw saving %.3f: measured %.3f", raw, 1.0 - measured_ratio)

    def to_dict(self) -> dict:
        return {"probe_widths": self.probe, "latency_saving_at_probe": self.saving,
                "macs_saving_at_probe": self.macs_saving,
                "efficiency": {n: self.efficiency(n) for n in self.saving},
                "confirmations": [{"predicted_saving_raw": p, "measured_saving": m} for p, m in self.confirmed]}


def probe_width(knob: Knob) -> int:
    return knob.nearest(knob.full / 2) if knob.nearest(knob.full / 2) < knob.full else knob.options[1]


def fit_table(space: SearchSpace, measure, progress=lambda text: None) -> LatencyTable:
    """Probe every knob and block alone with `measure(config) -> Measurement` (the table batch)."""
    table = LatencyTable(base_macs=max(space.macs(Config()), 1))
    probes = [(k.name, Config().narrowed(k.name, probe_width(k), k.full)) for k in space.knobs]
    probes += [(b, Config().removing(b)) for b in space.blocks]
    for i, (name, config) in enumerate(probes):
        progress(f"latency table: probe {i + 1}/{len(probes)} ({name})")
        m = measure(config)
        table.saving[name] = 1.0 - m.ratio
        table.macs_saving[name] = 1.0 - space.macs(config) / table.base_macs
        if config.widths:
            table.probe[name] = config.widths[0][1]
    return table

"""A per-group latency table, fitted from measurements and corrected by whole-model ones.

Probes, at the table batch (a small batch whose ratios predict the latency batch's; the report
gives both for the chosen model): each group narrowed to about half its width (p_g of W_g), each
block removed, alone; with more than `max_probes` of them, consecutive groups are probed together
in bundles of similar MACs (fewer exports, each saving well above the timing noise). Each probe is
a whole exported model timed against the original; with M the exact MACs (graphprune.cost.macs.plan_macs):

    s_P   = 1 - ratio(probe P)                 latency saved by probe P (a fraction)
    mu_P  = 1 - M(probe P) / M(original)       MACs saved by probe P
    e_g   = s_P / mu_P  for every g in P       latency saved per MAC saved (layers differ widely)
    mu_g  = 1 - M(g alone at p_g) / M(original)    (exact, no measurement needed)

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
    alone: dict[str, float] = field(default_factory=dict)  # group or block -> mu_g, MACs saved alone at its probe
    member_of: dict[str, str] = field(default_factory=dict)  # group or block -> its probe
    saving: dict[str, float] = field(default_factory=dict)  # probe -> latency saved, measured
    probe_macs: dict[str, float] = field(default_factory=dict)  # probe -> MACs saved
    confirmed: list[tuple[float, float]] = field(default_factory=list)  # (raw predicted, measured) savings
    base_macs: int = 1

    def parts(self, space: SearchSpace, config: Config) -> dict[str, float]:
        """mu_g(c): the MACs each narrowed group (or removed block) of c would save on its own."""
        parts = {}
        for name, width in config.widths:
            knob: Knob | None = space.by_name.get(name)
            if knob is not None and name in self.probe:
                parts[name] = self.alone[name] * (knob.full - width) / (knob.full - self.probe[name])
        for block in config.blocks:
            parts[block] = self.alone.get(block, 0.0)
        return parts

    def efficiency(self, name: str) -> float:
        """Latency saved per MAC saved, measured on the probe holding `name`."""
        probe = self.member_of.get(name, name)
        mu = self.probe_macs.get(probe, 0.0)
        return self.saving[probe] / mu if mu > 1e-9 else 0.0

    def raw_saving(self, space: SearchSpace, config: Config) -> float:
        parts = self.parts(space, config)
        weight = sum(parts.values())
        if weight <= 0:
            return 0.0
        efficiency = sum(self.efficiency(n) * mu for n, mu in parts.items()) / weight
        return (1.0 - space.macs(config) / self.base_macs) * efficiency

    def alone_latency(self, knob: Knob, width: int, narrower: int) -> float:
        """Latency saved by taking one group alone from `width` to `narrower` (its probe's line; cheap)."""
        if knob.name not in self.probe:
            return 0.0
        mu = self.alone[knob.name] * (width - narrower) / (knob.full - self.probe[knob.name])
        return self.efficiency(knob.name) * mu

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
        return {"probe_widths": self.probe, "probes": {p: [n for n, q in self.member_of.items() if q == p]
                                                         for p in self.saving},
                "latency_saving": self.saving, "macs_saving": self.probe_macs,
                "efficiency": {p: self.efficiency(p) for p in self.saving},
                "confirmations": [{"predicted_saving_raw": p, "measured_saving": m} for p, m in self.confirmed]}


def probe_width(knob: Knob) -> int:
    return knob.nearest(knob.full / 2) if knob.nearest(knob.full / 2) < knob.full else knob.options[1]


def _bundles(names: list[str], weights: dict[str, float], count: int) -> list[list[str]]:
    """`names` cut into at most `count` consecutive, non-empty runs of about equal total weight."""
    if len(names) <= count:
        return [[n] for n in names]
    total = sum(weights[n] for n in names) or 1.0
    runs: list[list[str]] = []
    run: list[str] = []
    acc = 0.0
    for i, name in enumerate(names):
        run.append(name)
        acc += weights[name]
        names_left, runs_left = len(names) - i - 1, count - len(runs) - 1
        if names_left and runs_left and (acc >= total * (len(runs) + 1) / count or names_left == runs_left):
            runs.append(run)
            run = []
    return runs + [run]


def fit_table(space: SearchSpace, measure, progress=lambda text: None, max_probes: int = 12) -> LatencyTable:
    """Measure the probes with `measure(config) -> Measurement` (the table batch)."""
    table = LatencyTable(base_macs=max(space.macs(Config()), 1))
    alone = {k.name: Config().narrowed(k.name, probe_width(k), k.full) for k in space.knobs}
    alone.update({b: Config().removing(b) for b in space.blocks})
    for name, config in alone.items():
        table.alone[name] = 1.0 - space.macs(config) / table.base_macs
        if config.widths:
            table.probe[name] = config.widths[0][1]
    runs = _bundles([k.name for k in space.knobs], table.alone, max(max_probes - len(space.blocks), 1))
    runs += [[b] for b in space.blocks]
    for i, run in enumerate(runs):
        probe = run[0] if len(run) == 1 else f"{run[0]} .. {run[-1]} ({len(run)} groups)"
        progress(f"latency table: probe {i + 1}/{len(runs)} ({probe})")
        config = Config()
        for name in run:
            config = Config(config.widths + alone[name].widths, config.blocks + alone[name].blocks)
        config = Config(tuple(sorted(config.widths)), tuple(sorted(config.blocks)))
        table.saving[probe] = 1.0 - measure(config).ratio
        table.probe_macs[probe] = 1.0 - space.macs(config) / table.base_macs
        table.member_of.update({name: probe for name in run})
    return table

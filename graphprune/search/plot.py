"""The search plot: metric against latency for every configuration tried, and widths before/after.

Left: one point per configuration evaluated, at its latency ratio; hollow where the latency is
the table's prediction, filled where it was measured whole, the chosen one a star, the budget a
dashed line. Right: each group's width in the original and in the chosen configuration.
"""

from __future__ import annotations

from pathlib import Path


def _by_config(entries: list[dict]) -> list[dict]:
    """One point per configuration: its metric, and its measured latency if any entry measured it."""
    merged: dict[str, dict] = {}
    for e in entries:
        key = repr(sorted(e["config"]["widths"].items())) + repr(e["config"]["blocks"])
        point = merged.setdefault(key, {"predicted_ratio": e["predicted_ratio"], "metric": None, "measured_ratio": None})
        point["metric"] = e["metric"] if e["metric"] is not None else point["metric"]
        point["measured_ratio"] = e["measured_ratio"] if e["measured_ratio"] is not None else point["measured_ratio"]
    return [p for p in merged.values() if p["metric"] is not None]


def plot_search(log: dict, path: Path) -> None:
    """Write the PNG for a search log (SearchLog.to_dict()) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tried = _by_config(log["tried"])
    groups = log.get("groups", {})
    chosen = log.get("chosen", {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(4.5, 0.18 * len(groups) + 1.5)),
                                      gridspec_kw={"width_ratios": [3, 2]})
    pred = [e for e in tried if e["measured_ratio"] is None]
    meas = [e for e in tried if e["measured_ratio"] is not None]
    left.scatter([e["predicted_ratio"] for e in pred], [e["metric"] for e in pred], facecolors="none",
                 edgecolors="tab:blue", s=18, label="latency from the table (fitted to measurements)")
    left.scatter([e["measured_ratio"] for e in meas], [e["metric"] for e in meas], color="tab:orange", s=26,
                 label="latency measured (whole model)")
    final = log.get("final", {})
    if chosen and final:
        left.scatter([final["latency_ratio"]], [chosen["metric"]], marker="*", s=220, color="tab:red", zorder=5,
                     label=f"chosen ({1 / final['latency_ratio']:.2f}x)")
    left.axvline(log["budget"]["latency_fraction"], color="gray", linestyle="--", label="budget")
    left.set_xlabel("latency / original latency (ONNX Runtime)")
    left.set_ylabel("metric (accuracy, or -loss vs the original)")
    left.set_title(f"--search {log['strategy']}: {len(tried)} configurations")
    left.legend(fontsize=8, loc="lower right")
    names = list(groups)
    after = chosen.get("widths", {})
    ys = range(len(names))
    right.barh(list(ys), [groups[n] for n in names], color="lightgray", label="original")
    right.barh(list(ys), [after.get(n, groups[n]) for n in names], color="tab:green", label="chosen")
    right.set_yticks(list(ys), names, fontsize=6)
    right.invert_yaxis()
    right.set_xlabel("width")
    right.legend(fontsize=8)
    right.set_title("per-group widths" + (f"; blocks removed: {', '.join(chosen['blocks'])}" if chosen.get("blocks") else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)

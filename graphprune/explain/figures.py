"""The report's charts, drawn with matplotlib (Agg) and returned as PNG data: URIs.

Each function takes the figures it draws (the same numbers the JSON holds) and returns one
`data:image/png;base64,...` string, so the page needs nothing from the network.
"""

from __future__ import annotations

import base64
import io

import numpy as np

BEFORE, AFTER, CUT = "#b8c2cc", "#2f6db5", "#c0392b"
MAX_LAYERS = 60
MAX_FEATURES = 24


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _uri(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def widths(rows: list[dict], title: str) -> str:
    plt = _plt()
    rows = rows[:MAX_LAYERS]
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.22 * len(rows)))
    y = np.arange(len(rows))
    ax.barh(y + 0.2, [r["width_before"] for r in rows], 0.4, color=BEFORE, label="original")
    ax.barh(y - 0.2, [r["width_after"] for r in rows], 0.4, color=AFTER, label="pruned")
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    top = max(r["width_before"] for r in rows)
    low = min(max(r["width_after"], 1) for r in rows)
    if top / low > 50:  # an embedding's vocabulary beside hidden widths: a log axis keeps both readable
        ax.set_xscale("log")
    ax.set_xlabel("width (output channels / features)" + (", log scale" if top / low > 50 else ""))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _uri(fig)


def scores(groups: list[dict], limit: int = 6) -> str:
    plt = _plt()
    shown = [g for g in groups if g.get("scores")][:limit]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.3), squeeze=False)
    for ax, g in zip(axes[0], shown, strict=True):
        ax.hist(g["scores"], bins=min(30, max(5, len(g["scores"]) // 2)), color=BEFORE)
        if g.get("cut") is not None:
            ax.axvline(g["cut"], color=CUT, lw=1.5, label=f"cut: {g['removed']} removed")
            ax.legend(fontsize=6)
        ax.set_title(g["group"][:28], fontsize=7)
        ax.tick_params(labelsize=6)
    return _uri(fig)


def agreement(summary: dict, metrics: tuple = ("spearman", "top_k", "ssim")) -> str:
    """One panel per metric: per method the floor..ceiling range and the pruned model's score."""
    plt = _plt()
    shown = [m for m in metrics if any(m in s for s in summary.values())]
    methods = list(summary)
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 0.9 + 0.45 * len(methods)), squeeze=False,
                             sharey=True)
    for ax, metric in zip(axes[0], shown, strict=True):
        for k, method in enumerate(methods):
            s = summary[method].get(metric)
            if not s:
                continue
            ax.plot([s["floor"], s["ceiling"]], [k, k], color=BEFORE, lw=6, solid_capstyle="butt")
            ax.plot([s["floor"]], [k], "|", color="#555", ms=12)
            ax.plot([s["ceiling"]], [k], "|", color="#555", ms=12)
            ax.plot([s["value"]], [k], "o", color=AFTER, ms=7)
        ax.set_title(metric.replace("_", "-"), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    first = axes[0][0]
    first.set_yticks(range(len(methods)), [m.replace("_", " ") for m in methods], fontsize=7)
    first.set_ylim(-0.6, len(methods) - 0.4)
    first.invert_yaxis()
    return _uri(fig)


def recall_change(recall: list[dict]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(recall)), 2.4))
    change = [r["change"] for r in recall]
    ax.bar([str(r["class"]) for r in recall], change, color=[CUT if c < 0 else AFTER for c in change])
    ax.axhline(0, color="#555", lw=0.8)
    ax.set_xlabel("class", fontsize=8)
    ax.set_ylabel("recall change", fontsize=8)
    ax.tick_params(labelsize=7)
    return _uri(fig)


def histogram(values: list[float], xlabel: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 2.3))
    ax.hist([v for v in values if np.isfinite(v)], bins=30, color=AFTER)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("inputs", fontsize=8)
    ax.tick_params(labelsize=7)
    return _uri(fig)


def _image(x: np.ndarray) -> np.ndarray:
    """[C, H, W] input as an image in [0, 1]: grey for one channel, RGB for three, else channel mean."""
    img = x.transpose(1, 2, 0) if x.shape[0] == 3 else x.mean(0)
    span = np.ptp(img)
    return (img - img.min()) / span if span > 0 else np.zeros_like(img)


def image_row(x: np.ndarray, maps: dict, caption: str) -> str:
    """One row: the input, then per method original | pruned | difference, each map scaled to its own max."""
    plt = _plt()
    n = 1 + 3 * len(maps)
    fig, axes = plt.subplots(1, n, figsize=(1.25 * n, 1.75), squeeze=False)
    row = axes[0]
    img = _image(x)
    row[0].imshow(img, cmap=None if img.ndim == 3 else "gray")
    row[0].set_title("input", fontsize=7)
    for k, (method, (a, b)) in enumerate(maps.items()):
        a, b = a / max(float(np.max(a)), 1e-12), b / max(float(np.max(b)), 1e-12)
        short = method.replace("integrated_gradients", "IG").replace("_", "-")
        for ax, m, t, cmap, lo in ((row[1 + 3 * k], a, "original", "magma", 0), (row[2 + 3 * k], b, "pruned", "magma", 0),
                                   (row[3 + 3 * k], b - a, "difference", "coolwarm", -1)):
            ax.imshow(m, cmap=cmap, vmin=lo, vmax=1)
            ax.set_title(f"{short}\n{t}", fontsize=7)
    for ax in row:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(caption, fontsize=8, y=1.04)
    return _uri(fig)


def feature_bars(maps: dict, caption: str, names: list[str] | None = None) -> str:
    """Tabular inputs: per method the two models' importances of the original's top features (scaled to max 1)."""
    plt = _plt()
    rows = min(MAX_FEATURES, len(next(iter(maps.values()))[0]))
    fig, axes = plt.subplots(1, len(maps), figsize=(3.4 * len(maps), 1.0 + 0.16 * rows), squeeze=False)
    for ax, (method, (a, b)) in zip(axes[0], maps.items(), strict=True):
        keep = np.argsort(-a, kind="stable")[:MAX_FEATURES]  # the original's most important features
        a, b = a[keep], b[keep]
        labels = [(names[i] if names else str(i)) for i in keep]
        n = len(a)
        y = np.arange(n)
        ax.barh(y + 0.2, a / max(float(np.max(a)), 1e-12), 0.4, color=BEFORE, label="original")
        ax.barh(y - 0.2, b / max(float(np.max(b)), 1e-12), 0.4, color=AFTER, label="pruned")
        ax.set_yticks(y, labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_title(method.replace("_", " "), fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(caption, fontsize=8)
    return _uri(fig)

"""How alike two attribution maps are, and where a score sits between its ceiling and floor.

For maps a, b of the same shape (one non-negative number per pixel, feature or token):

    spearman(a, b)  = Pearson correlation of the ranks of a and b (ties averaged); 1 for equal maps,
                      0 when one map is constant and the other is not (it ranks nothing)
    top_k(a, b)     = |top_k(a) & top_k(b)| / k with k = ceil(0.1 n) (at least 1); 1 for equal maps,
                      about k/n for unrelated ones
    ssim(a, b)      = mean structural similarity (Wang et al., 2004) of the two maps scaled to
                      [0, 1], in a uniform 7x7 window (smaller for smaller maps), C1 = 0.01^2,
                      C2 = 0.03^2; images only. Written here on scipy.ndimage.uniform_filter.

A score is read against a *ceiling*, the original compared with itself explained a second time
(another baseline or noise seed: how alike the method can be with itself), and a *floor*, the
original compared with a copy whose weights are random (how alike maps are that explain nothing).
`relative = (score - floor) / (ceiling - floor)`. A method whose floor is not below its ceiling
(Spearman) fails the randomisation sanity check and is left out of the summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

TOP_K_FRACTION = 0.1


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(stats.spearmanr(a, b).statistic)


def top_k(a: np.ndarray, b: np.ndarray, fraction: float = TOP_K_FRACTION) -> float:
    a, b = np.ravel(a), np.ravel(b)
    k = max(1, math.ceil(fraction * a.size))
    first = set(np.argsort(-a, kind="stable")[:k].tolist())
    second = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(first & second) / k


def _unit(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    span = np.ptp(a)
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"SSIM compares two 2-D maps of one shape, got {a.shape} and {b.shape}")
    x, y = _unit(a), _unit(b)
    w = max(1, min(window, *x.shape))
    w -= (w + 1) % 2  # odd
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = ndimage.uniform_filter(x, w), ndimage.uniform_filter(y, w)
    vx = ndimage.uniform_filter(x * x, w) - mx * mx
    vy = ndimage.uniform_filter(y * y, w) - my * my
    cxy = ndimage.uniform_filter(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Every metric that applies to maps of this shape."""
    out = {"spearman": spearman(a, b), "top_k": top_k(a, b)}
    if a.ndim == 2 and min(a.shape) > 1:
        out["ssim"] = ssim(a, b)
    return out


@dataclass(frozen=True)
class Scored:
    """Mean of a metric over the explained inputs for original vs pruned, its ceiling and floor."""

    value: float
    ceiling: float
    floor: float
    count: int

    @property
    def relative(self) -> float | None:
        span = self.ceiling - self.floor
        return (self.value - self.floor) / span if span > 1e-9 else None

    def to_dict(self) -> dict:
        return {"value": self.value, "ceiling": self.ceiling, "floor": self.floor, "relative": self.relative,
                "count": self.count}


def _mean(values) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def summarise(rows: list[dict]) -> dict[str, Scored]:
    """rows: per input {'pruned': metrics, 'ceiling': metrics, 'floor': metrics} -> Scored per metric."""
    names = sorted({m for r in rows for m in r["pruned"]})
    return {m: Scored(_mean(r["pruned"].get(m) for r in rows), _mean(r["ceiling"].get(m) for r in rows),
                      _mean(r["floor"].get(m) for r in rows), len(rows)) for m in names}


def sane(scores: dict[str, Scored]) -> bool:
    """The randomisation sanity check: a random-weight model's maps agree less than the method's own rerun."""
    s = scores.get("spearman")
    return s is not None and not math.isnan(s.floor) and not math.isnan(s.ceiling) and s.floor < s.ceiling

"""How the report, the depth table and the explain report write numbers."""

from __future__ import annotations


def human(n: float) -> str:
    """A count in 3 significant digits with a K/M/G/T/P suffix: 11.7M."""
    n = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}P"

"""The table of search strategies.

A strategy is a function `(ctx: SearchContext) -> Config`: it explores configurations through
the context (which evaluates, predicts and measures them, and logs every one) and returns the
configuration it chooses. The driver (graphprune.search.driver) then measures the choice against
the original in ONNX Runtime. Registering a second strategy under a name is refused.
"""

from __future__ import annotations

from collections.abc import Callable

STRATEGIES: dict[str, Callable] = {}


def strategy(name: str):
    """Register `fn(ctx) -> Config` as the strategy called `name`."""

    def wrap(fn: Callable) -> Callable:
        if name in STRATEGIES:
            raise RuntimeError(f"two search strategies named {name!r}")
        STRATEGIES[name] = fn
        return fn

    return wrap

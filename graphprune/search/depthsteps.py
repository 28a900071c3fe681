"""Block removal as one more kind of search move.

`DepthSteps(graph, blocks, remove)` offers the named blocks; a configuration that removes some
of them is planned on the graph of the model with those blocks gone:

    graph(blocks) = build(remove(captured, blocks))            (cached per set of blocks)

Groups keep their names (the original's parameter names), so the widths of a configuration still
name the groups that survive. `remove(captured, names) -> Captured` must not change `captured`:
graphprune.depth.remove_blocks is that function, and `DepthSteps.found(graph)` uses it with
graphprune.depth.find_blocks where that package is installed.
"""

from __future__ import annotations

from collections.abc import Callable

from graphprune.capture.depgraph import DependencyGraph


class DepthSteps:
    def __init__(self, graph: DependencyGraph, blocks, remove: Callable):
        self.captured = graph.captured
        self.blocks: tuple[str, ...] = tuple(blocks)
        self.remove = remove
        self._graphs: dict[tuple, DependencyGraph] = {(): graph}

    @classmethod
    def found(cls, graph: DependencyGraph) -> DepthSteps | None:
        """The removable blocks graphprune.depth finds in `graph` (None: no such package, or no block)."""
        try:
            from graphprune.depth import find_blocks, remove_blocks
        except ImportError:
            return None
        blocks = [b.name for b in find_blocks(graph.captured)]
        return cls(graph, blocks, remove_blocks) if blocks else None

    def graph(self, blocks: tuple) -> DependencyGraph:
        key = tuple(sorted(blocks))
        if key not in self._graphs:
            from graphprune.capture.depgraph import build

            self._graphs[key] = build(self.remove(self.captured, list(key)))
        return self._graphs[key]

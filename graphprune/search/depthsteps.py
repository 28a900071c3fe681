"""Block removal as one more kind of search move.

`DepthSteps(graph, blocks, remove)` offers the named blocks; a configuration that removes some
of them is planned on the graph of the model with those blocks gone:

    graph(blocks) = build(capture(remove(original, blocks), example))     (cached per set of blocks)

Groups keep their names (the original's parameter names), so the widths of a configuration
still name the groups that survive. `remove(module, blocks) -> module` must not change `module`
(graphprune.depth.remove_blocks, once it is on main, is that function).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from graphprune.depgraph import DependencyGraph


class DepthSteps:
    def __init__(self, graph: DependencyGraph, blocks, remove: Callable[[torch.nn.Module, tuple], torch.nn.Module]):
        self.original = graph.captured.module
        self.args, self.kwargs = graph.captured.args, graph.captured.kwargs
        self.blocks: tuple[str, ...] = tuple(blocks)
        self.remove = remove
        self._graphs: dict[tuple, DependencyGraph] = {(): graph}

    def graph(self, blocks: tuple) -> DependencyGraph:
        key = tuple(sorted(blocks))
        if key not in self._graphs:
            from graphprune.capture import capture
            from graphprune.depgraph import build

            self._graphs[key] = build(capture(self.remove(self.original, key), self.args, self.kwargs))
        return self._graphs[key]

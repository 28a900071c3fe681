"""Depth pruning: find removable blocks (repeated residual layers, residual branches), rank them, remove them.

    blocks = find_blocks(captured)                       # Block(name, kind, params, ...)
    ranked = rank_blocks(captured, data, "influence")    # least important first
    smaller = remove_blocks(captured, [r.block for r in ranked[:2]])   # a new Captured

The result of `remove_blocks` is a Captured like any other: graphprune.capture.depgraph.build and the
planner run on it, so blocks go first, then channels.
"""

from graphprune.depth.find import Block, find_blocks
from graphprune.depth.probe import block_macs
from graphprune.depth.rank import CRITERIA, Ranked, rank_blocks
from graphprune.depth.remove import remove_blocks
from graphprune.depth.select import Removed, blocks_first, listing, parse_count

__all__ = ["CRITERIA", "Block", "Ranked", "Removed", "block_macs", "blocks_first", "find_blocks", "listing",
           "parse_count", "rank_blocks", "remove_blocks"]

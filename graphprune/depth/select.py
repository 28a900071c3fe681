"""Depth before width: pick the K least important blocks, remove them, and say what each cost.

`shrink(..., depth=DepthOptions(blocks=K))` calls `remove_ranked` on the captured graph before it builds
the dependency graph, so channels, neurons and heads are planned on the model without those
blocks. K is a count (an int >= 1) or a fraction in (0, 1) of the blocks found (rounded,
at least one). Ranking needs calibration data: without it the request is refused rather
than guessed from weight magnitudes, which say little about what a residual block adds.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from graphprune.capture.trace import Captured
from graphprune.cost.macs import count_macs, count_params
from graphprune.depth.find import find_blocks
from graphprune.depth.probe import block_macs
from graphprune.depth.rank import rank_blocks
from graphprune.depth.remove import remove_blocks
from graphprune.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Removed:
    """A block that `remove_ranked` removed, as the report lists it."""

    name: str
    kind: str  # 'layer' or 'residual'
    module_class: str
    score: float
    criterion: str
    params: int  # parameter elements that left the model with it
    macs: int  # MACs it cost on the example input
    tensors: tuple  # names of the parameters and buffers that left with it


def listing(captured: Captured) -> list[dict]:
    """The removable blocks as `graphprune inspect` shows them: name, kind, class, params, MACs."""
    blocks = find_blocks(captured)
    macs = block_macs(captured.module, blocks, captured.args, captured.kwargs) if blocks else {}
    return [{"name": b.name, "kind": b.kind, "class": b.module_class, "params": b.num_params, "macs": macs[b.name]}
            for b in blocks]


def parse_count(text: str) -> float:
    """`--remove-blocks` text -> an int count or a float fraction in (0, 1); anything else is refused."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or (value >= 1 and value != int(value)) or value != value:
        raise InputError(f"--remove-blocks {text!r} is neither a count (0, 1, 2, ...) nor a fraction in (0, 1); "
                         "e.g. --remove-blocks 2 or --remove-blocks 0.25")
    return int(value) if value >= 1 or value == 0 else value


def how_many(k: float, found: int) -> int:
    """Blocks to remove for `--remove-blocks K`: K itself (an integer >= 0) or round(K * found), at least 1."""
    if isinstance(k, bool) or k < 0:
        raise InputError(f"--remove-blocks {k} must be a count (0, 1, 2, ...) or a fraction in (0, 1)")
    if 0 < k < 1:
        return max(1, round(k * found))
    if k != int(k):
        raise InputError(f"--remove-blocks {k} is neither a whole count nor a fraction in (0, 1); e.g. 2 or 0.25")
    if int(k) > found:
        raise InputError(f"--remove-blocks {int(k)} asks for more blocks than the {found} removable ones found "
                         "(graphprune inspect lists them); ask for at most that many")
    return int(k)


def remove_ranked(captured: Captured, data, k: float, criterion: str = "loss", limit: int | None = 16,
                  *, share: bool = False, progress=None) -> tuple[Captured, tuple[Removed, ...]]:
    """Remove the `k` lowest-ranked blocks of `captured`; (new Captured, what went)."""
    if not k:
        return captured, ()
    if data is None:
        raise InputError("--remove-blocks ranks blocks on calibration data; pass --data FILE (inputs, labels optional)")
    blocks = find_blocks(captured)
    if not blocks:
        raise InputError("--remove-blocks: this model has no removable blocks (no repeated residual layers or "
                         "residual branches; graphprune inspect shows what was found); drop --remove-blocks")
    count = how_many(k, len(blocks))
    ranked = rank_blocks(captured, data, criterion, limit=limit, blocks=blocks, progress=progress)[:count]
    macs = block_macs(captured.module, [r.block for r in ranked], captured.args, captured.kwargs)
    removed = tuple(Removed(r.block.name, r.block.kind, r.block.module_class, r.score, criterion,
                            r.block.num_params, macs[r.block.name], r.block.params) for r in ranked)
    log.info("removing %d of %d blocks: %s", count, len(blocks), ", ".join(r.name for r in removed))
    return remove_blocks(captured, [r.block for r in ranked], share=share), removed


def blocks_first(captured: Captured, data, k: float, criterion: str, limit: int | None, opts, progress=None):
    """Remove `k` blocks, then restate a MACs or parameter target for the channels still to go.

    A budget is a fraction of the *original*: with blocks already gone, the channel planner,
    which measures against the graph it is given, gets target * original / after_blocks. When
    the blocks alone meet the target, no channels are removed. Returns (Captured, removed, opts).
    """
    smaller, removed = remove_ranked(captured, data, k, criterion, limit, share=True, progress=progress)
    budget = getattr(opts, "budget", None)
    if not removed or budget is None:
        return smaller, removed, opts
    kind, target = budget
    if kind == "macs":
        full, left = (count_macs(c.module, c.args, c.kwargs) for c in (captured, smaller))
    else:
        full, left = count_params(captured.module), count_params(smaller.module)
    field = "target_macs" if kind == "macs" else "target_params"
    rest = target * full / left if left else 1.0
    if rest >= 1.0:
        log.info("the removed blocks alone meet the %s target (%.3f <= %.3f); no channels removed", kind, left / full, target)
        return smaller, removed, dataclasses.replace(opts, **{field: None}, ratio=0.0)
    return smaller, removed, dataclasses.replace(opts, **{field: rest})

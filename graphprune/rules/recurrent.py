"""LSTM and GRU (aten.lstm.input / aten.gru.input), any number of layers, either direction.

With G gates (4 for LSTM, 3 for GRU), hidden size H and D directions, hidden unit j is

    rows g*H + j (g < G) of every w_ih, w_hh, b_ih, b_hh;  column j of every w_hh;
    h0/c0/h_n/c_n[:, :, j];  output[..., d*H + j];  column d*H + j of each next layer's w_ih.

One aten call takes a single H for all layers and directions, so unit j is one channel
across all of them (same index everywhere keeps every layer rectangular). A dead unit
(all its weights zero, zero initial state) stays zero: exact. Layer 0's input columns
relate to the input's feature dim. Projections (proj_size) are not handled: frozen.
"""

from __future__ import annotations

import numpy as np
import torch

from graphprune.rules.registry import RuleContext, rule

aten = torch.ops.aten


def _recurrent(ctx: RuleContext, gates: int, states: list) -> None:
    node = ctx.node
    x = ctx.arg(0)
    params = [(p, None) for p in node.args[2]]
    has_biases, layers, bidirectional, batch_first = node.args[3], node.args[4], node.args[7], node.args[8]
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != layers * dirs * per:
        return  # projections or an unexpected layout: frozen
    w_hh0 = params[1]
    hidden = ctx.size(w_hh0, 1)
    if hidden is None or ctx.size(w_hh0, 0) != gates * hidden:
        return
    j = np.arange(hidden)
    rows = np.arange(gates * hidden)
    for layer in range(layers):
        for d in range(dirs):
            group = params[(layer * dirs + d) * per:(layer * dirs + d + 1) * per]
            for p in group:
                ctx.link(p, 0, rows, w_hh0, 1, rows % hidden)
            ctx.link(group[1], 1, j, w_hh0, 1, j)
            if layer == 0:
                ctx.same(x, -1, group[0], 1)
            else:
                cols = np.arange(dirs * hidden)
                ctx.link(group[0], 1, cols, w_hh0, 1, cols % hidden)
    out = ctx.out(0)
    rank = len(ctx.shape(out))
    for d in range(rank - 1):
        ctx.same(x, d, out, d)
    cols = np.arange(dirs * hidden)
    ctx.link(out, rank - 1, cols, w_hh0, 1, cols % hidden)
    batch = 0 if batch_first else 1
    if rank == 2:
        batch = None  # unbatched input
    for k, state in enumerate(states):
        for value in (state, ctx.out(k + 1)):
            if not isinstance(value, tuple) or len(ctx.shape(value)) != rank:
                continue
            ctx.link(value, rank - 1, j, w_hh0, 1, j)
            if batch is not None:
                ctx.same(value, 1, x, batch)


@rule(aten.lstm.input)
def lstm(ctx: RuleContext) -> None:
    hx = [(h, None) for h in ctx.node.args[1]]
    _recurrent(ctx, 4, hx)


@rule(aten.gru.input)
def gru(ctx: RuleContext) -> None:
    _recurrent(ctx, 3, [ctx.arg(1)])

"""The least squares of the refit (graphprune.rewrite.reconstruct): rows, normal equations, the solve.

One call of a linear or convolution gives rows x_r (its input: a token's features, or a convolution
patch) and y_r (its output at the same position); w_r weighs each row (0 for padding). Over the
calibration batches they add up to

    G = X^T W X,   C = X^T W Y,   s = sum_r w_r |y_r|^2        (in float64; X has a column of ones with a bias)

and the ridge solution pulled towards the layer as cut, theta0 = [W b]^T, is

    theta = (G + lam mean(diag G) I)^-1 (C + lam mean(diag G) theta0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

ROWS = 1024  # convolution: patches sampled per sample
LINEAR = (torch.ops.aten.linear.default,)  # the refit targets (Role.REFIT) that are not convolutions: rows = last dim


def rows(node: fx.Node, args: tuple, y: torch.Tensor, weight_shape, gen: torch.Generator):
    """(x rows [R, k] from the pruned op's input `args`, y rows [R, m] from the original op's output
    `y`, leading shape of the rows or None) of one call."""
    x = args[0]
    if node.target in LINEAR:
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), tuple(x.shape[:-1])
    conv2d = node.target == torch.ops.aten.conv2d.default
    stride, padding, dilation = (list(args[i]) if len(args) > i else [d] * (2 if conv2d else 1)
                                 for i, d in ((3, 1), (4, 0), (5, 1)))
    if not conv2d:  # conv1d as a conv2d of height 1
        x, y = x.unsqueeze(2), y.unsqueeze(2)
        stride, padding, dilation = [1, *stride], [0, *padding], [1, *dilation]
    kernel = tuple(weight_shape[2:]) if conv2d else (1, *weight_shape[2:])
    pointwise = all(k == 1 for k in kernel) and all(s == 1 for s in stride) and not any(padding)
    # a 1x1 convolution's patches are its input's positions: no copy before the rows are picked
    cols = x.flatten(2) if pointwise else F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # [N, k, L]
    ys = y.flatten(2)  # [N, m, L]
    if cols.shape[-1] > ROWS:
        pick = torch.randperm(cols.shape[-1], generator=gen)[:ROWS]
        cols, ys = cols[..., pick], ys[..., pick]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]), ys.transpose(1, 2).reshape(-1, ys.shape[1]), None


def row_weights(lead: tuple | None, count: int, kwargs: dict) -> torch.Tensor:
    """w_r: the batch's attention_mask where its shape matches the rows' leading dims, else 1."""
    mask = kwargs.get("attention_mask")
    if lead is not None and isinstance(mask, torch.Tensor) and len(lead) >= 2 and tuple(mask.shape) == lead[:2]:
        return mask.reshape(lead[0], lead[1], *([1] * (len(lead) - 2))).expand(lead).reshape(-1).double()
    return torch.ones(count, dtype=torch.float64)


class NormalEquations:
    """Weighted normal equations of one layer: G = X^T W X, C = X^T W Y, s = sum w |y|^2."""

    def __init__(self):
        self.G = self.C = None
        self.s = 0.0
        self.rows = 0

    def add(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, bias: bool) -> None:
        x = x.double()
        if bias:
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        y, wx = y.double(), x * w[:, None]
        g, c = wx.T @ x, wx.T @ y
        self.G, self.C = (g, c) if self.G is None else (self.G + g, self.C + c)
        self.s += float((w[:, None] * y * y).sum())
        self.rows += int((w > 0).sum())

    def error(self, theta: torch.Tensor) -> float:
        """Relative squared error of the rows under theta [k(+1), m]."""
        sq = float((theta * (self.G @ theta)).sum() - 2 * (theta * self.C).sum()) + self.s
        return max(sq, 0.0) / max(self.s, 1e-30)


def theta(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """[W b]^T of a layer, [k(+1), m], in float64."""
    w = weight.detach().reshape(weight.shape[0], -1).double().T
    return torch.cat([w, bias.detach().double()[None]], 0) if bias is not None else w


def solve(fit: NormalEquations, theta0: torch.Tensor, lam: float) -> torch.Tensor:
    scale = float(torch.diagonal(fit.G).mean()) or 1.0
    eye = torch.eye(len(fit.G), dtype=fit.G.dtype)
    return torch.linalg.solve(fit.G + lam * scale * eye, fit.C + lam * scale * theta0)

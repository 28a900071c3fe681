"""A speech-style frame classifier: log-mel features [B, 40, T] -> logits [B, T // 4, N].

    x = relu(bn(conv1d(x, stride 2)))  twice      (front-end, [B, C, T] -> [B, C, T // 4])
    x = x.transpose(1, 2)                          ([B, T // 4, C], batch first)
    x, _ = GRU or LSTM(x)                          (2 layers, bidirectional, batch_first)
    logits = linear(x)                             (per frame, N classes)

The shape of a small acoustic model (e.g. for keyword spotting or CTC): pruning has to
follow conv channels through BatchNorm and the transpose into the recurrent layer's input
columns, and hidden units through every gate of every layer and both directions.
Capturable by `torch.export.export(..., strict=False)` as it is.
"""

from __future__ import annotations

import torch
from torch import nn


class SpeechModel(nn.Module):
    """Conv1d/BN/ReLU x2 (stride 2) -> bidirectional 2-layer GRU or LSTM -> per-frame Linear."""

    def __init__(self, mels: int = 40, channels: int = 64, hidden: int = 48, classes: int = 30,
                 cell: str = "gru") -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        self.frontend = nn.Sequential(
            nn.Conv1d(mels, channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(channels, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * hidden, classes)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.frontend(mel).transpose(1, 2)
        x, _ = self.rnn(x)
        return self.classifier(x)


def build(cell: str = "gru") -> SpeechModel:
    """Factory for ``--arch models.speech:build`` (fresh weights, eval mode)."""
    return SpeechModel(cell=cell).eval()


def example(batch: int = 1, frames: int = 64) -> torch.Tensor:
    """An input for `build()`: random 40-band log-mel features, [batch, 40, frames]."""
    return torch.randn(batch, 40, frames, generator=torch.Generator().manual_seed(0))

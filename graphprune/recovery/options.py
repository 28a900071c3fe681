"""What a fine-tuning run is asked to do: one frozen dataclass, checked before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from graphprune.errors import InputError

DISTILL_LOSSES = ("auto", "kl", "cosine", "mse")


@dataclass(frozen=True)
class TrainOptions:
    """Options of `graphprune.recovery.finetune` (the CLI's `finetune` and `shrink --finetune-epochs`).

    * `lr`, `weight_decay`: AdamW; `warmup`: fraction of all steps with a linear warm-up, then cosine
      decay to zero.
    * `patience`: stop after this many epochs without a better validation metric (None: never).
    * `distill_loss`: 'kl' (temperature-scaled KL on logits), 'cosine' or 'mse' (on embeddings), or
      'auto': KL when the output is class scores ([N, C]), cosine otherwise (graphprune.measure.objective).
    * `distill_weight`: with labels and a teacher, loss = (1 - w) CE + w distillation.
    * `feature_layers`, `feature_weight`: also match these submodules' outputs (MSE) between teacher
      and student, for layers whose output shapes agree (graphprune.recovery.features).
    * `val_split`: the fraction of the data held out for validation when no validation data is given.
    * `device`: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:K'; under torchrun
      each rank takes `cuda:LOCAL_RANK` (graphprune.recovery.distributed).
    * `checkpoint`: written atomically after every epoch; `resume` continues from it.
    """

    epochs: int = 3
    lr: float = 1e-4  # a fine-tuning rate: after the refit (rewrite.reconstruct) the model starts close; docs/RECOVERY.md
    weight_decay: float = 0.01
    warmup: float = 0.05
    seed: int = 0
    patience: int | None = 3
    temperature: float = 2.0
    distill_loss: str = "auto"
    distill_weight: float = 0.5
    feature_layers: tuple[str, ...] = ()
    feature_weight: float = 1.0
    val_split: float = 0.1
    device: str = "auto"
    checkpoint: Path | None = None
    resume: bool = False

    def check(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs {self.epochs} must be 1 or more")
        if not self.lr > 0:
            raise InputError(f"--lr {self.lr} must be positive, e.g. 1e-4")
        if self.weight_decay < 0:
            raise InputError(f"--weight-decay {self.weight_decay} must be 0 or more")
        if not 0.0 <= self.warmup < 1.0:
            raise InputError(f"--warmup {self.warmup} is a fraction of all steps, in [0, 1)")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"--patience {self.patience} must be 1 or more (0 epochs without progress is no patience)")
        if not self.temperature > 0:
            raise InputError(f"--temperature {self.temperature} must be positive")
        if self.distill_loss not in DISTILL_LOSSES:
            raise InputError(f"--distill-loss {self.distill_loss!r} is not one of {', '.join(DISTILL_LOSSES)}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise InputError(f"--distill-weight {self.distill_weight} must be in [0, 1]")
        if not 0.0 < self.val_split < 1.0:
            raise InputError(f"--val-split {self.val_split} must be in (0, 1), e.g. 0.1")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise InputError(f"--device {self.device!r} is not auto, cpu, cuda or cuda:K")
        if self.resume and self.checkpoint is None:
            raise InputError("--resume needs a checkpoint file; pass --checkpoint PATH")

    def fingerprint(self) -> dict:
        """What must agree between a checkpoint and a run that resumes it (not device, paths, patience)."""
        keep = asdict(self)
        for k in ("device", "checkpoint", "resume", "patience"):
            keep.pop(k)
        keep["feature_layers"] = list(keep["feature_layers"])
        return keep

"""Recovery: getting a pruned model's accuracy back by training it.

    from graphprune.recovery import TrainOptions, finetune
    result = finetune(pruned, data, teacher=original, options=TrainOptions(epochs=5))

One file per job:

* `options.py`     TrainOptions, checked before any work
* `losses.py`      the objective (cross-entropy, distillation) and the validation metric
* `features.py`    feature distillation through forward hooks on matched layers
* `schedule.py`    AdamW and the warm-up + cosine schedule
* `checkpoint.py`  atomic checkpoints; resume
* `distributed.py` torchrun / DistributedDataParallel: batch sharding that matches one process
* `loop.py`        the training loop (`finetune`)
* `progress.py`    the rich progress bar
* `iterative.py`   pruning in steps with fine-tuning between them (`shrink --steps`)
"""

from __future__ import annotations

from graphprune.pipeline.steps import Step, shrink_in_steps
from graphprune.recovery.loop import Result, finetune, measure
from graphprune.recovery.options import TrainOptions

__all__ = ["Result", "Step", "TrainOptions", "finetune", "measure", "shrink_in_steps"]

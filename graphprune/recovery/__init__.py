"""Recovery: getting a pruned model's accuracy back by training it.

The objective and validation metric are graphprune.measure.objective; pruning in steps with
recovery between them is graphprune.pipeline.steps.

    from graphprune.recovery import TrainOptions, finetune
    result = finetune(pruned, data, teacher=original, options=TrainOptions(epochs=5))

One file per job:

* `options.py`     TrainOptions, checked before any work
* `features.py`    feature distillation through forward hooks on matched layers
* `schedule.py`    AdamW and the warm-up + cosine schedule
* `checkpoint.py`  atomic checkpoints; resume
* `distributed.py` torchrun / DistributedDataParallel: batch sharding that matches one process
* `loop.py`        the training loop (`finetune`)
* `progress.py`    the rich progress bar
"""

from __future__ import annotations

from graphprune.recovery.loop import Result, finetune, measure
from graphprune.recovery.options import TrainOptions

__all__ = ["Result", "TrainOptions", "finetune", "measure"]

"""The fine-tuning loop: train the pruned model on data, from labels or a teacher, keep the best.

    result = finetune(pruned, data, teacher=original, options=TrainOptions(epochs=5))
    result.model      # the best epoch's weights by the validation metric (maybe epoch 0: untouched)

One epoch = one pass over `data` (shuffled from seed + epoch), an AdamW step per batch, then
the validation metric on `val` (or a held-out `val_split` of `data`). The best epoch has the
highest metric, ties going to the lower validation loss (an accuracy that saturates at 1.0
still ranks the epochs); early stopping counts epochs that are not better. The state after every
epoch goes to `options.checkpoint` (graphprune.recovery.checkpoint); `resume` continues from
it and gives the same weights as an uninterrupted run. Neither the model passed in nor the
teacher is touched (parameters, buffers, .grad, train/eval mode): both are copied first.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from graphprune.data import Data, check_labels
from graphprune.errors import InputError, first_line
from graphprune.measure import objective as losses
from graphprune.recovery import checkpoint, distributed, schedule
from graphprune.recovery.features import FeatureMatch
from graphprune.recovery.options import TrainOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    model: torch.nn.Module  # best weights, on the CPU, in the input model's train/eval mode
    metric: str  # 'accuracy', 'top-1 agreement' or 'cosine to teacher'
    initial: float  # the metric before training
    best: float
    best_epoch: int  # 0: training never beat the input model
    history: tuple  # per epoch: {'epoch', 'loss' (training), 'val_loss', 'metric'}
    stopped_early: bool


@dataclass
class _Run:
    student: torch.nn.Module  # the copy being trained (unwrapped)
    ddp: torch.nn.Module  # the same, wrapped for DistributedDataParallel when there are several ranks
    teacher: torch.nn.Module | None
    objective: losses.Objective
    features: FeatureMatch | None
    world: distributed.World
    device: torch.device
    options: TrainOptions


def _frozen_copy(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    teacher = copy.deepcopy(model).to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def _state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _call(model: torch.nn.Module, batch):
    return model(*batch.args, **batch.kwargs)


def _step_loss(run: _Run, batch) -> torch.Tensor:
    out = _call(run.ddp, batch)
    with torch.no_grad():
        t_out = _call(run.teacher, batch) if run.teacher is not None else None
    loss = run.objective.loss(out, t_out, batch)
    extra = run.features.loss() if run.features is not None else None
    return loss if extra is None else loss + run.options.feature_weight * extra


@torch.no_grad()
def evaluate(run: _Run, val: Data) -> tuple[float, float]:
    """(validation metric, validation loss), each a mean over the samples of `val`."""
    run.student.eval()
    total, loss, count = 0.0, 0.0, 0
    for batch in val.batches():
        part = distributed.shard(batch, run.world, run.device)
        if part is None:
            continue
        local = part[0]
        t_out = _call(run.teacher, local) if run.teacher is not None else None
        s_out = _call(run.student, local)
        s, n = run.objective.score(s_out, t_out, local)
        total, loss, count = total + s, loss + float(run.objective.loss(s_out, t_out, local)) * n, count + n
    if run.features is not None:
        run.features.seen.clear()
    total, loss, count = distributed.all_sum([total, loss, count], run.world, run.device)
    return total / max(count, 1), loss / max(count, 1)


def _better(metric: float, loss: float, state: checkpoint.State) -> bool:
    """A higher metric, or the same metric at a lower validation loss (a saturated accuracy still ranks)."""
    return metric > state.best_metric or (metric == state.best_metric and loss < state.best_loss)


def _epoch(run: _Run, data: Data, epoch: int, opt, sched, on_step, progress) -> float:
    run.student.train()
    total, count = 0.0, 0
    for batch in data.batches(shuffle=True, seed=run.options.seed + epoch):
        part = distributed.shard(batch, run.world, run.device)
        if part is None:
            continue
        local, scale = part
        loss = _step_loss(run, local)
        (loss * scale).backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        total, count = total + value * local.size, count + local.size
        if progress is not None:
            progress.step(value)
        if on_step is not None:
            on_step(int(sched.last_epoch), value)
    total, count = distributed.all_sum([total, count], run.world, run.device)
    return total / max(count, 1)


def _shapes(output) -> list:
    leaves, spec = torch.utils._pytree.tree_flatten(output)
    return [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in leaves], str(spec)


def check_teacher(teacher: torch.nn.Module, sample, batch) -> None:
    """The teacher must take the student's inputs and give outputs of the student's structure and
    shapes (distillation compares them element by element); else one line naming both."""
    try:
        with torch.no_grad():
            out = teacher(*batch.args, **batch.kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's teacher: its failure is named, not a bug
        raise InputError(f"the teacher rejects the data's inputs ({type(exc).__name__}: {first_line(exc)}); pass the "
                         "model the student was pruned from as --teacher") from exc
    (want, want_spec), (got, got_spec) = _shapes(sample), _shapes(out)
    if want != got or want_spec != got_spec:
        raise InputError(f"the teacher's outputs {got} do not match the student's {want} (batch first); distillation "
                         "compares them: pass the model the student was pruned from as --teacher")


def _prepare(model, data: Data, teacher, options: TrainOptions) -> _Run:
    world, device = distributed.setup(options.device)
    torch.manual_seed(options.seed)
    student = copy.deepcopy(model).to(device)
    frozen = _frozen_copy(teacher, device) if teacher is not None else None
    first = distributed.shard(next(data.batches(limit=1)), distributed.World(), device)[0]
    with torch.no_grad():
        sample = student.eval()(*first.args, **first.kwargs)
    check_labels(data, sample)
    if frozen is not None:
        check_teacher(frozen, sample, first)
    objective = losses.choose(data.has_labels, frozen is not None, sample, options.distill_loss,
                              options.distill_weight, options.temperature)
    features = FeatureMatch(frozen, student, options.feature_layers) if options.feature_layers and frozen else None
    return _Run(student, distributed.wrap(student, world, device), frozen, objective, features, world, device, options)


def measure(model: torch.nn.Module, data: Data, *, teacher: torch.nn.Module | None = None,
            options: TrainOptions | None = None) -> tuple[str, float]:
    """(metric name, value) of `model` on `data`: what `finetune` reports as its validation metric."""
    run = _prepare(model, data, teacher, options or TrainOptions())
    return run.objective.metric, evaluate(run, data)[0]


def finetune(model: torch.nn.Module, data: Data, *, teacher: torch.nn.Module | None = None, val: Data | None = None,
             options: TrainOptions | None = None, on_step: Callable[[int, float], None] | None = None,
             progress=None) -> Result:
    """Train a copy of `model` on `data` (labels and/or distillation from `teacher`); see the module doc.

    `on_step(step, loss)` is called after every optimizer step; `progress` (rank 0 only) gets
    `start(total_steps, metric)`, `step(loss)`, `epoch(epoch, loss, metric)` and `close()`.
    """
    options = options or TrainOptions()
    options.check()
    if val is None:
        data, val = data.split(options.val_split, options.seed)
    run = _prepare(model, data, teacher, options)
    progress = progress if run.world.main else None
    opt = schedule.optimizer(run.student, options.lr, options.weight_decay)
    sched = schedule.warmup_cosine(opt, options.epochs * len(data), options.warmup)
    if options.resume:
        state = checkpoint.load(options.checkpoint, run.student, opt, sched, options.fingerprint())
    else:
        initial, val_loss = evaluate(run, val)
        state = checkpoint.State(best_metric=initial, best_loss=val_loss, best_state=_state(run.student),
                                 history=[{"epoch": 0, "loss": None, "val_loss": val_loss, "metric": initial}])
    if progress is not None:
        progress.start(options.epochs * len(data), run.objective.metric, done=state.epoch * len(data))
    stopped = False
    try:
        for epoch in range(state.epoch, options.epochs):
            loss = _epoch(run, data, epoch, opt, sched, on_step, progress)
            metric, val_loss = evaluate(run, val)
            state.epoch = epoch + 1
            state.history.append({"epoch": epoch + 1, "loss": loss, "val_loss": val_loss, "metric": metric})
            if _better(metric, val_loss, state):
                state.best_metric, state.best_loss, state.best_epoch = metric, val_loss, epoch + 1
                state.best_state, state.bad_epochs = _state(run.student), 0
            else:
                state.bad_epochs += 1
            if options.checkpoint is not None and run.world.main:
                checkpoint.save(options.checkpoint, run.student, opt, sched, state, options.fingerprint())
            distributed.barrier(run.world)
            if progress is not None:
                progress.epoch(epoch + 1, loss, metric)
            log.info("epoch %d: loss %.4g, %s %.4f", epoch + 1, loss, run.objective.metric, metric)
            if options.patience is not None and state.bad_epochs >= options.patience:
                stopped = state.epoch < options.epochs
                break
    finally:
        if progress is not None:
            progress.close()
        if run.features is not None:
            run.features.close()
    run.student.load_state_dict(state.best_state)
    best = run.student.cpu().train(model.training)
    return Result(best, run.objective.metric, state.history[0]["metric"], state.best_metric, state.best_epoch,
                  tuple(state.history), stopped)

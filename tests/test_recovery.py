"""Fine-tuning and distillation (graphprune.recovery): what a run changes, what it must not,
and that an interrupted run resumes to the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recovery_models import MLP, ConvBNDrop, TokenEncoder, data, images, npz, pruned_pair

from graphprune.errors import InputError
from graphprune.measure.objective import choose, embedding
from graphprune.recovery import TrainOptions, finetune

EXAMPLE = torch.randn(2, 1, 8, 8)


@pytest.fixture
def conv(tmp_path):
    torch.manual_seed(0)
    x, y = images(96)
    original, pruned = pruned_pair(ConvBNDrop(), EXAMPLE)
    return original, pruned, data(npz(tmp_path / "train.npz", x, y), EXAMPLE)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pruned_model_trains_bn_and_dropout(conv):
    """train(): dropout makes two passes differ and BN running stats move; eval(): deterministic."""
    _, pruned, _ = conv
    x = torch.randn(8, 1, 8, 8)
    pruned.train()
    before = pruned.get_buffer("bn.running_mean").clone()
    assert not torch.equal(pruned(x), pruned(x))
    assert not torch.equal(pruned.get_buffer("bn.running_mean"), before)
    pruned.eval()
    assert torch.equal(pruned(x), pruned(x))


def test_finetune_learns_and_touches_neither_input(conv):
    """Accuracy rises; the pruned input and the teacher keep weights, .grad and mode."""
    original, pruned, train = conv
    original.train()  # a mode the run must not change
    pruned.eval()
    saved_o, saved_p = _snapshot(original), _snapshot(pruned)
    result = finetune(pruned, train, teacher=original, options=TrainOptions(epochs=3, lr=3e-3))
    assert result.metric == "accuracy" and result.best > result.initial
    assert _same(saved_o, _snapshot(original)) and _same(saved_p, _snapshot(pruned))
    assert all(p.grad is None for p in (*original.parameters(), *pruned.parameters()))
    assert original.training and not pruned.training
    assert not result.model.training  # returned in the input's mode
    moved = result.model.get_buffer("bn.running_mean")
    assert not torch.equal(moved, pruned.get_buffer("bn.running_mean"))


def test_best_epoch_is_kept(conv, tmp_path):
    """Training on labels that contradict the validation set only lowers the metric: the run
    stops after `patience` epochs and returns the input's weights (epoch 0)."""
    _, pruned, train = conv
    x, y = images(96, seed=1)
    val = data(npz(tmp_path / "val.npz", x, y), EXAMPLE)
    other = data(npz(tmp_path / "other.npz", x, (y + 1) % 4), EXAMPLE)
    good = finetune(pruned, train, val=val, options=TrainOptions(epochs=3, lr=3e-3)).model
    result = finetune(good, other, val=val, options=TrainOptions(epochs=3, lr=3e-3, patience=1))
    assert result.best_epoch == 0 and result.best == result.initial > 0.9
    assert result.stopped_early and len(result.history) == 2 and result.history[1]["metric"] < result.initial
    assert _same(_snapshot(good), _snapshot(result.model))


def test_resume_equals_uninterrupted(conv, tmp_path):
    """Interrupted in epoch 2 (after epoch 1's checkpoint), resumed: same weights, same history."""
    _, pruned, train = conv
    ckpt = tmp_path / "run.ckpt"
    opts = TrainOptions(epochs=3, patience=None, checkpoint=ckpt)
    whole = finetune(pruned, train, options=opts)
    ckpt.unlink()
    steps = len(train.split(opts.val_split, opts.seed)[0])

    def stop(step, loss):
        if step == steps + 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(pruned, train, options=opts, on_step=stop)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed = finetune(pruned, train, options=TrainOptions(epochs=3, patience=None, checkpoint=ckpt, resume=True))
    assert _same(_snapshot(whole.model), _snapshot(resumed.model))
    assert whole.history == resumed.history


def test_resume_refuses_other_options(conv, tmp_path):
    _, pruned, train = conv
    ckpt = tmp_path / "run.ckpt"
    finetune(pruned, train, options=TrainOptions(epochs=1, checkpoint=ckpt))
    with pytest.raises(InputError, match="other options \\(lr\\)"):
        finetune(pruned, train, options=TrainOptions(epochs=1, lr=0.5, checkpoint=ckpt, resume=True))


def _kl_to(teacher, student, x):
    with torch.no_grad():
        t, s = torch.log_softmax(teacher(x), -1), torch.log_softmax(student(x), -1)
    return float(torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean"))


def test_distillation_without_labels_lowers_kl(tmp_path):
    """No labels: KL distillation from the original brings the pruned logits closer on unseen data."""
    torch.manual_seed(0)
    ex = torch.randn(2, 12)
    teacher = MLP()
    with torch.no_grad():
        teacher.fc3.weight.mul_(10.0)  # confident logits: a KL worth closing
    original, pruned = pruned_pair(teacher, ex, 0.6)
    x = torch.randn(160, 12).numpy()
    train = data(npz(tmp_path / "x.npz", x), ex)
    result = finetune(pruned, train, teacher=original, options=TrainOptions(epochs=4, lr=3e-3))
    assert result.metric == "top-1 agreement" and result.best > result.initial
    held = torch.randn(200, 12)
    assert _kl_to(original, result.model, held) < 0.5 * _kl_to(original, pruned, held)


def test_distillation_of_an_encoder_raises_masked_cosine(tmp_path):
    """[N, L, D] hidden states with an attention mask: mean-pooled cosine to the teacher rises."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ids, mask = rng.integers(0, 50, (128, 6)), (rng.random((128, 6)) > 0.2).astype(np.int64)
    ex = {"input_ids": torch.as_tensor(ids[:2]), "attention_mask": torch.as_tensor(mask[:2])}
    original, pruned = pruned_pair(TokenEncoder(), ex, 0.7)
    train = data(npz(tmp_path / "t.npz", None, input_ids=ids, attention_mask=mask), ex)
    result = finetune(pruned, train, teacher=original, options=TrainOptions(epochs=4, lr=3e-3))
    assert result.metric == "cosine to teacher" and result.best > result.initial


def test_embedding_is_mask_weighted_mean():
    y = torch.arange(12.0).reshape(1, 3, 4)
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(embedding(y, {"attention_mask": mask}), y[:, :2].mean(1))
    assert torch.equal(embedding(y, {}), y.mean(1))


def test_objective_needs_labels_or_a_teacher():
    with pytest.raises(InputError, match="--teacher"):
        choose(False, False, torch.zeros(2, 3), "auto", 0.5, 2.0)
    assert choose(False, True, torch.zeros(2, 3), "auto", 0.5, 2.0).distill == "kl"
    assert choose(False, True, torch.zeros(2, 5, 3), "auto", 0.5, 2.0).distill == "cosine"
    assert choose(True, True, torch.zeros(2, 3), "auto", 0.5, 2.0).labels


def test_feature_layers_match_same_width_only(conv, caplog):
    """`fc` keeps its width (the classes) and is matched; `conv` was pruned, so it is dropped."""
    original, pruned, train = conv
    opts = TrainOptions(epochs=1, feature_layers=("conv", "fc"))
    result = finetune(pruned, train, teacher=original, options=opts)
    assert len(result.history) == 2
    assert "feature layer conv not matched" in caplog.text
    assert not original.fc._forward_hooks and not pruned.get_submodule("fc")._forward_hooks  # hooks went on copies
    with pytest.raises(InputError, match="no submodule 'nope'"):
        finetune(pruned, train, teacher=original, options=TrainOptions(epochs=1, feature_layers=("nope",)))

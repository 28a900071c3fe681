"""Importance criteria: each against a score computed by hand on a tiny model, dead units lowest,
and the user's model untouched by calibration.

The tiny model is Linear(5, 6) -> ReLU -> Linear(6, 3): its six hidden neurons are six channels,
each the slices (row i of W1, b1[i], column i of W2). Hand-computed scores use the same slices.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune.data import load_data
from graphprune.errors import GraphPruneError
from graphprune.importance import CRITERIA, Calibration, from_parameters, score


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture()
def setup(tmp_path):
    model = MLP().eval()
    x = torch.randn(40, 5)
    y = torch.randint(0, 3, (40,))
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    data = load_data(str(tmp_path / "d.npz"), x[:1], batch_size=40)
    graph = graphprune.analyze(model, x[:1])
    return model, x, y, data, graph


def hidden_scores(graph, scores: np.ndarray) -> np.ndarray:
    """The channel scores of fc1's six output neurons, in neuron order."""
    node = next(n for n in graph.captured.graph.nodes if n.op == "get_attr" and n.target == "fc1.weight")
    return scores[graph.labels[graph.spaces.ids(((node, None), 0))]]


def slices(model, tensors: dict) -> np.ndarray:
    """Per neuron i: the sum of f over (W1[i, :], b1[i], W2[:, i]) for f given as tensors by name."""
    w1, b1, w2 = tensors["fc1.weight"], tensors["fc1.bias"], tensors["fc2.weight"]
    return (w1.sum(1) + b1 + w2.sum(0)).detach().double().numpy()


def test_weight_criteria_match_hand_computation(setup):
    model, _, _, _, graph = setup
    p = dict(model.named_parameters())
    l1 = slices(model, {k: v.abs() for k, v in p.items()})
    l2 = slices(model, {k: v * v for k, v in p.items()})
    np.testing.assert_allclose(hidden_scores(graph, score(graph, "l1")), l1, rtol=1e-6)
    np.testing.assert_allclose(hidden_scores(graph, score(graph, "l2")), l2, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_criteria_read_in_blocks_of_rows_match_the_whole_tensor(setup, monkeypatch, dtype):
    """Large weights are read a few rows at a time (no float32 copy of a half-precision tensor): the
    per-neuron sums must not depend on where the blocks fall, for rows (fc1) and columns (fc2) alike."""
    from graphprune.importance import channels

    model = MLP().eval().to(dtype)
    graph = graphprune.analyze(model, torch.randn(1, 5, dtype=dtype))
    p = {k: v.detach().double() for k, v in model.named_parameters()}
    want = {"l1": slices(model, {k: v.abs() for k, v in p.items()}), "l2": slices(model, {k: v * v for k, v in p.items()})}
    monkeypatch.setattr(channels, "_CHUNK", 7)  # fc1's 6x5 weight in blocks of one row, fc2's 3x6 likewise
    for name, expected in want.items():
        np.testing.assert_allclose(hidden_scores(graph, score(graph, name)), expected, rtol=1e-5)


def test_gradient_criteria_match_hand_computation(setup):
    model, x, y, data, graph = setup
    copy = MLP()
    copy.load_state_dict(model.state_dict())
    loss = nn.functional.cross_entropy(copy(x), y)
    grads = dict(zip([n for n, _ in copy.named_parameters()], torch.autograd.grad(loss, list(copy.parameters())), strict=True))
    p = dict(copy.named_parameters())
    calibration = Calibration(data=data, limit=None, grad_batch=None)  # one batch: sums are over that batch
    taylor = np.abs(slices(copy, {k: p[k] * grads[k] for k in p}))
    # fisher: labels drawn from the model's own softmax (seed 0 for the first batch), the true Fisher
    drawn = torch.multinomial(torch.softmax(copy(x).detach(), 1), 1, generator=torch.Generator().manual_seed(0)).squeeze(1)
    sampled = torch.autograd.grad(nn.functional.cross_entropy(copy(x), drawn), list(copy.parameters()))
    fisher = slices(copy, {k: g ** 2 for k, g in zip(p, sampled, strict=True)})
    gradient = slices(copy, {k: grads[k].abs() for k in p})
    for name, want in (("taylor", taylor), ("fisher", fisher), ("gradient", gradient)):
        got = hidden_scores(graph, score(graph, name, calibration=calibration))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-10, err_msg=name)
    assert calibration.loss == "labels+sampled"


def test_activation_criteria_match_hand_computation(setup):
    model, x, _, data, graph = setup
    with torch.no_grad():
        a = torch.relu(model.fc1(x)).double().numpy()  # [N, 6]: watched after the ReLU
    calibration = Calibration(data=data, limit=None)
    want = {"act-mean": np.abs(a).mean(0), "act-var": a.var(0), "apoz": 1.0 - (a == 0).mean(0)}
    for name, value in want.items():
        np.testing.assert_allclose(hidden_scores(graph, score(graph, name, calibration=calibration)), value, rtol=1e-5,
                                   atol=1e-9, err_msg=name)
    entropy = hidden_scores(graph, score(graph, "act-entropy", calibration=calibration))
    for i in range(6):
        v = a[:, i]
        if v.max() > v.min():
            p, _ = np.histogram(v, bins=32)
            p = p[p > 0] / len(v)
            assert entropy[i] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-6)
        else:
            assert entropy[i] == 0.0


def test_bn_criterion_is_gamma_and_refuses_models_without_batchnorm(setup):
    _, _, _, _, graph = setup
    with pytest.raises(GraphPruneError, match="BatchNorm"):
        score(graph, "bn")
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.linspace(-2, 2, 8))
    g = graphprune.analyze(model, torch.randn(1, 3, 8, 8))
    node = next(n for n in g.captured.graph.nodes if n.op == "get_attr" and n.target == "1.weight")
    got = score(g, "bn")[g.labels[g.spaces.ids(((node, None), 0))]]
    np.testing.assert_allclose(got, torch.linspace(-2, 2, 8).abs().numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(n for n, c in CRITERIA.items() if c.needs_data))
def test_a_dead_unit_scores_lowest_under_every_data_criterion(setup, name):
    model, x, _, data, _ = setup
    with torch.no_grad():  # neuron 2 is dead: nothing in, nothing out
        model.fc1.weight[2].zero_()
        model.fc1.bias[2] = 0.0
        model.fc2.weight[:, 2].zero_()
    graph = graphprune.analyze(model, x[:1])
    s = hidden_scores(graph, score(graph, name, data=data, limit=None))
    assert s[2] == pytest.approx(0.0, abs=1e-12)
    assert np.argmin(s) == 2 or s.min() == s[2]


def test_calibration_leaves_the_users_model_bit_for_bit_unchanged(setup):
    model, x, _, data, _ = setup
    model.train()  # a mode to keep
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in sorted(set(CRITERIA) - {"bn"}):  # bn refuses a model without BatchNorm
        graphprune.shrink(model, x[:1], data=data, criterion=name, target_macs=0.5)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_data_criteria_need_data_and_unknown_names_are_refused(setup):
    _, _, _, _, graph = setup
    with pytest.raises(GraphPruneError, match="--data"):
        score(graph, "taylor")
    with pytest.raises(GraphPruneError, match="unknown criterion"):
        score(graph, "magic")


def test_a_users_score_array_replaces_the_criterion(setup):
    model, x, _, _, graph = setup
    mine = from_parameters(graph, {"fc1.weight": torch.tensor([5.0, 0.1, 4.0, 3.0, 0.2, 6.0])})
    pruned, report = graphprune.shrink(model, x[:1], ratio=0.34, criterion=lambda g: from_parameters(
        g, {"fc1.weight": torch.tensor([5.0, 0.1, 4.0, 3.0, 0.2, 6.0])}), round_to=1)
    assert report.calibration["criterion"] == "user scores"
    kept = pruned.fc1.weight
    torch.testing.assert_close(kept, model.fc1.weight[[0, 2, 3, 5]])
    assert hidden_scores(graph, mine)[1] == pytest.approx(0.1)


def test_label_free_gradients_say_which_loss(tmp_path):
    model = MLP().eval()
    x = torch.randn(16, 5)
    torch.save(x, tmp_path / "x.pt")
    data = load_data(str(tmp_path / "x.pt"), x[:1], batch_size=8)
    _, report = graphprune.shrink(model, x[:1], data=data, criterion="taylor", ratio=0.3, round_to=1)
    assert "own top-1" in report.calibration["loss"]
    enc = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4), nn.Flatten(0, -1)).eval()  # 1-D output
    g = graphprune.analyze(enc, x[:1])
    calibration = Calibration(data=load_data(str(tmp_path / "x.pt"), x[:1], batch_size=1), limit=4)
    assert np.isfinite(score(g, "fisher", calibration=calibration)).all()
    assert calibration.loss == "projection"


def test_share_without_statistics_matches_hand_computation(setup):
    """No batch norm: a hidden neuron's variance is taken from its row of fc1 (unit-variance inputs),
    scaled to mean 1, and its score is its mean share of fc2's outputs' variance."""
    model, _, _, _, graph = setup
    w1, w2 = model.fc1.weight.detach().double(), model.fc2.weight.detach().double()
    var = w1.pow(2).sum(1)
    var = var / var.mean()
    contribution = w2.pow(2) * var[None, :]
    expected = (contribution / contribution.sum(1, keepdim=True)).mean(0).numpy()
    np.testing.assert_allclose(hidden_scores(graph, score(graph, "share")), expected, rtol=1e-6)


def test_share_ranks_a_dead_neuron_lowest_where_l2_does_not(setup):
    model, x, _, _, _ = setup
    with torch.no_grad():
        model.fc1.weight[2] = 0.0  # neuron 2 outputs relu(b1[2]): a constant, whatever its outgoing weights
        model.fc2.weight[:, 2] *= 50.0
    graph = graphprune.analyze(model, x[:1])
    assert np.argmin(hidden_scores(graph, score(graph, "share"))) == 2
    assert np.argmin(hidden_scores(graph, score(graph, "l2"))) != 2


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


def test_share_reads_batchnorm_statistics_not_the_producing_weights():
    """After a batch norm a channel's spread is its gamma, whatever the conv before it: a channel with a
    tiny gamma (and beta 0) carries almost nothing even with the largest conv weights."""
    torch.manual_seed(0)
    model = ConvBN().eval()
    with torch.no_grad():
        model.bn.weight.copy_(torch.linspace(0.5, 1.5, 8))
        model.bn.weight[5] = 1e-3
        model.bn.bias.zero_()
        model.conv.weight[5] *= 100.0
    graph = graphprune.analyze(model, torch.randn(1, 3, 6, 6))
    node = next(n for n in graph.captured.graph.nodes if n.op == "get_attr" and n.target == "conv.weight")
    scores = score(graph, "share")[graph.labels[graph.spaces.ids(((node, None), 0))]]
    assert np.argmin(scores) == 5
    assert np.argmax(score(graph, "l2")[graph.labels[graph.spaces.ids(((node, None), 0))]]) == 5


def test_auto_without_data_is_share_with_scores_compared_across_groups():
    torch.manual_seed(0)
    model = ConvBN().eval()
    pruned, report = graphprune.shrink(model, torch.randn(1, 3, 6, 6),
                                       plan=graphprune.PlanOptions(criterion="auto", ratio=0.5, round_to=1))
    assert report.options["criterion"] == "share" and report.options["normalize"] == "none"
    assert pruned(torch.randn(2, 3, 6, 6)).shape == (2, 4, 6, 6) and report.params_after < report.params_before

"""Held-out fidelity (graphprune.measure.fidelity, graphprune.pipeline.decide) and data-free bias correction
(graphprune.rewrite.compensate).

Oracles: the report's held-out figures equal the same figures computed here from the two models'
outputs; pruning nothing leaves perfect fidelity; a step that makes held-out fidelity worse is
undone, leaving the model exactly as it was; removing channels that carry a constant (BatchNorm
scale 0) and folding that constant into the next layer leaves the outputs equal to the original's;
with data, a plan chosen by adversarial scores is replaced by the data-free floor (L2 or share).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphprune
from graphprune.data import load_data
from graphprune.data.options import CalibrationOptions
from graphprune.measure.fidelity import Teacher, on_example
from graphprune.pipeline.decide import Judge, split
from graphprune.plan.types import PlanOptions
from graphprune.reasons import Outcome


class Classifier(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.body(x))


class Narrow(nn.Module):
    """One prunable group: body.0's outputs, through a batch norm and ReLU, into the head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.body(x))


def constant_channels(model: nn.Module, dead: list[int]) -> nn.Module:
    """Channels `dead` of the batch norm output the constant beta > 0 (scale 0), so after ReLU they
    carry a constant into body[3]; the others get varied statistics."""
    g = torch.Generator().manual_seed(1)
    bn = model.body[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(32, generator=g) * 0.1)
        bn.running_var.copy_(torch.rand(32, generator=g) + 0.5)
        bn.bias.copy_(torch.rand(32, generator=g) + 0.2)
        bn.weight[dead] = 0.0
    return model.eval()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 12, generator=g)
    path = tmp_path_factory.mktemp("fid") / "d.npz"
    labels = Classifier().eval()(x).argmax(1)
    np.savez(path, x=x.numpy(), y=labels.numpy())
    return path


def test_held_out_figures_match_an_independent_computation(data_file):
    model = Classifier().eval()
    data = load_data(str(data_file), torch.randn(1, 12), batch_size=16)
    pruned, report = graphprune.shrink(model, torch.randn(1, 12), plan=PlanOptions(target_params=0.6, criterion="taylor"),
                                       data=data)
    held = report.fidelity["held_out"]
    file = np.load(data_file)  # the report names the file's rows it measured: recompute from them, as a user would
    x, y = torch.from_numpy(file["x"][held["indices"]]), torch.from_numpy(file["y"][held["indices"]])
    _, (selection, test), _ = split(data)  # the same seed-0 split shrink made
    assert torch.equal(x, torch.cat([b.args[0] for b in test.batches()]))
    assert report.fidelity["selection"]["indices"] == [int(i) for i in selection.indices]
    assert not set(held["indices"]) & set(report.fidelity["selection"]["indices"])
    with torch.no_grad():
        t, s = model(x), pruned.eval()(x)
    assert held["samples"] == len(x)
    assert held["agreement"] == pytest.approx(float((s.argmax(1) == t.argmax(1)).float().mean()))
    kl = F.kl_div(s.log_softmax(1), t.log_softmax(1), log_target=True, reduction="batchmean")
    assert held["kl"] == pytest.approx(float(kl), rel=1e-4, abs=1e-6)
    assert held["accuracy"][1] == pytest.approx(float((s.argmax(1) == y).float().mean()))


def test_pruning_nothing_leaves_perfect_fidelity(data_file):
    model = Classifier().eval()
    data = load_data(str(data_file), torch.randn(1, 12), batch_size=16)
    _, report = graphprune.shrink(model, torch.randn(1, 12), plan=PlanOptions(ratio=0.0), data=data)
    held = report.fidelity["held_out"]
    assert held["agreement"] == 1.0 and held["kl"] == pytest.approx(0.0, abs=1e-6)


def test_a_step_that_hurts_held_out_fidelity_is_undone(data_file):
    model = Classifier().eval()
    data = load_data(str(data_file), torch.randn(1, 12), batch_size=16)
    _, held, _ = split(data)
    judge = Judge(model, held)
    copy = Classifier().eval()
    saved = {k: v.clone() for k, v in copy.state_dict().items()}

    def damage():
        with torch.no_grad():
            copy.head.weight.mul_(-1.0)
        return "negated the head"

    assert not judge.step("damage", copy, damage)
    assert all(torch.equal(saved[k], v) for k, v in copy.state_dict().items())
    assert judge.records[-1].outcome is Outcome.UNDONE and judge.records[-1].after > judge.records[-1].before
    assert not judge.step("nothing", copy, lambda: None)
    assert judge.records[-1].outcome is Outcome.NOTHING


def test_the_judge_measures_a_model_again_only_once_its_tensors_changed(data_file, monkeypatch):
    model = Classifier().eval()
    data = load_data(str(data_file), torch.randn(1, 12), batch_size=16)
    _, held, _ = split(data)
    judge = Judge(model, held)
    passes = []
    measure = judge.selection.measure
    monkeypatch.setattr(judge.selection, "measure", lambda m: passes.append(1) or measure(m))
    copy = Classifier().eval()
    first = judge.loss(copy)
    assert judge.loss(copy) == first and len(passes) == 1  # unchanged: the figure stands
    with torch.no_grad():
        copy.head.weight.mul_(0.9)  # written in place: measured again
    assert judge.loss(copy) != first and len(passes) == 2

    def damage():
        with torch.no_grad():
            copy.head.weight.mul_(-1.0)
        return "negated the head"

    assert not judge.step("damage", copy, damage)
    record = judge.records[-1]
    assert record.outcome is Outcome.UNDONE and len(passes) == 3  # 'before' was the last figure; 'after' one pass
    assert judge.loss(copy) == record.before and len(passes) == 3  # undone: as before the step, not measured again


def test_teacher_measures_embeddings_by_cosine():
    class Encoder(nn.Module):
        def forward(self, input_ids, attention_mask):
            return torch.nn.functional.one_hot(input_ids, 6).float() * attention_mask[..., None]

    batch = type("B", (), {})()
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    from graphprune.data import Batch

    batch = Batch((), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, None)
    data = type("D", (), {"batches": lambda self, limit=None: iter([batch]), "description": "toy"})()
    fid = Teacher(Encoder(), data).measure(Encoder())
    assert fid.kind == "embeddings" and fid.cosine == pytest.approx(1.0) and fid.loss == pytest.approx(0.0, abs=1e-6)


def _scores_removing(dead: list[int]):
    def scores(graph):
        s = np.ones(graph.num_channels)
        ids = graph.spaces.ids(((next(n for n in graph.captured.module.graph.nodes
                                      if n.op == "get_attr" and n.target == "body.0.weight"), None), 0))
        s[graph.labels[ids[dead]]] = 0.0
        return s
    return scores


@pytest.mark.parametrize("compensate", [True, False])
def test_bias_correction_puts_back_constant_channels_exactly(compensate):
    dead = list(range(0, 32, 2))
    model = constant_channels(Narrow(), dead)
    x = torch.randn(64, 12)
    pruned, report = graphprune.shrink(model, x[:2], plan=PlanOptions(ratio=0.5, round_to=1), scores=_scores_removing(dead),
                                       calibration=CalibrationOptions(compensate=compensate))
    assert pruned.get_parameter("head.weight").shape[1] == 16
    with torch.no_grad():
        equal = torch.allclose(pruned.eval()(x), model(x), atol=1e-4)
    assert equal is compensate
    assert report.fidelity["data"] == "none"
    # the figure is the returned model's, also when the correction changed it after the checks ran it
    with torch.no_grad():
        moved = on_example(model(x[:2]), pruned.eval()(x[:2]))
    assert report.fidelity["example"]["cosine"] == pytest.approx(moved["cosine"], abs=1e-6)


class ConvNet(nn.Module):
    """1x1 convolutions, the second without a bias: the correction goes into its batch norm's mean."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.bn1 = nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16)
        self.b, self.bn2 = nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)

    def forward(self, x):  # the output's 8 channels are the model's: one prunable group, a -> bn1 -> b
        return self.bn2(self.b(F.relu(self.bn1(self.a(x))))).mean((2, 3))


def test_bias_correction_into_a_batch_norms_running_mean():
    model = ConvNet().eval()
    with torch.no_grad():
        model.bn1.bias.copy_(torch.rand(16) + 0.2)
        model.bn1.weight[8:] = 0.0
        model.bn2.running_var.copy_(torch.rand(8) + 0.5)
    x = torch.randn(4, 3, 5, 5)

    def scores(graph):
        node = next(n for n in graph.captured.module.graph.nodes if n.op == "get_attr" and n.target == "a.weight")
        s = np.ones(graph.num_channels)
        s[graph.labels[graph.spaces.ids(((node, None), 0))[8:]]] = 0.0
        return s

    pruned, _ = graphprune.shrink(model, x[:1], plan=PlanOptions(ratio=0.5, round_to=1), scores=scores)
    with torch.no_grad():
        assert torch.allclose(pruned.eval()(x), model(x), atol=1e-4)


def test_with_data_a_bad_plan_falls_back_to_the_data_free_floor(data_file):
    model = Narrow().eval()
    with torch.no_grad():  # half of the units are near zero: L2 removes them, minus L2 the others
        model.body[0].weight[::2] *= 0.01
        model.body[0].bias[::2] *= 0.01
        model.head.weight *= 5.0
    data = load_data(str(data_file), torch.randn(1, 12), batch_size=16)

    def worst(graph):  # keeps the weakest channels
        return -graphprune.importance.l2(graph)

    pruned, report = graphprune.shrink(model, torch.randn(1, 12), plan=PlanOptions(ratio=0.5), data=data, scores=worst,
                                       calibration=CalibrationOptions(reconstruct=False))
    floor = report.fidelity["floor"]
    assert floor["used"] and floor["loss"] < floor["result_loss"]
    assert set(floor["candidates"]) == {"l2", "share"} and floor["loss"] == min(floor["candidates"].values())
    free_plan, _ = graphprune.shrink(model, torch.randn(1, 12), plan=PlanOptions(ratio=0.5, criterion=floor["criterion"]),
                                     calibration=CalibrationOptions(compensate=False))
    assert torch.equal(pruned.get_parameter("body.0.weight"), free_plan.get_parameter("body.0.weight"))


def test_auto_reports_every_candidate_and_keeps_the_best(data_file):
    model = Classifier().eval()
    data = load_data(str(data_file), torch.randn(1, 12), batch_size=16)
    _, report = graphprune.shrink(model, torch.randn(1, 12), plan=PlanOptions(target_params=0.6, criterion="auto"),
                                  data=data)
    rows = [r for r in report.calibration["auto"] if r["loss"] is not None]
    assert len(rows) >= 4
    best = min(rows, key=lambda r: r["loss"])
    assert best["chosen"] and report.calibration["criterion"] == best["criterion"]
    # under a budget each criterion is judged under every allocation rule, and the chosen pair is what was built
    assert len({(r["normalize"], r["allocate"]) for r in rows if r["criterion"] == "taylor"}) >= 3
    (rule,) = [a for a in report.allocation if a["chosen"]]
    assert (rule["normalize"], rule["allocate"]) == (best["normalize"], best["allocate"])
    from rich.console import Console

    from graphprune.report.report import render

    console = Console(record=True, width=300)
    render(report, console)
    assert f"criterion auto: {best['criterion']} (lowest held-out loss of {len(rows)} candidates" in console.export_text()
    assert {s["step"] for s in report.fidelity["steps"]} >= {"refit", "BatchNorm re-estimation"}


def test_cli_summary_says_no_data_and_how_far_outputs_moved(tmp_path):
    from typer.testing import CliRunner

    from graphprune.cli import app

    torch.save(constant_channels(Classifier(), [0, 1]), tmp_path / "m.pt")
    result = CliRunner().invoke(app, ["shrink", str(tmp_path / "m.pt"), "--input-shape", "2,12", "--ratio", "0.5"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "no data used" in text and "cosine" in text and "KL" in text
    assert "criterion share: sum over the dense layers reading the channel" in text
    report = json.loads((tmp_path / "m.pruned.json").read_text())
    assert report["fidelity"]["data"] == "none"
    assert report["options"]["criterion"] == "share"  # the CLI's default, auto, without data


def test_refit_refuses_a_layer_with_fewer_rows_than_inputs(tmp_path):
    from graphprune.rewrite.reconstruct import Verdict, reconstruct

    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    x = torch.randn(8, 8)
    np.savez(tmp_path / "few.npz", x=x.numpy())
    data = load_data(str(tmp_path / "few.npz"), x[:1], batch_size=2)  # 3 batches fitted: 6 rows < 33 unknowns
    plan = graphprune.plan(graphprune.analyze(model, x[:1]), PlanOptions(ratio=0.5, round_to=1))
    pruned = graphprune.rewrite(plan)
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    (refit,) = reconstruct(plan, pruned, data)
    assert refit.verdict is Verdict.FEW_ROWS and refit.rows == 6 and refit.lam is None
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())

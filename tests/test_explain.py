"""graphprune explain: map-agreement metrics, ceiling and floor, decisions checked independently,
a self-contained page, the command's refusals, and image, token and tabular models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import graphprune
from graphprune.cli import app
from graphprune.data import load_data
from graphprune.explain import compare, explain
from graphprune.explain.inputs import Readout, example_of_graph

ROOT = Path(__file__).resolve().parent.parent
NETWORK = [re.compile(p, re.I) for p in (r"https?://", r"(?:src|href)\s*=\s*[\"']?\s*//", r"url\(\s*[\"']?\s*//",
                                          r"<link\b", r"<script\b", r"@import")]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The bundled digits CNN, pruned at 0.3, both saved, and 96 test inputs with labels as .npz."""
    from models.digits import load_split

    folder = tmp_path_factory.mktemp("digits")
    model = torch.load(ROOT / "models" / "digits_cnn.pt", weights_only=False).eval()
    example = torch.load(ROOT / "models" / "digits_example.pt")
    pruned, _ = graphprune.shrink(model, example, ratio=0.3)
    torch.save(model, folder / "orig.pt")
    torch.save(pruned, folder / "pruned.pt")
    _, _, x, y = load_split()
    np.savez(folder / "test.npz", x=x[:96].numpy(), y=y[:96].numpy())
    return folder, model, pruned, example


def test_metrics_are_one_for_identical_maps_and_low_for_permuted_ones():
    gen = np.random.default_rng(0)
    a = gen.random((16, 16))
    permuted = gen.permutation(a.ravel()).reshape(a.shape)
    same = compare.metrics(a, a.copy())
    assert same == pytest.approx({"spearman": 1.0, "top_k": 1.0, "ssim": 1.0})
    other = compare.metrics(a, permuted)
    assert abs(other["spearman"]) < 0.3 and other["top_k"] < 0.5 and other["ssim"] < 0.5
    assert compare.spearman(a, -a) == pytest.approx(-1.0)
    assert compare.spearman(a, np.zeros_like(a)) == 0.0  # a constant map ranks nothing


def test_sanity_check_fails_a_method_whose_floor_reaches_its_ceiling():
    row = {"pruned": {"spearman": 0.5}, "ceiling": {"spearman": 0.6}, "floor": {"spearman": 0.7}}
    assert not compare.sane(compare.summarise([row]))
    row["floor"] = {"spearman": 0.1}
    scored = compare.summarise([row])
    assert compare.sane(scored) and scored["spearman"].relative == pytest.approx(0.8)


def test_embedding_readout_pools_over_the_attention_mask():
    h = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pooled = Readout.infer({"last_hidden_state": h}).read({"last_hidden_state": h}, mask)
    assert torch.allclose(pooled, torch.stack([h[0, :2].mean(0), h[1, 0]]))
    assert Readout.infer(torch.zeros(4, 10)).kind == "classes"


def test_example_is_recovered_from_a_pickled_pruned_graph(digits):
    folder, *_ = digits
    pruned = torch.load(folder / "pruned.pt", weights_only=False)
    found = example_of_graph(pruned)
    assert isinstance(found, tuple) and found[0].shape == (2, 1, 8, 8) and found[0].dtype == torch.float32


def _independent_top1(folder: Path) -> float:
    z = np.load(folder / "test.npz")
    x = torch.from_numpy(z["x"])
    a, b = (torch.load(folder / name, weights_only=False).eval() for name in ("orig.pt", "pruned.pt"))
    with torch.no_grad():
        return (a(x).argmax(1) == b(x).argmax(1)).float().mean().item()


def test_command_writes_a_self_contained_page_and_its_figures(digits):
    folder, *_ = digits
    out = folder / "r.html"
    res = CliRunner().invoke(app, ["explain", str(folder / "orig.pt"), str(folder / "pruned.pt"), "--data",
                                   str(folder / "test.npz"), "-o", str(out), "--samples", "3", "--batch-size", "40"])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    for pattern in NETWORK:
        assert not pattern.search(page), pattern.pattern
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", page)) >= 4
    figures = json.loads((folder / "r.json").read_text())
    assert figures["top1_agreement"] == pytest.approx(_independent_top1(folder), abs=1e-6)
    assert figures["decisions"]["num_inputs"] == 96
    flips = figures["decisions"]["flips"]
    assert sum(flips.values()) == 96
    acc = figures["decisions"]["accuracy"]
    assert flips["right_to_right"] + flips["right_to_wrong"] == round(acc["original"] * 96)
    ig = figures["explanations"]["integrated_gradients"]["summary"]["spearman"]
    assert -1.0 <= ig["value"] <= 1.0
    changed = set(figures["decisions"]["changed"])
    shown = [g["index"] for g in figures["gallery"]]
    assert len(shown) == 3 and [i in changed for i in shown] == sorted((i in changed for i in shown), reverse=True)


def test_ceiling_and_floor_are_computed_and_ordered(digits):
    folder, model, pruned, example = digits
    data = load_data(str(folder / "test.npz"), example, batch_size=48)
    result = explain(model, pruned, data, samples=3)
    for name in ("saliency", "grad_cam"):
        s = result.methods[name]["summary"]["spearman"]
        assert np.isfinite(s["ceiling"]) and np.isfinite(s["floor"]) and s["count"] == 3
        assert s["floor"] < s["ceiling"] and result.methods[name]["sane"]
    assert set(result.gallery[0]["maps"]) >= {"saliency", "grad_cam"}


def test_user_models_are_not_touched(digits):
    folder, model, pruned, example = digits
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = load_data(str(folder / "test.npz"), example, batch_size=96)
    explain(model, pruned, data, samples=1)
    assert model.training and not pruned.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in (*model.parameters(), *pruned.parameters()))
    model.eval()


def test_command_refuses_existing_outputs_and_inputs(digits):
    folder, *_ = digits
    runner = CliRunner()
    args = ["explain", str(folder / "orig.pt"), str(folder / "pruned.pt"), "--data", str(folder / "test.npz")]
    (folder / "taken.html").write_text("keep")
    res = runner.invoke(app, [*args, "-o", str(folder / "taken.html"), "--samples", "0"])
    assert res.exit_code == 2 and "--force" in res.output and (folder / "taken.html").read_text() == "keep"
    res = runner.invoke(app, [*args, "-o", str(folder / "pruned.pt")])
    assert res.exit_code == 2 and "input" in res.output
    assert not list(folder.glob(".*.tmp"))


def test_token_classifier_is_explained_per_token(tmp_path):
    from models.text_classifier import TextClassifier

    model = TextClassifier(vocab=50, max_len=16, layers=1).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (12, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[:4, 7:] = 0
    example = {"input_ids": ids[:2], "attention_mask": mask[:2]}
    pruned, _ = graphprune.shrink(model, example, ratio=0.3)
    torch.save({"input_ids": ids, "attention_mask": mask}, tmp_path / "ids.pt")
    result = explain(model, pruned, load_data(str(tmp_path / "ids.pt"), example, batch_size=6), samples=3)
    assert result.kind == "tokens" and result.readout == "classes"
    assert "skipped" in result.methods["grad_cam"]
    for name in ("integrated_gradients", "saliency"):
        assert "summary" in result.methods[name], result.methods[name]
    for g in result.gallery:
        assert len(g["tokens"]) == len(g["maps"]["saliency"][0]) == len(g["maps"]["saliency"][1])
        assert len(g["tokens"]) == (7 if g["index"] < 4 else 10)  # padding is not explained


def test_tabular_model_gets_feature_bars(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).eval()
    pruned, _ = graphprune.shrink(model, torch.randn(2, 6), ratio=0.5, round_to=1)
    np.savez(tmp_path / "t.npz", x=np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32),
             y=np.arange(30) % 3)
    data = load_data(str(tmp_path / "t.npz"), torch.randn(2, 6))
    out = tmp_path / "t.html"
    result = explain(model, pruned, data, samples=2, out=out)
    assert result.kind == "tabular" and result.gallery[0]["maps"]["saliency"][0].shape == (6,)
    assert "skipped" in result.methods["grad_cam"]
    assert json.loads((tmp_path / "t.json").read_text())["decisions"]["recall"]
    assert out.read_text().count("data:image/png;base64,") >= 4


def test_eager_pair_without_example_fits_float64_data(tmp_path):
    """Two eager models (no graph, no stored example): the layout comes from the data, cast to the model's dtype."""
    torch.manual_seed(0)

    def net(width: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(width, 8, 3),
                                   torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(8, 4)).eval()

    big, small = net(8), net(4)
    torch.save(big, tmp_path / "a.pt")
    torch.save(small, tmp_path / "b.pt")
    x = np.random.default_rng(0).random((20, 3, 12, 12))
    np.savez(tmp_path / "d.npz", x=x)
    res = CliRunner().invoke(app, ["explain", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--data",
                                   str(tmp_path / "d.npz"), "--samples", "2"])
    assert res.exit_code == 0, res.output
    figures = json.loads((tmp_path / "b.explain.json").read_text())
    with torch.no_grad():
        t = torch.from_numpy(x).float()
        expected = (big(t).argmax(1) == small(t).argmax(1)).float().mean().item()
    assert figures["top1_agreement"] == pytest.approx(expected, abs=1e-6)
    assert figures["decisions"]["accuracy"] is None and "grad_cam" in figures["gallery"][0]["maps"]


def test_shrink_explain_writes_the_report_of_the_pair_it_made(digits, tmp_path):
    folder, *_ = digits
    runner = CliRunner()
    base = ["shrink", str(ROOT / "models" / "digits_cnn.pt"), "--example-input", str(ROOT / "models" / "digits_example.pt"),
            "--ratio", "0.3", "-o", str(tmp_path / "p.pt")]
    res = runner.invoke(app, [*base, "--explain"])
    assert res.exit_code == 2 and "--data" in res.output and not list(tmp_path.iterdir())
    res = runner.invoke(app, [*base, "--data", str(folder / "test.npz"), "--explain"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in tmp_path.iterdir()} == {"p.pt", "p.json", "p.explain.html", "p.explain.json"}
    figures = json.loads((tmp_path / "p.explain.json").read_text())
    a = torch.load(ROOT / "models" / "digits_cnn.pt", weights_only=False).eval()
    b = torch.load(tmp_path / "p.pt", weights_only=False).eval()
    x = torch.from_numpy(np.load(folder / "test.npz")["x"])
    with torch.no_grad():
        assert figures["top1_agreement"] == pytest.approx((a(x).argmax(1) == b(x).argmax(1)).float().mean().item(), abs=1e-6)
    assert figures["structure"]["source"] == "shrink report" and figures["structure"]["groups"]

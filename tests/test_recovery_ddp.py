"""`graphprune finetune` under torchrun with two CPU processes (gloo) ends with the weights of a
single-process run (graphprune.recovery.distributed: each rank takes its slice of every batch)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from conftest import ROOT
from recovery_models import MLP, npz, pruned_pair


def _run(args: list[str], cwd) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_two_gloo_ranks_equal_one_process(tmp_path):
    torch.manual_seed(0)
    _, pruned = pruned_pair(MLP(), torch.randn(2, 12), 0.5)
    torch.save(pruned, tmp_path / "pruned.pt")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12)).astype(np.float32)
    npz(tmp_path / "train.npz", x, np.digitize(x[:, 0], [-0.5, 0.5]))  # learnable: the best epoch is a trained one
    common = ["finetune", "pruned.pt", "--data", "train.npz", "--input-shape", "1,12", "--epochs", "3",
              "--batch-size", "20", "--lr", "1e-2", "--patience", "100", "--device", "cpu"]
    _run(["-m", "graphprune.cli", *common, "-o", "one.pt"], tmp_path)
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "graphprune.cli",
          *common, "-o", "two.pt"], tmp_path)
    one = torch.load(tmp_path / "one.pt", weights_only=False).state_dict()
    two = torch.load(tmp_path / "two.pt", weights_only=False).state_dict()
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    start = pruned.state_dict()
    assert any(not torch.equal(one[k], start[k]) for k in one)  # it trained

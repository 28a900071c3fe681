"""Without data, does re-estimating BatchNorm on synthesised inputs help? EfficientNet-Lite0, measured.

Issue 20 asks what data-free methods gain on a pretrained BatchNorm network pruned without data. One
is in graphprune (the bias correction from BatchNorm statistics, and the `share` criterion); this
script measures the other one the issue names, ZeroQ-style synthetic data (Cai et al., CVPR 2020):

1. Synthesise --samples inputs: start from Gaussian noise and follow the gradient (Adam, --steps
   steps, --lr) of  sum over the network's BatchNorms of mean_c [(mu_c - m_c)^2 + (sd_c - s_c)^2] / s_c^2,
   where mu_c, sd_c are the batch statistics of the BatchNorm's input and m_c, s_c^2 its stored
   running mean and variance; that is, inputs whose activations look, layer by layer, like the
   training data's did. Only the inputs are optimised (a copy of the model, gradients taken with
   torch.autograd.grad, so no parameter gathers a .grad).
2. Prune without data (criterion `share`, what `--criterion auto` is without data) at each MACs budget.
3. Measure top-1 agreement and KL to the original on photographs no run saw (the held-out views of
   scripts/fidelity_bench.py): as pruned; with BatchNorm re-estimated on the synthesised inputs; and
   with it re-estimated on the Gaussian noise they started from (the control).

    python -m scripts.data_free_bn                                  # budgets 0.9 0.7 0.5, writes docs/BENCHMARKS.md
    python -m scripts.data_free_bn --budgets 0.9 --steps 20 --out /tmp/dfbn.md
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import graphprune
from graphprune.data import load_data
from graphprune.plan.types import PlanOptions
from graphprune.rewrite.recalibrate import recalibrate
from scripts.common import ROOT
from scripts.docsection import BENCHMARKS_HEADER, produced_by, write_section
from scripts.photo_views import effnet_measure, effnet_setup

SECTION = "data_free_bn"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def bn_matching_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mean over BatchNorms of how far the batch statistics of their inputs are from the stored ones."""
    terms = []

    def hook(bn, inputs, _):
        a = inputs[0]
        dims = [0, *range(2, a.dim())]
        mu, sd = a.mean(dims), a.var(dims, unbiased=False).add(bn.eps).sqrt()
        var = bn.running_var + bn.eps
        terms.append((((mu - bn.running_mean) ** 2 + (sd - var.sqrt()) ** 2) / var).mean())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(terms).mean()


def synthesise(model: torch.nn.Module, shape: tuple, samples: int, steps: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(synthesised inputs, the noise they started from)."""
    model = copy.deepcopy(model).eval()
    noise = torch.randn(samples, *shape[1:], generator=torch.Generator().manual_seed(0))
    x = noise.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for step in range(steps):
        loss = bn_matching_loss(model, x)
        (x.grad,) = torch.autograd.grad(loss, x)
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            say(f"  synthesis step {step}: BatchNorm matching loss {loss.item():.4f}")
    return x.detach(), noise


def as_data(x: torch.Tensor, example: torch.Tensor, folder: Path, name: str):
    path = folder / f"{name}.npz"
    np.savez(path, x=x.numpy())
    return load_data(str(path), example, batch_size=16)


def run(budgets: list[float], samples: int, steps: int, lr: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="data_free_bn.") as tmp:
        model, example, _, held = effnet_setup(Path(tmp), 16)
        t0 = time.perf_counter()
        x, noise = synthesise(model, tuple(example.shape), samples, steps, lr)
        seconds = time.perf_counter() - t0
        loss = (float(bn_matching_loss(model, noise)), float(bn_matching_loss(model, x)))
        synth, control = as_data(x, example, Path(tmp), "synth"), as_data(noise, example, Path(tmp), "noise")
        rows = []
        for target in budgets:
            say(f"target MACs {target}")
            row = {"budget": target}
            for label, data in (("pruned", None), ("synthesised", synth), ("noise", control)):
                pruned, report = graphprune.shrink(model, example, plan=PlanOptions(criterion="share", normalize="none",
                                                                                   target_macs=target))
                if data is not None:
                    recalibrate(pruned, data, limit=None)
                row[label] = effnet_measure(model, pruned, held)
                row["macs"] = report.macs_ratio
            rows.append(row)
            say(f"  {row}")
    return {"rows": rows, "seconds": seconds, "loss": loss, "samples": samples, "steps": steps, "lr": lr,
            "held": len(held)}


def render(result: dict, argv: list[str]) -> str:
    lines = ["## Without data: BatchNorm re-estimated on synthesised inputs (EfficientNet-Lite0)", "",
             f"{result['samples']} inputs synthesised so that every BatchNorm's batch statistics match its stored ones "
             f"(ZeroQ; {result['steps']} Adam steps, lr {result['lr']}: matching loss {result['loss'][0]:.3f} for the "
             f"Gaussian noise they start from, {result['loss'][1]:.3f} after, {result['seconds']:.0f} s). Each budget is "
             "pruned without data (`share`, with the bias correction), then measured as pruned, with BatchNorm "
             "re-estimated on the synthesised inputs, and with it re-estimated on the noise (control); top-1 agreement "
             f"/ KL to the original on {result['held']} held-out views of photographs no run saw (scripts/fidelity_bench.py).",
             "", "| MACs | as pruned | BatchNorm on synthesised inputs | BatchNorm on noise |", "|---|---|---|---|"]
    for r in result["rows"]:
        cells = [f"{r[k]['agreement']:.2f} / {r[k]['kl']:.2f}" for k in ("pruned", "synthesised", "noise")]
        lines.append(f"| {r['macs']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", produced_by("scripts.data_free_bn", argv)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.9, 0.7, 0.5], help="fractions of the MACs")
    p.add_argument("--samples", type=int, default=32, help="inputs synthesised")
    p.add_argument("--steps", type=int, default=100, help="Adam steps of the synthesis")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    opts = p.parse_args(argv)
    torch.set_num_threads(2)
    text = render(run(opts.budgets, opts.samples, opts.steps, opts.lr), argv)
    print(text)
    write_section(opts.out, SECTION, text, BENCHMARKS_HEADER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

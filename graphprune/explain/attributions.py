"""Attribution maps of one model for one input, from captum (imported when first used).

The explained score is a scalar per input: the logit of the ORIGINAL's predicted class for
classifiers; for encoders, the pooled embedding's projection on the original's unit pooled
embedding of that input, e . f(x) / |f(x)| (a dot product, not a cosine: the cosine of the
original with itself has zero gradient at x).

Methods (one table, `METHODS`); images and tabular inputs are attributed directly, token inputs
on the output of the original's word-embedding submodule (the `nn.Embedding` the token ids feed):

* integrated_gradients: `IntegratedGradients` from a zero baseline; tokens `LayerIntegratedGradients`
  from the pad-token baseline. Ceiling rerun: a second baseline, Gaussian noise of 0.25 std (images,
  tabular; seed 1) or the tokenizer's unknown token (tokens; random token ids, seed 1, without one).
* saliency: `Saliency` (absolute gradient); tokens the gradient at the embedding output
  (`LayerGradientXActivation` without the activation), its L2 norm per token. Ceiling rerun: the
  input (tokens: the embedding output) plus Gaussian noise of 0.05 std, seed 1.
* grad_cam: `LayerGradCam` on the original's last convolution submodule (the pruned model hooks
  the submodule of the same name), upsampled to the input; images only. Ceiling rerun: input noise
  of 0.05 std, seed 1.

A map is one non-negative number per position: |attribution| summed over channels (pixels),
per feature (tabular), per token (|sum over the hidden dim| for integrated gradients, the
gradient's L2 norm for saliency). Guided backprop, deconvolution and guided Grad-CAM are not
offered: they fail the weight-randomisation sanity check (Adebayo et al., 2018).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from graphprune.explain.inputs import Caller, Readout

IG_STEPS = 32
CEILING_SEED = 1
BASELINE_NOISE = 0.25
INPUT_NOISE = 0.05


@dataclass(frozen=True)
class Subject:
    """One input to explain: how to call the models, what to explain, and the layers to hook."""

    caller: Caller
    readout: Readout
    target: object  # class index (int) or the original's unit pooled embedding (tensor [D])
    conv: str | None  # the original's last convolution submodule
    embedding: str | None  # the original's word-embedding submodule (token models)
    pad_id: int = 0
    vocab: int = 0
    steps: int = IG_STEPS  # integrated-gradients steps
    alt_id: int | None = None  # second baseline token (the tokenizer's unknown token), else random ids

    @property
    def keep(self) -> np.ndarray | None:
        """Positions that are real tokens (the attention mask), for token models."""
        if self.caller.kind != "tokens":
            return None
        mask = self.caller.mask(self.caller.other_tensors)
        n = self.caller.tensor.shape[1]
        return np.ones(n, dtype=bool) if mask is None else mask[0].numpy().astype(bool)


def score(model: torch.nn.Module, subject: Subject) -> Callable:
    """forward(explained, *others) -> [N] explained score, as captum calls it."""
    caller, readout, target = subject.caller, subject.readout, subject.target

    def forward(explained, *others):
        out = readout.read(caller.call(model, explained, *others), caller.mask(others))
        if readout.kind == "classes":
            return out[:, target]
        return out @ target.to(out.dtype)

    return forward


def _noisy(t: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return t + scale * t.float().std().clamp_min(1e-6) * torch.randn(t.shape, generator=gen, dtype=t.dtype)


@contextlib.contextmanager
def _noisy_layer(layer: torch.nn.Module, scale: float, seed: int):
    handle = layer.register_forward_hook(lambda m, i, out: _noisy(out, scale, seed))
    try:
        yield
    finally:
        handle.remove()


def _reduce(attr: torch.Tensor, subject: Subject, how: str) -> np.ndarray:
    a = attr.detach().float()
    if subject.caller.kind == "tokens":
        per = a.sum(-1).abs() if how == "sum" else a.norm(dim=-1)
        return per[0].numpy()[subject.keep]
    if subject.caller.kind == "image":
        return a.abs().sum(1)[0].numpy()
    return a.abs().reshape(-1).numpy()


def integrated_gradients(model, subject: Subject, ceiling: bool) -> np.ndarray:
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    forward, x, others = score(model, subject), subject.caller.tensor, subject.caller.other_tensors
    if subject.caller.kind == "tokens":
        base = torch.full_like(x, subject.pad_id)
        if ceiling and subject.alt_id is not None:
            base = torch.full_like(x, subject.alt_id)
        elif ceiling:
            gen = torch.Generator().manual_seed(CEILING_SEED)
            base = torch.randint(0, max(subject.vocab, 1), x.shape, generator=gen, dtype=x.dtype)
        method = LayerIntegratedGradients(forward, model.get_submodule(subject.embedding))
        attr = method.attribute(x, baselines=base, additional_forward_args=others, n_steps=subject.steps)
        return _reduce(attr, subject, "sum")
    base = torch.zeros_like(x)
    if ceiling:
        gen = torch.Generator().manual_seed(CEILING_SEED)
        base = BASELINE_NOISE * x.std().clamp_min(1e-6) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    attr = IntegratedGradients(forward).attribute(x, baselines=base, additional_forward_args=others, n_steps=subject.steps)
    return _reduce(attr, subject, "sum")


def saliency(model, subject: Subject, ceiling: bool) -> np.ndarray:
    from captum.attr import LayerGradientXActivation, Saliency

    forward, x, others = score(model, subject), subject.caller.tensor, subject.caller.other_tensors
    if subject.caller.kind == "tokens":
        layer = model.get_submodule(subject.embedding)
        noise = _noisy_layer(layer, INPUT_NOISE, CEILING_SEED) if ceiling else contextlib.nullcontext()
        with noise:
            grad = LayerGradientXActivation(forward, layer, multiply_by_inputs=False).attribute(
                x, additional_forward_args=others)
        return _reduce(grad, subject, "norm")
    x = (_noisy(x, INPUT_NOISE, CEILING_SEED) if ceiling else x).detach().clone().requires_grad_(True)
    attr = Saliency(forward).attribute(x, abs=True, additional_forward_args=others)
    return _reduce(attr, subject, "sum")


def grad_cam(model, subject: Subject, ceiling: bool) -> np.ndarray:
    from captum.attr import LayerAttribution, LayerGradCam

    forward, x, others = score(model, subject), subject.caller.tensor, subject.caller.other_tensors
    x = _noisy(x, INPUT_NOISE, CEILING_SEED) if ceiling else x
    cam = LayerGradCam(forward, model.get_submodule(subject.conv)).attribute(
        x, additional_forward_args=others, relu_attributions=True)
    if cam.dim() == 4:
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")
    return cam.detach().float().sum(1)[0].numpy()


def _needs_embedding(subject: Subject) -> str | None:
    if subject.caller.kind == "tokens" and subject.embedding is None:
        return "no nn.Embedding of the original reads the token ids"
    return None


def _needs_conv(subject: Subject) -> str | None:
    if subject.caller.kind != "image":
        return "Grad-CAM explains images"
    if subject.conv is None:
        return "the original has no convolution submodule"
    return None


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable  # (model, subject, ceiling: bool) -> np.ndarray map
    unusable: Callable  # (subject) -> reason it does not apply, or None
    ceiling: str  # what the ceiling rerun changes


METHODS = (
    Method("integrated_gradients", integrated_gradients, _needs_embedding, "a second baseline (seed 1)"),
    Method("saliency", saliency, _needs_embedding, "input noise of 0.05 std (seed 1)"),
    Method("grad_cam", grad_cam, _needs_conv, "input noise of 0.05 std (seed 1)"),
)


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A copy with every parameter redrawn from a normal of that tensor's mean and std (the floor)."""
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in twin.parameters():
            if p.is_floating_point() and p.numel() > 1:
                p.copy_(p.mean() + p.std() * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return twin.eval()


def last_conv(model: torch.nn.Module) -> str | None:
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    return names[-1] if names else None


@torch.no_grad()
def word_embedding(model: torch.nn.Module, caller: Caller) -> tuple[str | None, int]:
    """(name, vocabulary size) of the nn.Embedding that the token input feeds, found by running once."""
    fed: list[tuple[str, int]] = []
    ids = caller.tensor

    def spy(name: str):
        def hook(module, inputs):
            if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].shape == ids.shape and torch.equal(inputs[0], ids):
                fed.append((name, module.num_embeddings))
        return hook

    handles = [m.register_forward_pre_hook(spy(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    try:
        caller.call(model, ids, *caller.other_tensors)
    finally:
        for h in handles:
            h.remove()
    return fed[0] if fed else (None, 0)

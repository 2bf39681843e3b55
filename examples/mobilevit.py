"""MobileViT-S image classifier, from transformers, configured in code.

MobileViTConfig as apple/mobilevit-small's config.json (nothing is downloaded): hidden sizes
144/192/240, neck 16/32/64/96/128/160/640, 4 heads, patch 2, SiLU, 1000 ImageNet classes.
pixel_values f32 [B,3,256,256] in [0, 1] (the image processor only rescales by 1/255 and
flips RGB to BGR; no mean/std) -> logits f32 [B,1000].

Random weights: transformers' own MobileViT initialisation draws BatchNorm scales from
normal(0, 0.02), which shrinks the activations layer after layer until the logits are exactly
zero. Here convolutions get He normal weights (std sqrt(2/fan_in)), linear layers LeCun
normal (std 1/sqrt(fan_in)), BatchNorms unit scale, and the BatchNorm running statistics are
then measured on generated images (as training would have left them), so every block sees
unit-scale activations and the logits spread across classes and images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import MobileViTConfig, MobileViTForImageClassification

from vlc.examples import hf
from vlc.examples import inputs as gen
from vlc.examples.random_init import BIAS_STD, jittered_norms, lecun_linears, seeded
from vlc.examples.registry import Built, meta_parameters
from vlc.model import BATCH, InputSpec
from vlc.signature import TensorSig

NAME = "mobilevit-s"
SEED = 2022
CALIBRATION_BATCH = 8
CALIBRATION_SEED = 12345  # not 0 or 1, which the checks use for their inputs
WEIGHTS_NOTE = ("random (seeded, BatchNorm statistics measured on generated images) unless "
                "--weights names a Hugging Face MobileViT directory (config.json + "
                "model.safetensors or pytorch_model.bin) or a state dict "
                "(.pt/.pth/.bin/.safetensors) with transformers names")

SIZES = {
    "full": dict(image_size=256, hidden_sizes=[144, 192, 240],
                 neck_hidden_sizes=[16, 32, 64, 96, 128, 160, 640]),
    # 64x64 pixels: thin convolutions over 256x256 cost more than the whole transformer part
    "test": dict(image_size=64, hidden_sizes=[16, 24, 32],
                 neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 64]),
}


def config(size: str) -> MobileViTConfig:
    cfg = MobileViTConfig(num_channels=3, patch_size=2, num_attention_heads=4,
                          mlp_ratio=2.0, expand_ratio=4.0, hidden_act="silu", conv_kernel_size=3,
                          output_stride=32, num_labels=1000, **SIZES[size])
    cfg._attn_implementation = "eager"
    return cfg


class MobileViTClassifier(nn.Module):
    """forward(pixel_values) -> logits."""

    def __init__(self, model: MobileViTForImageClassification):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _io(cfg: MobileViTConfig) -> tuple[list[InputSpec], list[TensorSig]]:
    s = cfg.image_size
    shape = (BATCH, cfg.num_channels, s, s)
    pixels = InputSpec("pixel_values", shape, "float32", "uniform", 0.0, 1.0)
    return ([pixels],
            [TensorSig("logits", "float32", (BATCH, cfg.num_labels))])


def interface(size: str) -> tuple[list[InputSpec], list[TensorSig]]:
    return _io(config(size))


def parameters(size: str) -> int:
    return meta_parameters(lambda: MobileViTForImageClassification(config(size)))


def generator(cfg: MobileViTConfig):
    def generate(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {"pixel_values": gen.images(rng, batch, cfg.image_size, cfg.num_channels)}
    return generate


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    lecun_linears(model)
    jittered_norms(model)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.normal_(0.0, BIAS_STD)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, pixel_values: torch.Tensor) -> None:
    """Set every BatchNorm's running mean/var to the statistics of one pass over the images."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch gives exactly its statistics
        m.train()
    model(pixel_values=pixel_values)
    for m in norms:
        m.momentum = 0.1
        m.eval()


def build(size: str, weights: Path | None) -> Built:
    cfg = config(size)
    with seeded(SEED):
        model = MobileViTForImageClassification(cfg)
        init_weights(model)
    if weights is None:
        images = generator(cfg)(CALIBRATION_BATCH, CALIBRATION_SEED)["pixel_values"]
        calibrate_batchnorm(model, torch.from_numpy(images))
        origin = f"random (seed {SEED})"
    else:
        model, origin = hf.load(model, weights, NAME, model_types=("mobilevit",))
    inputs, outputs = _io(model.config)
    return Built(MobileViTClassifier(model).eval(), inputs, outputs, generator(model.config),
                 origin, model.config.to_diff_dict())

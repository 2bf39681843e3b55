"""CLIP ViT-B/32 image and text encoders, from transformers, configured in code.

The configurations copy openai/clip-vit-base-patch32's config.json (nothing is downloaded):
vision 12 layers, hidden 768, 12 heads, patch 32 at 224x224; text 12 layers, hidden 512,
8 heads, 77 positions, vocabulary 49408; both QuickGELU, projected to 512. The text config
keeps that file's legacy `eos_token_id` 2, with which transformers pools the text at the
argmax of the token ids (the end-of-text token 49407 has the largest id), as the released
model does. Attention is transformers' "eager" implementation: it exports to plain
MatMul/Softmax, where "sdpa" adds IsNaN/Where guards.

- clip-vit-b32-image: pixel_values f32 [B,3,224,224] (CLIP-normalised) -> image_embeds f32 [B,512]
- clip-vit-b32-text: input_ids int64 [B,77], attention_mask int64 [B,77] -> text_embeds f32 [B,512]

Random weights: transformers' CLIP initialisation under a fixed seed, then LeCun normal
weights (std 1/sqrt(fan_in)) for every linear layer and small random biases and LayerNorm
parameters (random_init.py says why): with transformers' smaller attention
weights the image embeddings of any two images have cosine similarity ~0.99 at full size,
with these ~0.83, so outputs depend on the image as a trained model's do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

from vlc.examples import hf
from vlc.examples import inputs as gen
from vlc.examples.random_init import jittered_norms, lecun_linears, seeded
from vlc.examples.registry import Built, meta_parameters
from vlc.model import BATCH, InputSpec
from vlc.signature import TensorSig

IMAGE_NAME = "clip-vit-b32-image"
TEXT_NAME = "clip-vit-b32-text"
SEED = 2021
ATTENTION = "eager"
MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIPImageProcessor's image_mean
STD = (0.26862954, 0.26130258, 0.27577711)  # and image_std
FIRST_WORD_ID = 256  # byte-level BPE: ids 0..255 are single bytes
# keys of a full CLIPModel that belong to the other encoder
TEXT_TOWER = ("text_model.", "text_projection.", "logit_scale")
VISION_TOWER = ("vision_model.", "visual_projection.", "logit_scale")
WEIGHTS_NOTE = ("random (seeded, linear layers scaled to unit variance) unless --weights names a "
                "Hugging Face CLIP directory (config.json + model.safetensors or "
                "pytorch_model.bin; a full CLIPModel serves either encoder) or a state dict "
                "(.pt/.pth/.bin/.safetensors) with transformers names")

VISION = {
    "full": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, projection_dim=512),
    "test": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, projection_dim=16),
}
TEXT = {
    "full": dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=8, projection_dim=512),
    "test": dict(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, projection_dim=16),
}


def vision_config(size: str) -> CLIPVisionConfig:
    config = CLIPVisionConfig(image_size=224, patch_size=32, num_channels=3,
                              hidden_act="quick_gelu", layer_norm_eps=1e-5, **VISION[size])
    config._attn_implementation = ATTENTION
    return config


def text_config(size: str) -> CLIPTextConfig:
    config = CLIPTextConfig(max_position_embeddings=77, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                            **TEXT[size])
    config._attn_implementation = ATTENTION
    return config


class ClipImageEncoder(nn.Module):
    """forward(pixel_values) -> image_embeds."""

    def __init__(self, model: CLIPVisionModelWithProjection):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).image_embeds


class ClipTextEncoder(nn.Module):
    """forward(input_ids, attention_mask) -> text_embeds."""

    def __init__(self, model: CLIPTextModelWithProjection):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).text_embeds


# ---------------------------------------------------------------------------------------------
# clip-vit-b32-image


def _image_io(config: CLIPVisionConfig) -> tuple[list[InputSpec], list[TensorSig]]:
    s = config.image_size
    shape = (BATCH, config.num_channels, s, s)
    pixels = InputSpec("pixel_values", shape, "float32", "normal", 0.0, 1.0)
    return ([pixels],
            [TensorSig("image_embeds", "float32", (BATCH, config.projection_dim))])


def image_interface(size: str) -> tuple[list[InputSpec], list[TensorSig]]:
    return _image_io(vision_config(size))


def image_parameters(size: str) -> int:
    return meta_parameters(lambda: CLIPVisionModelWithProjection(vision_config(size)))


def image_generator(config: CLIPVisionConfig):
    def generate(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        pixels = gen.images(rng, batch, config.image_size, config.num_channels)
        return {"pixel_values": gen.normalize(pixels, MEAN, STD)}
    return generate


def image_build(size: str, weights: Path | None) -> Built:
    return _build(IMAGE_NAME, CLIPVisionModelWithProjection, vision_config(size), weights,
                  ClipImageEncoder, _image_io, image_generator, drop=TEXT_TOWER,
                  model_types=("clip", "clip_vision_model"))


# ---------------------------------------------------------------------------------------------
# clip-vit-b32-text


def _text_io(config: CLIPTextConfig) -> tuple[list[InputSpec], list[TensorSig]]:
    n = config.max_position_embeddings
    return ([InputSpec("input_ids", (BATCH, n), "int64", "int", FIRST_WORD_ID, config.vocab_size),
             InputSpec("attention_mask", (BATCH, n), "int64", "int", 0, 2)],
            [TensorSig("text_embeds", "float32", (BATCH, config.projection_dim))])


def text_interface(size: str) -> tuple[list[InputSpec], list[TensorSig]]:
    return _text_io(text_config(size))


def text_parameters(size: str) -> int:
    return meta_parameters(lambda: CLIPTextModelWithProjection(text_config(size)))


def text_generator(config: CLIPTextConfig):
    """Captions as CLIPTokenizer gives them: <|startoftext|> words <|endoftext|>, padded with
    <|endoftext|> (its pad token) under a 0 mask. Start and end are the two highest ids."""
    start, end = config.vocab_size - 2, config.vocab_size - 1

    def generate(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        ids, mask = gen.sentences(rng, batch, config.max_position_embeddings, start_id=start,
                                  end_id=end, pad_id=end, word_low=FIRST_WORD_ID, word_high=start,
                                  min_words=3, max_words=25)
        return {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
    return generate


def text_build(size: str, weights: Path | None) -> Built:
    return _build(TEXT_NAME, CLIPTextModelWithProjection, text_config(size), weights,
                  ClipTextEncoder, _text_io, text_generator, drop=VISION_TOWER,
                  model_types=("clip", "clip_text_model"))


# ---------------------------------------------------------------------------------------------


def _build(name: str, model_class: Any, config: Any, weights: Path | None, wrapper: Any,
           io: Callable[[Any], tuple[list[InputSpec], list[TensorSig]]],
           generator: Callable[[Any], Any], drop: tuple[str, ...],
           model_types: tuple[str, ...]) -> Built:
    """Seeded random weights or the given ones; I/O and inputs follow the model's config."""
    with seeded(SEED):
        model = model_class(config)
        lecun_linears(model)
        jittered_norms(model)
    origin = f"random (seed {SEED})"
    if weights is not None:
        model, origin = hf.load(model, weights, name, model_types=model_types, drop=drop)
    inputs, outputs = io(model.config)
    return Built(wrapper(model).eval(), inputs, outputs, generator(model.config), origin,
                 model.config.to_diff_dict())

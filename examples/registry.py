"""The example registry: names, sizes, and turning an example into a ModelSource.

Each example lives in its own module (vilbert.py, clip.py, mobilevit.py), imported only when
the example is loaded or described, so listing names costs no torch import. A module provides,
for its example's `prefix`:
- `{prefix}interface(size) -> (list[InputSpec], list[TensorSig])`: the I/O, without a model;
- `{prefix}build(size, weights) -> Built`: the model in eval mode with its inputs and generator;
- `{prefix}parameters(size) -> int`: the parameter count, from a model built on the meta device;
and a module-level WEIGHTS_NOTE saying which weight files it reads and how names are mapped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from vlc.errors import InputError
from vlc.model import InputSpec, ModelSource
from vlc.signature import TensorSig

SIZES = ("full", "test")
# Test-size models are for checks, not for the published sweeps.
TEST_BATCH_SIZES = (1, 4)
REFERENCE_DOC = "shared/reference/workloads.md"


@dataclass
class Built:
    """What an example module hands back; the registry makes the ModelSource from it."""

    module: Any
    inputs: list[InputSpec]
    outputs: list[TensorSig]
    generator: Callable[[int, int], dict[str, Any]]
    weights: str  # where the weights came from: "random (seed N)" or the path given
    config: dict[str, Any]  # the model's configuration, for the record


def meta_parameters(make: Callable[[], Any]) -> int:
    """The parameter count of the module `make()` builds, built on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        module = make()
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class Example:
    name: str
    module: str  # the implementing module under vlc.examples
    prefix: str  # its functions are {prefix}interface, {prefix}build, {prefix}parameters
    summary: str
    reference: str  # the published workload it stands for
    batch_sizes: tuple[int, ...]  # the default sweep, as in the published figures

    def code(self) -> ModuleType:
        return importlib.import_module(f"vlc.examples.{self.module}")

    def impl(self, what: str) -> Callable[..., Any]:
        return getattr(self.code(), f"{self.prefix}{what}")

    def sweep(self, size: str) -> tuple[int, ...]:
        return self.batch_sizes if size == "full" else TEST_BATCH_SIZES


EXAMPLES: dict[str, Example] = {e.name: e for e in (
    Example("vilbert-vqa", "vilbert", "",
            "ViLBERT (allennlp VqaVilbert): BERT-base text stream, 100-region image stream, "
            "6 co-attention layers, VQA classifier over 10026 answers",
            "ViLBERT VQA on Ascend 310/310P (ModelZoo guide) and RefCOCO+ on A10 TensorRT 8.4",
            (8, 16, 32, 64, 128, 256)),
    Example("clip-vit-b32-image", "clip", "image_",
            "CLIP ViT-B/32 image encoder (transformers CLIPVisionModelWithProjection), "
            "224x224 pixels to a 512-d embedding",
            "CLIP ViT-B/32 image encoder on A10, TensorRT 8.4 (fp32/tf32/fp16)",
            (64, 768, 1024)),
    Example("clip-vit-b32-text", "clip", "text_",
            "CLIP ViT-B/32 text encoder (transformers CLIPTextModelWithProjection), "
            "77 tokens to a 512-d embedding",
            "CLIP ViT-B/32 text encoder (77 tokens) from the same write-up; no figures published",
            (64, 256, 1024)),
    Example("mobilevit-s", "mobilevit", "",
            "MobileViT-S (transformers MobileViTForImageClassification), 256x256 pixels to "
            "1000 ImageNet logits",
            "MobileViT-S on A10, TensorRT 8.4, batch 1 (profile min 1 / opt 16 / max 32)",
            (1, 16, 32)),
)}


def names() -> list[str]:
    return list(EXAMPLES)


def get(name: str) -> Example:
    example = EXAMPLES.get(name)
    if example is None:
        raise InputError(f"unknown example '{name}'", fix=f"use one of: {', '.join(EXAMPLES)}")
    return example


def check_size(size: str, name: str) -> str:
    if size not in SIZES:
        raise InputError(f"unknown size '{size}'", where=name,
                         fix=f"use one of: {', '.join(SIZES)} (as {name} or {name}@test)")
    return size


def load(name: str, *, size: str = "full", weights: str | Path | None = None) -> ModelSource:
    example = get(name)
    check_size(size, name)
    built: Built = example.impl("build")(size, None if weights is None else Path(weights))
    metadata = {"example": name, "size": size, "reference": example.reference,
                "weights": built.weights, "config": built.config,
                "parameters": sum(p.numel() for p in built.module.parameters())}
    ref = name if size == "full" else f"{name}@{size}"
    # the size is part of the model's identity: records, artifacts and reports keep the sizes apart
    return ModelSource(name=ref, ref=ref,
                       module=built.module.eval(), inputs=built.inputs,
                       output_names=[o.name for o in built.outputs],
                       batch_sizes=example.sweep(size), generator=built.generator,
                       metadata=metadata)


def describe(name: str, size: str = "full") -> dict[str, Any]:
    example = get(name)
    check_size(size, name)
    inputs, outputs = example.impl("interface")(size)
    return {
        "name": name,
        "size": size,
        "summary": example.summary,
        "inputs": [spec.to_json() for spec in inputs],
        "outputs": [sig.to_json() for sig in outputs],
        "batch_sizes": list(example.sweep(size)),
        "parameters": example.impl("parameters")(size),
        "reference": {"workload": example.reference, "figures": REFERENCE_DOC},
        "weights": example.code().WEIGHTS_NOTE,
    }

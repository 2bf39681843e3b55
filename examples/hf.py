"""Real weights for the Hugging Face examples (CLIP, MobileViT), from local paths only.

A Hugging Face directory is loaded with `from_pretrained(local_files_only=True)` in float32
with eager attention, and refused when any weight the model needs is missing from it or has
another shape (Hugging Face would otherwise fill those in randomly and only warn). A plain
state dict is loaded strictly into the Hugging Face model: keys may carry the example
wrapper's `model.` prefix (a state dict saved from a vlc ModelSource), keys of the other
CLIP tower are dropped (so a full CLIPModel state dict serves either encoder), and legacy
`position_ids` buffers are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlc.errors import InputError
from vlc.examples import weights as wts

WRAPPER_PREFIX = "model."
FIX = "pass a Hugging Face directory of this architecture"


def load(model: Any, weights: Path, example: str, *, model_types: tuple[str, ...],
         drop: tuple[str, ...] = ()) -> tuple[Any, str]:
    """The model with the given weights (a new one for a directory) and where they came from.

    `model_types`: the config.json `model_type`s a directory may have for this model.
    """
    path = wts.resolve(weights, example)
    if wts.is_hf_dir(path):
        return from_pretrained(type(model), path, example, model_types), str(path)

    def rename(name: str) -> str | None:
        if name.startswith(WRAPPER_PREFIX):
            name = name[len(WRAPPER_PREFIX):]
        if name.startswith(drop) or name.endswith("position_ids"):
            return None
        return name

    wts.load_into(model, wts.read_state_dict(path, example), source=path, example=example,
                  rename=rename)
    return model, str(path)


def from_pretrained(cls: Any, path: Path, example: str, model_types: tuple[str, ...]) -> Any:
    import torch
    from transformers.utils import logging as hf_logging

    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"cannot read {path / 'config.json'}: {wts.reason(exc)}", where=example,
                         fix=FIX) from None
    if model_type not in model_types:
        raise InputError(f"{path} holds a '{model_type}' model, not {' or '.join(model_types)}",
                         where=example, fix=FIX)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the other CLIP tower as unexpected
    try:
        model, info = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32,
                                          attn_implementation="eager", output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, ...
        raise InputError(f"cannot load a {cls.__name__} from {path}: {wts.reason(exc)}",
                         where=example, fix=FIX) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    absent = list(info.get("missing_keys", ())) + [str(k[0]) if isinstance(k, tuple) else str(k)
                                                   for k in info.get("mismatched_keys", ())]
    if absent:
        shown = ", ".join(absent[:wts.SHOWN])
        raise InputError(f"{path} lacks {len(absent)} weights a {cls.__name__} needs "
                         f"(missing or of another shape): {shown}", where=example,
                         fix=FIX)
    return model

"""Inputs for a compiled artifact: read from files, or generated for a batch by the model's own
generator when the artifact's source is a PyTorch model the front end can load (token ids in
range, masks that keep a token), else from the input specs kept in its manifest."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from vlc import examples
from vlc.errors import InputError
from vlc.frontend.loader import load_model
from vlc.inputs import InputGenerator, check_batch, default_batch, generate_inputs, load_inputs
from vlc.model import ModelSource

_log = logging.getLogger("vlc.inputs")


@cache
def source_generator(ref: str | None) -> InputGenerator | None:
    """The model's own input generator when `ref` names a PyTorch model (an example, file.py:factory
    or package.module:factory): the same inputs the build checked its precision on (token ids in
    range, masks that keep a token), so `vlc run`/`compare` judge an artifact on the same data."""
    if not ref or ref.lower().endswith(".onnx"):
        return None
    if ":" not in ref and ref.partition("@")[0] not in examples.names():
        return None
    try:
        source = load_model(ref)
    except InputError as exc:  # e.g. an artifact copied to a machine without the model's file
        _log.warning("inputs from the artifact's input specs: its model %s cannot be loaded here (%s)",
                     ref, exc.line())
        return None
    return source.generate_inputs if isinstance(source, ModelSource) else None


def artifact_inputs(artifact: Any, *, files: Sequence[str | Path] | None = None, batch: int | None = None,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for an artifact: read from `files`, or generated for `batch` (checked first)."""
    if files:
        _log.info("inputs from %s", ", ".join(map(str, files)))
        return load_inputs(files, artifact.signature)
    batch = default_batch(artifact) if batch is None else batch
    check_batch(artifact, batch)
    source = artifact.manifest.source
    specs = list(source.input_specs)
    generator = source_generator(source.ref)
    _log.info("inputs generated for batch %d, seed %d, %s", batch, seed,
              "by the model's own generator" if generator else
              "from its input specs" if specs else "from the signature")
    return generate_inputs(specs, artifact.signature, batch, seed, generator=generator)

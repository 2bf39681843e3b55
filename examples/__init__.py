"""The reference workloads as ready-made model sources.

`vilbert-vqa`, `clip-vit-b32-image`, `clip-vit-b32-text` and `mobilevit-s` stand for the
three models of the published deployment write-ups (shared/reference/workloads.md). Each
comes in a full size (the published architecture) and a test size (a few tiny layers for
checks), is randomly initialised with a fixed seed unless real weights are given from
a local path, and generates realistic inputs for any batch size.

The front end resolves the model refs `name` and `name@test` through `load`.
"""

from __future__ import annotations

from vlc.examples.registry import SIZES, describe, load, names

__all__ = ["SIZES", "describe", "load", "names"]

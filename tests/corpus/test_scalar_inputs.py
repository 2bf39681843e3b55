"""Scalar (rank-0) inputs: generated as arrays, so checks that run ONNX Runtime accept them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

from vlc.model import InputSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "corpus"))

import corpus_handmade


def test_scalar_specs_generate_arrays():
    rng = np.random.default_rng(0)
    for spec in (InputSpec("scale", (), "float32"), InputSpec("flag", (), "bool", "bool"),
                 InputSpec("offset", (), "int32", "int", 0, 5),
                 InputSpec("u", (), "float32", "uniform", -1, 1)):
        value = spec.generate(1, rng)
        assert isinstance(value, np.ndarray) and value.shape == () and value.dtype == spec.dtype


def test_scalar_input_model_builds_trt_fp16(tmp_path, vlc_cli):
    """The fp16 build's precision check runs ONNX Runtime on generated inputs, scalars among them."""
    src = tmp_path / "scalars.onnx"
    onnx.save(corpus_handmade.int32_scalar_inputs(), str(src))
    code, out, err = vlc_cli("compile", str(src), "--target", "trt-rtx", "--preset", "a10",
                             "--precision", "fp16", "--batch", "1,2,4", "-o", str(tmp_path / "trt"))
    assert code == 0, out + err

"""The reference workloads at test size, through the front end, built as TensorRT-RTX engines on
the CPU (fp16 and int8 graphs checked against fp32 in ONNX Runtime by the precision pass)."""

from __future__ import annotations

import importlib.util

import pytest

from vlc.plugin_manager import get_target
from vlc.spec import Precision, TargetSpec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                                reason="tensorrt_rtx is not installed (pip install tensorrt-rtx-cu13)")

CASES = [("clip-vit-b32-image", "fp16"), ("clip-vit-b32-image", "int8"),
         ("clip-vit-b32-text", "fp16"), ("clip-vit-b32-text", "int8"),
         ("vilbert-vqa", "fp16"), ("vilbert-vqa", "int8"),
         ("mobilevit-s", "fp16")]
# mobilevit-s int8 is left out: with generated calibration (8 batches of 1) its logits reach
# cosine 0.955 < 0.98 against fp32 and the build fails its accuracy gate, as it should.


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from vlc.frontend.pipeline import FrontendOptions, prepare

    cache = tmp_path_factory.mktemp("examples-cache")
    options = FrontendOptions(exporter="torchscript")
    return {name: prepare(f"{name}@test", cache_dir=cache, options=options) for name in {c[0] for c in CASES}}


@pytest.mark.parametrize("name, precision", CASES)
def test_example_builds(sources, tmp_path, name, precision):
    artifact = get_target("trt-rtx").compile(sources[name], TargetSpec("trt-rtx", Precision(precision)),
                                             tmp_path / "artifact")
    assert artifact.file("main").stat().st_size > 0
    report = artifact.manifest["extra"]["precision"]
    assert report["passed"], report["accuracy"]
    assert artifact.manifest["extra"]["trt"]["compute_capabilities"] == ["8.6"]

"""The onnxruntime target's GPU path: its pass set and fp16 islands (checked on the CPU here) and
IOBinding/CUDA-graph sessions (on a CUDA machine with onnxruntime-gpu)."""

from __future__ import annotations

import onnx
import pytest

from tests.conftest import model_ref
from vlc.accuracy import compare_outputs, default_tolerance
from vlc.artifact import Artifact
from vlc.frontend.pipeline import prepare
from vlc.plugin_manager import get_target
from vlc.spec import Precision, TargetSpec
from vlc.timing import ProfileSettings


def typed(given: dict | None = None) -> dict:
    """The target's typed options, as its helpers take them (OnnxRuntimeTarget.parse_options)."""
    from vlc.targets.onnxruntime.target import OnnxRuntimeTarget

    return OnnxRuntimeTarget().parse_options(given or {})


def _contrib_ops(artifact: Artifact) -> set[str]:
    model = onnx.load(str(artifact.file("main")), load_external_data=False)
    return {n.op_type for n in model.graph.node if n.domain == "com.microsoft"}


def test_fusions_rewrite_only_the_artifact_and_keep_numerics(tmp_path):
    source = prepare(model_ref("transformer"))
    target = get_target("onnxruntime")
    fused = target.compile(source, TargetSpec("onnxruntime", options={"fusions": True}), tmp_path / "fused")
    plain = target.compile(source, TargetSpec("onnxruntime"), tmp_path / "plain")
    assert "SkipLayerNormalization" in _contrib_ops(fused)
    assert fused.manifest["extra"]["fusions"]["skip_layer_normalization"] >= 1
    assert not _contrib_ops(plain)
    # the shared normalized graph is untouched: other targets never see contrib operators
    shared = onnx.load(str(source.onnx_path), load_external_data=False)
    assert all(n.domain == "" for n in shared.graph.node)
    feeds = source.generate_inputs(3, seed=2)
    report = compare_outputs(target.run(fused, feeds), target.run(plain, feeds),
                             default_tolerance(Precision.FP32))
    assert report.passed and min(o.ref_std for o in report.outputs) > 1e-3


def test_overflow_islands_keep_layernorm_and_softmax_in_fp16(tmp_path):
    source = prepare(model_ref("transformer"))
    target = get_target("onnxruntime")

    def fp32_ops(islands: str) -> dict[str, int]:
        artifact = target.compile(source, TargetSpec("onnxruntime", precision=Precision.FP16,
                                                     options={"islands": islands}), tmp_path / islands)
        precision = artifact.manifest["extra"]["precision"]  # the ConversionReport's JSON
        assert precision["precision"] == "fp16" and precision["accuracy"]["passed"]
        return precision["fp32_ops"]

    # the shared set keeps these ops in fp32 islands: the key is real and counts them
    shared = fp32_ops("all")
    assert shared.get("LayerNormalization", 0) >= 1 and shared.get("Softmax", 0) >= 1, shared
    overflow = fp32_ops("overflow")
    assert "LayerNormalization" not in overflow and "Softmax" not in overflow, overflow


def test_islands_choice_per_device():
    from vlc.targets.onnxruntime.gpu_path import CUDA_FP32_OPS, fp32_islands

    assert fp32_islands(typed(), "cuda") == CUDA_FP32_OPS  # overflow is the CUDA default
    assert fp32_islands(typed({"islands": "overflow"}), "cpu") == CUDA_FP32_OPS
    assert fp32_islands(typed(), "cpu") is None and fp32_islands(typed({"islands": "all"}), "cuda") is None
    assert not {"LayerNormalization", "Softmax", "ReduceMean"} & CUDA_FP32_OPS


@pytest.mark.parametrize("option,value", [("fusions", "maybe"), ("islands", "some"), ("cuda_graph", "x"),
                                          ("attention", "fastest"), ("conv_algo", "fastest")])
def test_bad_gpu_options_are_rejected(tmp_path, option, value):
    source = prepare(model_ref("mlp"))
    from vlc.errors import InputError

    with pytest.raises(InputError, match=option):
        get_target("onnxruntime").compile(source, TargetSpec("onnxruntime", options={option: value}),
                                          tmp_path / "a")
    assert not (tmp_path / "a").exists()


def _cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(not _cuda_provider(), reason="needs onnxruntime-gpu with a CUDA device")
@pytest.mark.parametrize("cuda_graph", [True, False])
def test_cuda_iobinding_and_graphs(tmp_path, cuda_graph):
    source = prepare(model_ref("transformer"))
    target = get_target("onnxruntime")
    spec = TargetSpec("onnxruntime", precision=Precision.FP16, device="cuda",
                      options={"cuda_graph": cuda_graph})
    artifact = target.compile(source, spec, tmp_path / "a")
    for batch in (2, 5):  # a new shape gets its own captured graph
        feeds = source.generate_inputs(batch, seed=batch)
        report = compare_outputs(target.run(artifact, feeds), target.run(
            target.compile(source, TargetSpec("onnxruntime"), tmp_path / "cpu"), feeds),
            default_tolerance(Precision.FP16))
        assert report.passed
        result = target.profile(artifact, feeds, ProfileSettings(warmup=3, iterations=10))
        assert set(result.breakdown) == {"end_to_end", "compute"}
        assert result.breakdown["compute"].median <= result.breakdown["end_to_end"].median * 1.5


def test_per_operator_profile_accounts_for_the_graph(tmp_path):
    source = prepare(model_ref("transformer"))
    target = get_target("onnxruntime")
    artifact = target.compile(source, TargetSpec("onnxruntime"), tmp_path / "a")
    result = target.profile(artifact, source.generate_inputs(4), ProfileSettings(warmup=1, iterations=3,
                                                                                 per_layer=True))
    ops = {o["op"]: o for o in result.extra["per_operator"]["operators"]}
    # the nodes ONNX Runtime executes are those of its optimized graph, saved in the artifact
    graph = onnx.load(str(artifact.file("optimized")), load_external_data=False).graph
    assert ops["MatMul"]["nodes"] == sum(n.op_type == "MatMul" for n in graph.node)
    assert abs(sum(o["share"] for o in ops.values()) - 1.0) < 1e-6
    assert all(o["ms_per_run"] > 0 for o in ops.values())

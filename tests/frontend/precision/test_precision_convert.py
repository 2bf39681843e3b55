"""Precision conversion checked numerically in ONNX Runtime against the fp32 graph.

int8 tolerance (documented): on these tiny models calibrated with representative, non-constant
data (8 batches from the input generator, other seeds than the check's), cosine >= 0.99 against
fp32; vlc's default int8 gate (vlc.accuracy) is 0.98.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny_models as tm

from vlc.accuracy import Tolerance
from vlc.errors import AccuracyError, InputError
from vlc.frontend.precision import CalibrationData, convert
from vlc.frontend.precision.check import run_onnx
from vlc.frontend.precision.lowp import FP16_MAX
from vlc.signature import onnx_signature

INT8_MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("precision-graphs")
    out = {name: tm.export(name, root / f"{name}.onnx") for name in tm.MODELS}
    out["transformer-native-ln"] = tm.export("transformer", root / "transformer-native-ln.onnx",
                                             decomposed_layernorm=False)
    return out


def _kind(name: str) -> str:
    return name.split("-")[0]


def _calibration(name: str) -> CalibrationData:
    return CalibrationData([tm.generate(_kind(name), 4, seed=100 + i) for i in range(8)], "test generator")


def _types(path: Path) -> dict[str, int]:
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    return {vi.name: vi.type.tensor_type.elem_type for vi in
            list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer", "transformer-native-ln"])
def test_fp16_matches_fp32(graphs, tmp_path, name):
    report = convert(graphs[name], "fp16", tmp_path / "m.onnx", check_feeds=tm.generate(_kind(name), 4, seed=7))
    assert report.passed, report.summary()
    assert min(o.cosine for o in report.accuracy.outputs) >= 0.999
    assert report.nodes_low_precision > 0
    # graph I/O stays fp32
    sig = onnx_signature(tmp_path / "m.onnx")
    assert {t.dtype for t in sig.inputs + sig.outputs} == {"float32"}
    json.dumps(report.to_json())


def test_fp16_transformer_islands_and_mask_constants(graphs, tmp_path):
    out = tmp_path / "t.onnx"
    report = convert(graphs["transformer"], "fp16", out, check_feeds=tm.generate("transformer", 4, seed=3))
    assert report.layernorm_islands == 1
    assert report.constants_clamped >= 1  # the -3.4e38 mask fill
    assert {"Softmax", "ReduceMean", "Pow", "Sqrt", "Div", "LayerNormalization"} <= set(report.fp32_ops)
    model = onnx.load(str(out))
    types = _types(out)
    for node in model.graph.node:  # the decomposed LayerNorm computes in fp32
        if node.op_type in ("Sqrt", "Pow", "Softmax", "ReduceMean"):
            assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
        if node.op_type == "MatMul":
            assert types[node.output[0]] == onnx.TensorProto.FLOAT16, node.name
    for init in model.graph.initializer:
        values = onnx.numpy_helper.to_array(init)
        if values.dtype == np.float16:
            assert np.isfinite(values).all() and np.abs(values).max() <= FP16_MAX, init.name
    outputs = run_onnx(out, tm.generate("transformer", 2, seed=5))
    assert all(np.isfinite(v).all() for v in outputs.values())


def test_bf16_transformer_checked_by_emulation(graphs, tmp_path):
    report = convert(graphs["transformer"], "bf16", tmp_path / "t.onnx",
                     check_feeds=tm.generate("transformer", 4, seed=3))
    assert report.passed, report.summary()
    assert "emulated" in report.check
    assert report.constants_clamped >= 1  # float32's minimum overflows bf16 too


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_int8_qdq_with_representative_calibration(graphs, tmp_path, name):
    report = convert(graphs[name], "int8", tmp_path / "q.onnx", calibration=_calibration(name),
                     check_feeds=tm.generate(name, 4, seed=7))
    assert report.passed, report.summary()
    assert min(o.cosine for o in report.accuracy.outputs) >= INT8_MIN_COSINE
    assert report.qdq_nodes > 0 and report.nodes_low_precision > 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert report.calibration["feeds"] == 8


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_int8_other_calibration_methods(graphs, tmp_path, method):
    report = convert(graphs["cnn"], "int8", tmp_path / "q.onnx", calibration=_calibration("cnn"),
                     method=method, check_feeds=tm.generate("cnn", 4, seed=7))
    assert report.method == method and report.passed, report.summary()


def test_constant_calibration_is_refused(graphs, tmp_path):
    ones = CalibrationData([{"image": np.ones((2, 3, 16, 16), np.float32)} for _ in range(4)], "all ones")
    with pytest.raises(InputError, match="calibration input 'image' is constant"):
        convert(graphs["cnn"], "int8", tmp_path / "q.onnx", calibration=ones)


def test_constant_mask_beside_varying_data_is_accepted(graphs, tmp_path):
    feeds = [tm.generate("transformer", 2, seed=i) for i in range(4)]
    for feed in feeds:
        feed["mask"][:] = 1.0  # no padding anywhere: legitimate
    report = convert(graphs["transformer"], "int8", tmp_path / "q.onnx",
                     calibration=CalibrationData(feeds, "no padding"),
                     check_feeds=tm.generate("transformer", 4, seed=7))
    assert report.calibration["feeds"] == 4


def test_calibration_from_directory(graphs, tmp_path):
    npz = tmp_path / "npz"
    npz.mkdir()
    for i in range(3):
        np.savez(npz / f"{i}.npz", **tm.generate("cnn", 2, seed=20 + i))
    data = CalibrationData.from_dir(npz)
    assert len(data) == 3 and data.samples == 6
    npy = tmp_path / "npy"
    npy.mkdir()
    for i in range(3):
        np.save(npy / f"{i}.npy", tm.generate("cnn", 2, seed=20 + i)["image"])
    report = convert(graphs["cnn"], "int8", tmp_path / "q.onnx", calibration=CalibrationData.from_dir(npy),
                     check_feeds=tm.generate("cnn", 4, seed=7))
    assert report.passed and "npy" in report.calibration["source"]
    # .npy files cannot name the inputs of a multi-input model
    with pytest.raises(InputError, match="single-input"):
        convert(graphs["transformer"], "int8", tmp_path / "t.onnx", calibration=CalibrationData.from_dir(npy))


def test_calibration_directory_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        CalibrationData.from_dir(tmp_path / "missing")
    with pytest.raises(InputError, match="no .npz or .npy"):
        CalibrationData.from_dir(tmp_path)


def test_int8_needs_calibration_or_specs(graphs, tmp_path):
    with pytest.raises(InputError, match="int8 needs calibration data"):
        convert(graphs["mlp"], "int8", tmp_path / "q.onnx")
    report = convert(graphs["mlp"], "int8", tmp_path / "q.onnx", input_specs=tm.input_specs("mlp"))
    assert "generated from input specs" in report.calibration["source"]


def test_unknown_method_is_an_error(graphs, tmp_path):
    with pytest.raises(InputError, match="unknown calibration method"):
        convert(graphs["mlp"], "int8", tmp_path / "q.onnx", calibration=_calibration("mlp"), method="kl")


def test_strict_conversion_raises_with_the_report(graphs, tmp_path):
    impossible = Tolerance(min_cosine=1.0 + 1e-9, atol=None, rtol=None)
    with pytest.raises(AccuracyError) as info:
        convert(graphs["mlp"], "fp16", tmp_path / "m.onnx", tolerance=impossible)
    assert info.value.report.accuracy is not None and not info.value.report.passed
    report = convert(graphs["mlp"], "fp16", tmp_path / "m.onnx", tolerance=impossible, strict=False)
    assert not report.passed


def test_fp32_is_an_unchanged_copy(graphs, tmp_path):
    report = convert(graphs["mlp"], "fp32", tmp_path / "m.onnx")
    assert report.unchanged and report.passed
    assert onnx.load(str(tmp_path / "m.onnx")).graph == onnx.load(str(graphs["mlp"])).graph


def test_refuses_to_overwrite_its_source(graphs):
    with pytest.raises(InputError, match="overwrite"):
        convert(graphs["mlp"], "fp16", graphs["mlp"])


def test_int8_check_runs_the_qdq_definition_not_fused_cpu_kernels(graphs, tmp_path):
    """The int8 check must not depend on the CPU: ONNX Runtime's fused u8s8 kernels saturate on
    AVX2 machines without VNNI, so the check runs DequantizeLinear -> fp32 op -> QuantizeLinear."""
    import onnxruntime as ort

    from vlc.frontend.precision.check import check_options

    convert(graphs["mlp"], "int8", tmp_path / "q.onnx", calibration=_calibration("mlp"),
            check_feeds=tm.generate("mlp", 4, seed=7))
    options = check_options(tmp_path / "q.onnx")
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert {"DequantizeLinear", "Gemm"} <= ops
    assert not ops & {"QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul", "QGemm"}, ops

"""int8=auto (accuracy-driven int8), vlc's range calibration and dataset scripts, down to the CLI.

The model is tests/debug/outlier_cnn.py: a CNN whose conv2 cannot be quantized (a weight outlier
per output channel rounds the channel's other weights to zero), so every-node int8 misses the
0.98 gate and the plan must keep exactly that node in float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.debug.outlier_cnn import HARD, SPECS, export, feeds
from vlc.artifact import Artifact
from vlc.errors import AccuracyError, InputError
from vlc.frontend.precision import CalibrationData, Int8Settings, convert
from vlc.frontend.precision.calibration import calibrate_ranges, mse_range
from vlc.frontend.precision.quantize import quantized_nodes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notice
MODEL_FILE = Path(__file__).resolve().parents[2] / "debug" / "outlier_cnn.py"
AUTO = Int8Settings(mode="auto", activations="uint8", reduce_range=True)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("int8-auto") / "cnn.onnx"
    export(path)
    return path


def test_auto_keeps_only_the_hard_layer_in_float_and_passes_its_gate(cnn, tmp_path):
    out = tmp_path / "cnn.int8.onnx"
    report = convert(cnn, "int8", out, input_specs=SPECS, check_feeds=feeds(), method="mse", int8=AUTO)
    assert report.passed and report.accuracy.outputs[0].cosine >= 0.98
    data = report.to_json()["int8"]
    assert data["mode"] == "auto" and data["excluded"] == [HARD]
    assert data["plan"]["all_int8_cosine"] < 0.98 <= data["plan"]["cosine"]
    # the plan aims a quarter of the tolerance inside the gate, for inputs it never saw
    assert data["plan"]["min_cosine"] == pytest.approx(1 - 0.02 * 0.75) and data["plan"]["cosine"] >= 0.985
    assert 0.3 < data["mac_share"] < 0.9 and data["int8_macs"] == pytest.approx(data["mac_share"] * data["total_macs"])
    assert data["activations"] == "uint8" and data["reduce_range"] is True
    graph = onnx.load(str(out))
    assert HARD not in quantized_nodes(graph) and set(quantized_nodes(graph)) == {"/conv1/Conv", "/conv3/Conv",
                                                                                 "/head/Gemm"}
    table = data["calibration_table"]
    assert "image" in table and all(k in table["image"] for k in ("scale", "zero_point", "range", "observed",
                                                                   "chosen"))
    lo, hi = table["image"]["range"]
    assert table["image"]["type"] == "uint8" and lo < 0 < hi
    assert "% of Conv/MatMul/Gemm MACs in int8, 1 of 4 nodes kept in float" in report.summary()


def test_every_node_in_int8_misses_the_gate(cnn, tmp_path):
    with pytest.raises(AccuracyError) as caught:
        convert(cnn, "int8", tmp_path / "all.onnx", input_specs=SPECS, check_feeds=feeds(), method="mse",
                int8=Int8Settings(mode="all", activations="uint8", reduce_range=True))
    data = caught.value.report.int8
    assert data["mode"] == "all" and data["excluded"] == [] and data["mac_share"] == pytest.approx(1.0)


def test_a_plan_under_the_least_share_is_not_applied(cnn, tmp_path):
    settings = Int8Settings(mode="auto", activations="uint8", reduce_range=True, min_share=0.95)
    report = convert(cnn, "int8", tmp_path / "share.onnx", input_specs=SPECS, check_feeds=feeds(), method="mse",
                     int8=settings, strict=False)
    assert not report.passed and report.int8["excluded"] == [] and report.int8["mac_share"] == pytest.approx(1.0)
    assert "under int8_min_share 95%" in report.int8["note"] and report.int8["plan"]["excluded"] == [HARD]
    assert any("int8=auto: not applied" in w for w in report.warnings)


def _quantized_error(x: np.ndarray, lo: float, hi: float) -> float:
    """Squared error of uint8 quantization of x over [lo, hi] (ONNX Runtime's arithmetic)."""
    scale = (hi - lo) / 255
    zero = np.round(-lo / scale)
    return float((((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale - x) ** 2).sum())


def test_mse_ranges_beat_minmax_on_a_long_tail_and_keep_a_uniform_span():
    rng = np.random.default_rng(0)
    tail = rng.laplace(0, 1, 200_000)  # max about 12: 8-bit's least-error clip is near 10
    hist, _ = np.histogram(tail, bins=4096, range=(tail.min(), tail.max()))
    lo, hi = mse_range(float(tail.min()), float(tail.max()), hist, 255, symmetric=False)
    assert tail.min() < lo < 0 < hi < 0.95 * tail.max()
    assert _quantized_error(tail, lo, hi) < 0.9 * _quantized_error(tail, float(tail.min()), float(tail.max()))
    flat = rng.uniform(-1, 3, 100_000)
    hist, _ = np.histogram(flat, bins=4096, range=(flat.min(), flat.max()))
    lo, hi = mse_range(float(flat.min()), float(flat.max()), hist, 255, symmetric=False)
    assert lo == pytest.approx(-1, abs=0.02) and hi == pytest.approx(3, abs=0.05)
    lo, hi = mse_range(float(flat.min()), float(flat.max()), hist, 254, symmetric=True)
    assert lo == -hi and hi == pytest.approx(3, abs=0.05)


def test_calibrate_ranges_observes_the_tensors_and_measured_error_is_lower(cnn, tmp_path):
    """The mse table holds what the data showed and a range inside it; the graph built on it is
    closer to fp32 than one on ONNX Runtime's minmax ranges (the activations have long tails)."""
    model = onnx.load(str(cnn))
    calibration = CalibrationData.generate(SPECS, batches=4)
    table = calibrate_ranges(model, ["image", "/conv1/Conv_output_0"], calibration.feeds)
    image = table.ranges["image"]
    everything = np.concatenate([f["image"].ravel() for f in calibration.feeds])
    assert image.observed == pytest.approx((everything.min(), everything.max()))
    assert image.observed[0] <= image.chosen[0] < 0 < image.chosen[1] <= image.observed[1]
    assert "/conv1/Conv_output_0" in table.ranges


def test_a_dataset_script_gives_the_calibration(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text("import numpy as np\n"
                      "def load_data():\n"
                      "    rng = np.random.default_rng(3)\n"
                      "    for _ in range(3):\n"
                      "        yield {'image': rng.standard_normal((2, 3, 16, 16)).astype(np.float32)}\n"
                      "def other():\n"
                      "    return [{'image': np.ones((1, 3, 16, 16), np.float32) * k} for k in range(2)]\n")
    data = CalibrationData.from_option(str(script))
    assert len(data) == 3 and data.samples == 6 and "load_data" in data.source
    assert len(CalibrationData.from_option(f"{script}:other")) == 2
    with pytest.raises(InputError, match="has no function missing"):
        CalibrationData.from_script(f"{script}:missing")
    with pytest.raises(InputError, match="does not exist"):
        CalibrationData.from_option(tmp_path / "nowhere.py")
    (tmp_path / "broken.py").write_text("def load_data():\n    raise RuntimeError('no data here')\n    yield {}\n")
    with pytest.raises(InputError, match="RuntimeError: no data here"):
        CalibrationData.from_script(tmp_path / "broken.py")


def test_cli_builds_int8_auto_and_records_it(tmp_path, vlc_cli):
    """vlc compile's default int8 build on the onnxruntime target: the plan, the table, the MAC
    share in the summary line, and what ONNX Runtime runs in int8 kernels here."""
    script = tmp_path / "loader.py"
    script.write_text("from tests.debug.outlier_cnn import feeds\n"
                      "def load_data():\n"
                      "    return [feeds(2, 100 + k) for k in range(6)]\n")
    code, out, err = vlc_cli("compile", f"{MODEL_FILE}:factory", "-t", "onnxruntime", "-p", "int8",
                             "-O", f"calibration={script}", "-o", tmp_path / "art", "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert "% of Conv/MatMul/Gemm MACs in int8, 1 of 4 nodes kept in float" in out, out
    precision = Artifact.load(tmp_path / "art").manifest["extra"]["precision"]
    int8 = precision["int8"]
    convs = [n.name for n in onnx.load(str(tmp_path / "art" / "model.onnx")).graph.node if n.op_type == "Conv"]
    assert len(convs) == 3 and precision["passed"] and int8["mode"] == "auto"
    assert int8["excluded"] == [convs[1]] == [int8["plan"]["sensitivities"][0]["node"]]  # conv2, alone
    assert precision["calibration"]["method"] == "mse" and "script" in precision["calibration"]["source"]
    assert int8["calibration_table"] and int8["plan"]["all_int8_cosine"] < 0.98
    kernels = int8["runtime"]["kernels"]
    assert 0 < kernels["mac_share"] <= int8["mac_share"] + 1e-9, kernels
    assert "session_check" in int8["runtime"]
    # the artifact runs as built
    code, out, err = vlc_cli("compare", tmp_path / "art", "--reference", "onnx")
    assert code == 0, out + err

    code, _, err = vlc_cli("compile", f"{MODEL_FILE}:factory", "-t", "onnxruntime", "-p", "int8", "-O", "int8=all",
                           "-o", tmp_path / "all", "--cache-dir", tmp_path / "cache")
    assert code != 0 and "int8 graph misses its tolerance" in err and len(err.strip().splitlines()) == 1
    code, _, err = vlc_cli("compile", f"{MODEL_FILE}:factory", "-t", "onnxruntime", "-p", "int8", "-O", "int8=some",
                           "-o", tmp_path / "bad", "--cache-dir", tmp_path / "cache")
    assert code == 2 and "int8=some is not one of auto, all" in err

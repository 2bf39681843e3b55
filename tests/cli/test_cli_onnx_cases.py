"""compile / run / compare on ONNX's own backend test cases, against their stored outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.cli.onnx_cases import CASES, write_cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("onnx-node-cases"))


def _pb(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


@pytest.mark.parametrize("name", CASES)
def test_onnxruntime_matches_the_stored_outputs(vlc_cli, tmp_path, monkeypatch, cases, name):
    monkeypatch.chdir(tmp_path)
    folder = cases[name]
    data = folder / "test_data_set_0"
    inputs = [str(p) for p in sorted(data.glob("input_*.pb"))]
    outputs = sorted(data.glob("output_*.pb"))

    code, stdout, stderr = vlc_cli("compile", folder / "model.onnx", "-t", "onnxruntime", "--json")
    assert code == 0, stderr
    artifact = Path(json.loads(stdout)["artifact"])
    assert artifact == Path("artifacts") / f"{name}-onnxruntime-fp32"

    args = [a for i in inputs for a in ("--input", i)]
    code, stdout, stderr = vlc_cli("run", artifact, *args, "-o", "out", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["input_source"] == "files"
    for path in outputs:
        expected = _pb(path)
        stored_name = onnx.load_tensor(str(path)).name
        got = np.load(tmp_path / "out" / "outputs.npz")[stored_name]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    expected_args = [a for p in outputs for a in ("--expected", str(p))]
    code, stdout, stderr = vlc_cli("compare", artifact, *args, *expected_args, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["passed"] and report["reference"] == "expected outputs"
    assert len(report["outputs"]) == len(outputs)

    # generated inputs: the default reference for an ONNX source is the graph in ONNX Runtime CPU
    code, stdout, stderr = vlc_cli("compare", artifact, "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["reference"] == "onnx"


def test_fixed_batch_graphs_refuse_other_batches(vlc_cli, tmp_path, monkeypatch, cases):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = vlc_cli("compile", cases["test_gemm_default_matrix_bias"] / "model.onnx", "-t",
                              "onnxruntime", "-o", "gemm")
    assert code == 0, stderr
    code, stdout, stderr = vlc_cli("run", "gemm", "--batch", "5", "-o", "out")
    assert code == 2 and "batch 5 is outside the compiled range 3..3" in stderr
    assert "fixed batch of 3" in stderr and not (tmp_path / "out").exists()


def test_torch_target_refuses_onnx_files(vlc_cli, tmp_path, monkeypatch, cases):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = vlc_cli("compile", cases["test_relu"] / "model.onnx", "-t", "torch", "-o", "relu")
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "target torch needs a PyTorch model; got an ONNX file" in lines[0]
    assert not (tmp_path / "relu").exists() and not list(tmp_path.glob(".relu*"))

"""`vlc export` end to end on the test models, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import model_ref
from vlc.frontend.builtin_passes import DEFAULT_PASSES


def _export(vlc_cli, factory: str, out: Path, *extra: str) -> dict:
    code, stdout, stderr = vlc_cli("export", model_ref(factory), "-o", out, "--json", *extra)
    assert code == 0, stderr
    return json.loads(stdout)


@pytest.mark.parametrize("factory", ["mlp", "cnn", "transformer"])
def test_export_writes_a_checked_graph_with_dynamic_batch_and_parity(vlc_cli, tmp_path, factory):
    out = tmp_path / f"{factory}.onnx"
    report = _export(vlc_cli, factory, out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    for value in model.graph.input:
        first = value.type.tensor_type.shape.dim[0]
        assert first.dim_param and not first.HasField("dim_value"), "batch axis must stay dynamic"
    assert [s["name"] for s in report["stages"]] == ["export", "simplify"]
    assert report["simplifier"].startswith("onnxsim")
    # the normalized graph feeds every target: standard ONNX only, no runtime contrib operators
    assert {node.domain for node in model.graph.node} <= {""}
    assert [p["name"] for p in report["passes"]] == list(DEFAULT_PASSES)
    parity = report["parity"]
    assert parity["passed"]
    for output in parity["outputs"]:
        assert output["ref_std"] > 1e-3  # the comparison is on outputs with real spread
        assert output["cosine"] > 0.99999
        assert {"max_abs", "mean_abs", "median_abs", "max_rel", "mean_rel", "median_rel"} <= set(output)


def test_normalized_example_graph_is_standard_onnx(vlc_cli, tmp_path):
    # onnxsim would fuse CLIP's attention into com.microsoft::Attention unless told not to
    out = tmp_path / "clip.onnx"
    code, _, stderr = vlc_cli("export", "clip-vit-b32-image@test", "-o", out)
    assert code == 0, stderr
    assert {node.domain for node in onnx.load(str(out)).graph.node} <= {""}


def test_exported_graph_runs_at_other_batch_sizes(vlc_cli, tmp_path):
    out = tmp_path / "t.onnx"
    _export(vlc_cli, "transformer", out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        rng = np.random.default_rng(batch)
        feeds = {"token_ids": rng.integers(0, 100, (batch, 16)), "mask": np.ones((batch, 16), bool)}
        logits, probs = session.run(None, feeds)
        assert logits.shape == (batch, 5) and np.allclose(probs.sum(-1), 1, atol=1e-5)


def test_torchscript_exporter(vlc_cli, tmp_path):
    report = _export(vlc_cli, "cnn", tmp_path / "c.onnx", "--exporter", "torchscript")
    assert report["exporter"] == "torchscript" and report["parity"]["passed"]


def test_second_export_reuses_the_cache(vlc_cli, tmp_path):
    _export(vlc_cli, "mlp", tmp_path / "a.onnx")
    report = _export(vlc_cli, "mlp", tmp_path / "b.onnx")
    assert report["reused"] is True
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()


def test_export_table_output(vlc_cli, tmp_path):
    code, stdout, _ = vlc_cli("export", model_ref("mlp"), "-o", tmp_path / "m.onnx")
    assert code == 0
    assert "pass rewrite-default" in stdout and "parity" in stdout and "cosine" in stdout


def test_export_failure_names_module_and_operator_and_leaves_nothing(vlc_cli, tmp_path):
    out = tmp_path / "u.onnx"
    code, stdout, stderr = vlc_cli("export", model_ref("unexportable"), "-o", out)
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "UsesCustomOp" in lines[0] and "vlctest.mystery" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing", "not_onnx", "bad_factory", "unknown_pass", "bad_suffix"])
def test_bad_input_is_one_line(vlc_cli, tmp_path, case):
    out = tmp_path / "x.onnx"
    args = {
        "missing": [tmp_path / "nope.onnx", "-o", out],
        "not_onnx": [tmp_path / "text.onnx", "-o", out],
        "bad_factory": [f"{model_ref('nothing_here')}", "-o", out],
        "unknown_pass": [model_ref("mlp"), "-o", out, "--passes", "no-such-pass"],
        "bad_suffix": [model_ref("mlp"), "-o", tmp_path / "x.txt"],
    }[case]
    (tmp_path / "text.onnx").write_text("this is not a protobuf")
    code, _, stderr = vlc_cli("export", *args)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "—" in lines[0]  # says what to do
    assert not out.exists() and not (tmp_path / "x.txt").exists()


def test_onnx_input_from_the_onnx_backend_data(vlc_cli, tmp_path):
    # onnx wheels ship the pytorch-converted backend cases (the node/ cases are source-only)
    data = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted"
    src = data / "test_Conv2d_strided" / "model.onnx"
    code, stdout, stderr = vlc_cli("export", src, "-o", tmp_path / "conv.onnx", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["exporter"] is None
    # an ONNX input is checked against the untouched file, on inputs derived from its graph
    assert report["parity"]["reference"].startswith("the original file") and report["parity"]["passed"]
    assert report["inputs"]["runs"] and report["inputs"]["spread"]
    assert [s["name"] for s in report["stages"]] == ["load", "simplify"]
    onnx.checker.check_model(onnx.load(str(tmp_path / "conv.onnx")))


def test_nested_tuple_outputs_are_flattened_and_named(vlc_cli, tmp_path):
    report = _export(vlc_cli, "nested", tmp_path / "n.onnx")
    assert [o["name"] for o in report["parity"]["outputs"]] == ["output_0", "output_1", "output_2"]
    assert report["parity"]["passed"]


def test_a_data_dependent_branch_falls_back_to_torchscript_with_one_warning(vlc_cli, tmp_path):
    """dynamo fails on the branch; the default exporter says where in one line, keeps the
    exporter's kilobytes of graph dumps in a log file, and exports with TorchScript (parity-checked)."""
    cache = tmp_path / "cache"
    code, stdout, stderr = vlc_cli("export", model_ref("data_dependent"), "-o", tmp_path / "d.onnx", "--json",
                                   "--cache-dir", cache)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["exporter"] == "torchscript" and report["parity"]["passed"]
    assert "data-dependent" in report["exporter_fallback"]["error"]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "models.py:" in lines[0], stderr
    log = cache / "logs" / report["export_log"]
    assert "def forward" in log.read_text() and len(log.read_text()) > len(stderr)


def test_dynamo_only_names_the_line_and_the_fix(vlc_cli, tmp_path):
    out = tmp_path / "d.onnx"
    code, _, stderr = vlc_cli("export", model_ref("data_dependent"), "-o", out, "--exporter", "dynamo",
                              "--cache-dir", tmp_path / "cache")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "models.py:" in lines[0] and "in forward" in lines[0]
    assert "torch.cond" in lines[0] and ".export.log" in lines[0]
    assert not out.exists()

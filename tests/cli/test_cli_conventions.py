"""The command-line habits users bring from other tools: -h, -v/-q, python -m vlc, completion,
bare .onnx files for run/profile, --save-inputs and Polygraphy's input JSON."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.cli.test_cli_errors import one_line_error
from vlc.inputs import load_arrays, polygraphy_json

NOTE = "running it through onnxruntime"


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    """MatMul + Tanh with spread weights and a dynamic batch: x float32[N, 8] -> y float32[N, 5]."""
    rng = np.random.default_rng(7)
    weight = numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("conventions") / "mm.onnx"
    onnx.save(model, path)
    return path


def ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


# ---- -h, python -m vlc, completion ---------------------------------------------------------------

@pytest.mark.parametrize("argv", [[], ["run"], ["profile"], ["compile"], ["ascend"], ["ascend", "emit"]])
def test_dash_h_is_help(vlc_cli, argv):
    code, out, _ = vlc_cli(*argv, "-h")
    assert code == 0 and "Usage: vlc" in out
    assert out == vlc_cli(*argv, "--help")[1]


def test_python_dash_m_vlc():
    import vlc

    done = subprocess.run([sys.executable, "-m", "vlc", "--version"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"vlc {vlc.__version__}", done.stderr


def test_shell_completion():
    script = subprocess.run([sys.executable, "-m", "vlc", "--show-completion", "bash"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "SHELL": "/bin/bash"}, check=False)
    assert script.returncode == 0 and "complete" in script.stdout and "_VLC_COMPLETE" in script.stdout
    words = subprocess.run([sys.executable, "-m", "vlc"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "_VLC_COMPLETE": "complete_bash", "COMP_WORDS": "vlc ta",
                                "COMP_CWORD": "1"}, check=False)
    assert words.stdout.split() == ["targets"], words.stderr


# ---- -v / -q ------------------------------------------------------------------------------------

def test_quiet_hides_notes_but_not_results_or_errors(vlc_cli, onnx_file, tmp_path):
    code, out, err = vlc_cli("run", onnx_file)
    assert code == 0 and NOTE in err
    code, quiet_out, quiet_err = vlc_cli("-q", "run", onnx_file)
    untimed = re.compile(r"\(\d+(\.\d+)? ms")
    assert code == 0 and quiet_err == "" and untimed.sub("", quiet_out) == untimed.sub("", out)
    one_line_error(vlc_cli("-q", "run", tmp_path / "nope"), 2, "does not exist")


def test_verbose_logs_steps(vlc_cli, onnx_file):
    _, _, normal = vlc_cli("run", onnx_file)
    _, _, verbose = vlc_cli("-v", "run", onnx_file)
    assert "info: building an onnxruntime artifact of mm.onnx" in verbose
    assert "info:" not in normal
    code, _, _ = vlc_cli("-vv", "targets")
    assert code == 0
    one_line_error(vlc_cli("-v", "-q", "targets"), 2, "contradict")


def test_verbosity_does_not_leak_into_the_next_command(vlc_cli, onnx_file):
    vlc_cli("-q", "targets")
    assert NOTE in vlc_cli("run", onnx_file)[2]


# ---- bare model files ---------------------------------------------------------------------------

def test_run_a_bare_onnx_file(vlc_cli, onnx_file, tmp_path):
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = vlc_cli("run", onnx_file, "-i", tmp_path / "x.npy", "-o", tmp_path / "out", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["target"] == "onnxruntime" and summary["artifact"] == str(onnx_file)
    got = np.load(tmp_path / "out" / "y.npy")
    np.testing.assert_allclose(got, ort_outputs(onnx_file, {"x": x}), rtol=1e-6, atol=1e-6)
    assert got.std() > 0.1  # spread: a wrong weight or a zero output would not pass


def test_profile_a_bare_onnx_file(vlc_cli, onnx_file):
    code, out, err = vlc_cli("profile", onnx_file, "-b", "1,4", "-n", "3", "--warmup", "1", "--json")
    assert code == 0, err
    records = json.loads(out)
    assert [r["batch"] for r in records] == [1, 4]
    # the artifact was built in a temporary directory: records name the file that was measured
    assert {r["artifact"]["path"] for r in records} == {str(onnx_file)}


@pytest.mark.parametrize("name, target", [("model.engine", "TARGET: trt or trt-rtx"),
                                          ("model.plan", "TARGET: trt or trt-rtx"),
                                          ("model.om", "TARGET: ascend310 or ascend310p")])
def test_bare_compiled_files_are_refused_with_the_command_to_build_one(vlc_cli, tmp_path, name, target):
    (tmp_path / name).write_bytes(b"\0" * 64)
    for command in ("run", "profile"):
        one_line_error(vlc_cli(command, tmp_path / name), 2, f"{name} is a bare", "vlc compile MODEL.onnx -t TARGET",
                       target)


# ---- --save-inputs and Polygraphy JSON ----------------------------------------------------------

def test_save_inputs_round_trip(vlc_cli, onnx_file, tmp_path):
    code, out, err = vlc_cli("run", onnx_file, "-b", "2", "--seed", "5", "--save-inputs", tmp_path / "in",
                             "-o", tmp_path / "first", "--json")
    assert code == 0, err
    saved = sorted(Path(p).name for p in json.loads(out)["saved_inputs"])
    assert saved == ["inputs.json", "inputs.npz", "x.npy"]
    x = np.load(tmp_path / "in" / "x.npy")
    assert x.shape == (2, 8) and x.std() > 0.1
    first = np.load(tmp_path / "first" / "y.npy")
    np.testing.assert_allclose(first, ort_outputs(onnx_file, {"x": x}), rtol=1e-6, atol=1e-6)
    # the folder, its archive and its Polygraphy JSON all feed the same inputs back
    for given in (tmp_path / "in", tmp_path / "in" / "inputs.npz", tmp_path / "in" / "inputs.json"):
        again = tmp_path / f"again-{given.name}"
        code, _, err = vlc_cli("run", onnx_file, "-i", given, "-o", again)
        assert code == 0, err
        np.testing.assert_array_equal(np.load(again / "y.npy"), first)


def test_profile_saves_the_inputs_of_each_batch(vlc_cli, onnx_file, tmp_path):
    code, _, err = vlc_cli("profile", onnx_file, "-b", "1,3", "-n", "2", "--warmup", "0",
                           "--save-inputs", tmp_path / "in")
    assert code == 0, err
    assert np.load(tmp_path / "in" / "batch-1" / "x.npy").shape == (1, 8)
    assert np.load(tmp_path / "in" / "batch-3" / "inputs.npz")["x"].shape == (3, 8)


def test_save_inputs_refuses_a_folder_vlc_did_not_write(vlc_cli, onnx_file, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    one_line_error(vlc_cli("run", onnx_file, "--save-inputs", tmp_path / "mine"), 2, "--save-inputs", "notes.txt")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_polygraphy_reads_the_inputs_vlc_writes_and_vlc_reads_polygraphys(tmp_path):
    polygraphy_json_module = pytest.importorskip("polygraphy.json")
    rng = np.random.default_rng(11)
    feeds = {"x": rng.standard_normal((2, 8)).astype(np.float32), "ids": rng.integers(0, 9, (2, 3))}
    (tmp_path / "vlc.json").write_text(polygraphy_json(feeds))
    theirs = polygraphy_json_module.load_json(str(tmp_path / "vlc.json"))
    assert len(theirs) == 1 and {k: v.tolist() for k, v in theirs[0].items()} == \
        {k: v.tolist() for k, v in feeds.items()}
    second = {k: v + 1 for k, v in feeds.items()}
    polygraphy_json_module.save_json([feeds, second], str(tmp_path / "pg.json"))
    ours = load_arrays([tmp_path / "pg.json"], ["x", "ids"])
    assert all(ours[k].dtype == v.dtype and (ours[k] == v).all() for k, v in feeds.items())  # the first


def test_polygraphy_json_input_with_several_iterations_warns(vlc_cli, onnx_file, tmp_path):
    x = np.random.default_rng(2).standard_normal((1, 8)).astype(np.float32)
    iterations = json.loads(polygraphy_json({"x": x})) + json.loads(polygraphy_json({"x": x + 1}))
    (tmp_path / "two.json").write_text(json.dumps(iterations))
    code, _, err = vlc_cli("run", onnx_file, "-i", tmp_path / "two.json", "-o", tmp_path / "out")
    assert code == 0 and "holds 2 iterations of inputs; using the first" in err
    np.testing.assert_allclose(np.load(tmp_path / "out" / "y.npy"), ort_outputs(onnx_file, {"x": x}),
                               rtol=1e-6, atol=1e-6)


def _npy_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ('{"x": [1, 2]}', "is a JSON list, not an encoded NumPy array"),
    ('[{"x": {"tensor": "AAAA", "polygraphy_class": "Tensor"}}]', "is a Polygraphy Tensor"),
    ('[{"x": {"array": "bm90IGFuIGFycmF5", "polygraphy_class": "ndarray"}}]', "not a valid encoded array"),
    ("[]", "not a Polygraphy input file"),
    (json.dumps([{"y": {"array": _npy_b64(np.zeros((1, 8), np.float32)), "polygraphy_class": "ndarray"}}]),
     "unknown input name(s) y"),
])
def test_bad_polygraphy_json_is_one_line(vlc_cli, onnx_file, tmp_path, content, message):
    (tmp_path / "in.json").write_text(content)
    one_line_error(vlc_cli("-q", "run", onnx_file, "-i", tmp_path / "in.json"), 2, message)


def test_truncated_array_in_json_is_refused_before_allocating(vlc_cli, onnx_file, tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (1 << 20, 1 << 20)})
    payload = base64.b64encode(b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\0" * 16).decode()
    (tmp_path / "huge.json").write_text(json.dumps([{"x": {"array": payload, "polygraphy_class": "ndarray"}}]))
    one_line_error(vlc_cli("-q", "run", onnx_file, "-i", tmp_path / "huge.json"), 2, "truncated")


def test_legacy_polygraphy_encoding(tmp_path):
    x = np.arange(8, dtype=np.float32).reshape(1, 8)
    legacy = [{"x": {"__polygraphy_encoded_ndarray": "polygraphy_serialized_json_type", "array": _npy_b64(x)}}]
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    np.testing.assert_array_equal(load_arrays([tmp_path / "old.json"], ["x"])["x"], x)

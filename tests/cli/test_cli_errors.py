"""Every user mistake: one line on stderr, a non-zero exit, and nothing left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import model_ref, registered_plugin
from vlc import plugin_manager
from vlc.hookspecs import hookimpl
from vlc.target import Availability, Target


def one_line_error(result: tuple[int, str, str], code: int, *phrases: str) -> str:
    got, stdout, stderr = result
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert got == code, (got, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def nothing_left(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p.name for p in parent.glob(f".{name}*")], "a half-built directory was left behind"


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    """An onnxruntime artifact of the MLP (input x: float32[batch, 32]) for batches 1..8."""
    from vlc.frontend.pipeline import prepare
    from vlc.spec import TargetSpec

    out = tmp_path_factory.mktemp("errors") / "mlp-art"
    source = prepare(model_ref("mlp"))
    plugin_manager.get_target("onnxruntime").compile(source, TargetSpec("onnxruntime", batch=(1, 4, 8)), out)
    return out


# ---- compile ----------------------------------------------------------------------------------

def test_missing_model_file(vlc_cli, tmp_path):
    result = vlc_cli("compile", tmp_path / "absent.onnx", "-t", "onnxruntime", "-o", tmp_path / "art")
    one_line_error(result, 2, "absent.onnx does not exist")
    nothing_left(tmp_path, "art")


def test_missing_model_factory_file(vlc_cli, tmp_path):
    result = vlc_cli("compile", f"{tmp_path / 'absent.py'}:mlp", "-t", "torch", "-o", tmp_path / "art")
    one_line_error(result, 2, "absent.py does not exist")
    nothing_left(tmp_path, "art")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_model_file(vlc_cli, tmp_path):
    path = tmp_path / "locked.onnx"
    path.write_bytes(b"\x08\x07")
    path.chmod(0)
    one_line_error(vlc_cli("compile", path, "-t", "onnxruntime", "-o", tmp_path / "art"), 2, "permission denied")
    nothing_left(tmp_path, "art")


def test_unreadable_input_file(vlc_cli, tmp_path, mlp_artifact):
    bad = tmp_path / "x.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00 this header is broken")
    result = vlc_cli("run", mlp_artifact, "--input", bad, "-o", tmp_path / "out")
    one_line_error(result, 2, "cannot read file", "x.npy")
    nothing_left(tmp_path, "out")


def test_not_an_onnx_file(vlc_cli, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a protobuf\n" * 20)
    one_line_error(vlc_cli("compile", path, "-t", "onnxruntime", "-o", tmp_path / "art"), 2,
                   "is not a valid ONNX model")
    nothing_left(tmp_path, "art")


def test_unknown_target(vlc_cli, tmp_path):
    result = vlc_cli("compile", model_ref("mlp"), "-t", "warp-drive", "-o", tmp_path / "art")
    one_line_error(result, 2, "unknown target 'warp-drive'", "onnxruntime", "torch")
    nothing_left(tmp_path, "art")


def test_unknown_option(vlc_cli, tmp_path):
    result = vlc_cli("compile", model_ref("mlp"), "-t", "onnxruntime", "-O", "turbo=1", "-o", tmp_path / "art")
    one_line_error(result, 2, "unknown option(s) turbo", "graph_optimization_level")
    nothing_left(tmp_path, "art")


def test_bad_option_value_and_precision(vlc_cli, tmp_path):
    one_line_error(vlc_cli("compile", model_ref("mlp"), "-t", "torch", "-O", "mode=jit", "-o", tmp_path / "a"), 2,
                   "mode=jit")
    one_line_error(vlc_cli("compile", model_ref("mlp"), "-t", "torch", "-p", "fp8", "-o", tmp_path / "a"), 2,
                   "unknown precision 'fp8'")
    one_line_error(vlc_cli("compile", model_ref("mlp"), "-t", "torch", "-p", "int8", "-o", tmp_path / "a"), 2,
                   "does not support precision int8")
    nothing_left(tmp_path, "a")


class AbsentSdkTarget(Target):
    name = "absent-sdk"
    summary = "a target whose SDK is not installed"

    def available(self) -> Availability:
        return Availability(False, "AbsentSDK is not installed (pip install absent-sdk)")


class AbsentSdkPlugin:
    @hookimpl
    def register_targets(self, register) -> None:
        register(AbsentSdkTarget())


@pytest.fixture
def absent_sdk():
    with registered_plugin(AbsentSdkPlugin(), "test-absent-sdk"):
        yield


def test_absent_sdk(vlc_cli, tmp_path, absent_sdk):
    result = vlc_cli("compile", model_ref("mlp"), "-t", "absent-sdk", "-o", tmp_path / "art")
    one_line_error(result, 3, "target 'absent-sdk' cannot run here", "AbsentSDK is not installed", "vlc targets")
    nothing_left(tmp_path, "art")
    code, stdout, _ = vlc_cli("targets", "--json")
    listed = {t["name"]: t for t in json.loads(stdout)["targets"]}
    assert code == 0 and listed["absent-sdk"]["available"] is False
    assert listed["absent-sdk"]["reason"] == "AbsentSDK is not installed (pip install absent-sdk)"


def test_absent_device(vlc_cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = vlc_cli("compile", model_ref("mlp"), "-t", "torch", "--device", "cuda", "-o", tmp_path / "art")
    one_line_error(result, 3, "has no cuda device here")
    nothing_left(tmp_path, "art")


def test_shapes_naming_an_unknown_input(vlc_cli, tmp_path):
    result = vlc_cli("compile", model_ref("mlp"), "-t", "onnxruntime", "--shapes", "pixels:1x32,4x32,8x32",
                     "-o", tmp_path / "art")
    one_line_error(result, 2, "no input named 'pixels'")
    nothing_left(tmp_path, "art")


# ---- run / profile / compare --------------------------------------------------------------------

def test_wrong_input_name(vlc_cli, tmp_path, mlp_artifact):
    np.save(tmp_path / "pixels.npy", np.ones((2, 32), np.float32))
    result = vlc_cli("run", mlp_artifact, "--input", tmp_path / "pixels.npy", "-o", tmp_path / "out")
    one_line_error(result, 2, "unknown input name(s) pixels", "inputs are: x")
    nothing_left(tmp_path, "out")


def test_wrong_input_shape(vlc_cli, tmp_path, mlp_artifact):
    np.save(tmp_path / "x.npy", np.ones((2, 31), np.float32))
    result = vlc_cli("run", mlp_artifact, "--input", tmp_path / "x.npy", "-o", tmp_path / "out")
    one_line_error(result, 2, "input 'x' has size 31 on axis 1, the model takes 32")
    nothing_left(tmp_path, "out")


def test_wrong_input_dtype(vlc_cli, tmp_path, mlp_artifact):
    np.save(tmp_path / "x.npy", np.ones((2, 32), np.float64))
    result = vlc_cli("compare", mlp_artifact, "--input", tmp_path / "x.npy")
    one_line_error(result, 2, "input 'x' has dtype float64, the model takes float32", "astype('float32')")


def test_batch_outside_the_compiled_range(vlc_cli, tmp_path, mlp_artifact):
    one_line_error(vlc_cli("run", mlp_artifact, "--batch", "16", "-o", tmp_path / "out"), 2,
                   "batch 16 is outside the compiled range 1..8", "recompile with --batch 1,4,16")  # opt kept
    nothing_left(tmp_path, "out")
    np.save(tmp_path / "x.npy", np.ones((9, 32), np.float32))
    one_line_error(vlc_cli("run", mlp_artifact, "--input", tmp_path / "x.npy"), 2,
                   "batch 9 is outside the compiled range 1..8")
    result = vlc_cli("profile", mlp_artifact, "--batch", "1,16", "-n", "2", "--record", tmp_path / "results")
    one_line_error(result, 2, "batch 16 is outside the compiled range 1..8")
    nothing_left(tmp_path, "results")


def test_not_an_artifact(vlc_cli, tmp_path):
    one_line_error(vlc_cli("run", tmp_path / "nowhere"), 2, "does not exist", "vlc compile")
    (tmp_path / "plain").mkdir()
    one_line_error(vlc_cli("profile", tmp_path / "plain"), 2, "is not a vlc artifact")


def test_profile_and_compare_argument_errors(vlc_cli, tmp_path, mlp_artifact):
    one_line_error(vlc_cli("profile", mlp_artifact, "--iterations", "5", "--duration", "1"), 2, "exclusive")
    one_line_error(vlc_cli("profile", mlp_artifact, "--batch", "1,x"), 2, "cannot read --batch '1,x'")
    one_line_error(vlc_cli("compare", mlp_artifact, "--reference", str(tmp_path / "other")), 2, "does not exist")
    np.save(tmp_path / "y.npy", np.ones((2, 10), np.float32))
    one_line_error(vlc_cli("compare", mlp_artifact, "--expected", f"logits={tmp_path / 'y.npy'}"), 2,
                   "unknown output name(s) logits")

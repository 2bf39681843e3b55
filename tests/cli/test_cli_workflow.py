"""compile -> run -> profile -> compare through the CLI, for the MLP, the CNN and the transformer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import model_ref
from vlc.records import read_record


def ok(result: tuple[int, str, str]) -> str:
    code, stdout, stderr = result
    assert code == 0, stderr
    return stdout


@pytest.mark.parametrize("factory", ["mlp", "cnn", "transformer"])
def test_compile_run_profile_compare(vlc_cli, tmp_path, monkeypatch, factory):
    monkeypatch.chdir(tmp_path)
    ref = model_ref(factory)

    # compile: default directory artifacts/<model>-<target>-<precision>, then reuse
    built = json.loads(ok(vlc_cli("compile", ref, "--target", "onnxruntime", "--batch", "1,4,8", "--json")))
    ort_dir = Path(built["artifact"])
    assert ort_dir == Path("artifacts") / f"{factory}-onnxruntime-fp32"
    assert built["reused"] is False and built["batch_range"] == [1, 8] and built["build_seconds"] >= 0
    again = json.loads(ok(vlc_cli("compile", ref, "-t", "onnxruntime", "--batch", "1,4,8", "--json")))
    assert again["reused"] is True and again["frontend_reused"] is True
    text = ok(vlc_cli("compile", ref, "-t", "torch", "--batch", "1,4,8", "-o", "torch-art"))
    assert "artifact: torch-art" in text and "built in" in text and "batch range: 1..8" in text

    # run: generated inputs at the opt batch, outputs saved
    stdout = ok(vlc_cli("run", ort_dir, "-o", "out"))
    assert "outputs of" in stdout and "generated (seed 0)" in stdout
    saved = np.load("out/outputs.npz")
    first = saved.files[0]
    assert saved[first].shape[0] == 4 and saved[first].std() > 1e-3
    summary = json.loads(ok(vlc_cli("run", "torch-art", "--batch", "2", "--seed", "3", "--json")))
    assert all(o["shape"][0] == 2 for o in summary["outputs"].values())

    # the same inputs from files give the same outputs as generation
    inputs_dir = tmp_path / "inputs"
    inputs_dir.mkdir()
    from vlc.artifact import Artifact
    from vlc.frontend.feeds import artifact_inputs

    feeds = artifact_inputs(Artifact.load(ort_dir), batch=4, seed=0)
    for name, array in feeds.items():
        np.save(inputs_dir / f"{name}.npy", array)
    ok(vlc_cli("run", ort_dir, "--input", inputs_dir, "-o", "out2"))
    np.testing.assert_array_equal(np.load("out2/outputs.npz")[first], saved[first])

    # profile: a sweep, a table that says what it timed, records `vlc report` can read
    stdout = ok(vlc_cli("profile", ort_dir, "--batch", "1,8", "--warmup", "2", "--iterations", "5",
                        "--record", "results"))
    assert "transfers included" in stdout and "median" in stdout and "p99" in stdout
    files = sorted(Path("results").rglob("*.result.json"))
    assert [f.name for f in files] == ["onnxruntime-fp32-b1.result.json", "onnxruntime-fp32-b8.result.json"]
    record = read_record(files[1])
    assert record.batch == 8 and record.model == factory and record.latency_ms["count"] == 5
    assert record.throughput_per_s > 0 and record.environment["sdk"]["onnxruntime"]
    assert record.environment["target_versions"]["onnxruntime"]
    records = json.loads(ok(vlc_cli("profile", "torch-art", "--batch", "4", "--duration", "0.2", "--json")))
    assert len(records) == 1 and records[0]["target"] == "torch" and records[0]["latency_ms"]["count"] >= 2

    # compare: default reference is the PyTorch model; another artifact works too
    report = json.loads(ok(vlc_cli("compare", ort_dir, "--batch", "3", "--json")))
    assert report["passed"] and report["reference"] == "torch"
    assert all(o["cosine"] > 0.99999 and o["ref_std"] > 1e-3 for o in report["outputs"])
    stdout = ok(vlc_cli("compare", "torch-art", "--reference", str(ort_dir)))
    assert "passed" in stdout and "max abs" in stdout and "cosine" in stdout
    report = json.loads(ok(vlc_cli("compare", ort_dir, "--reference", "onnx", "--json")))
    assert report["passed"] and report["reference"] == "onnx"


def test_compare_fails_with_the_accuracy_exit_code(vlc_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(vlc_cli("compile", model_ref("cnn"), "-t", "torch", "-p", "bf16", "-o", "bf16"))
    stdout = ok(vlc_cli("compare", "bf16"))  # within bf16's default tolerance
    assert "passed" in stdout
    code, stdout, stderr = vlc_cli("compare", "bf16", "--atol", "1e-7", "--rtol", "0", "--min-cosine", "0.9999999")
    assert code == 4
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "differ from torch" in lines[0]
    assert "FAIL" in stdout  # the table still shows which output failed and why


def test_half_precision_onnxruntime_artifacts_compare_against_torch(vlc_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    built = json.loads(ok(vlc_cli("compile", model_ref("mlp"), "-t", "onnxruntime", "-p", "fp16", "--json")))
    assert built["precision"] == "fp16"
    report = json.loads(ok(vlc_cli("compare", built["artifact"], "--batch", "8", "--json")))
    assert report["passed"] and report["tolerance"]["min_cosine"] == 0.999


def test_examples_run_on_their_own_input_generator(vlc_cli, tmp_path, monkeypatch):
    """Generated inputs for an example come from its generator (valid token ids, masks), not generic specs."""
    from vlc import examples
    from vlc.artifact import Artifact
    from vlc.frontend.feeds import artifact_inputs

    monkeypatch.chdir(tmp_path)
    built = json.loads(ok(vlc_cli("compile", "clip-vit-b32-text@test", "-t", "onnxruntime", "--batch", "1,2,4",
                                  "--json")))
    artifact = Artifact.load(built["artifact"])
    feeds = artifact_inputs(artifact, batch=2, seed=5)
    own = examples.load("clip-vit-b32-text", size="test").generate_inputs(2, 5)
    for name, array in feeds.items():
        np.testing.assert_array_equal(array, own[name])
    summary = json.loads(ok(vlc_cli("run", built["artifact"], "--batch", "2", "--seed", "5", "--json")))
    assert all(o["finite"] and o["std"] > 1e-3 for o in summary["outputs"].values())
    report = json.loads(ok(vlc_cli("compare", built["artifact"], "--json")))
    assert report["passed"] and report["reference"] == "torch"

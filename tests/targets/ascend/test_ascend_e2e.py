"""End to end against the STAND-IN atc and ais_bench (tests/standins): the ViLBERT example
through check -> patch -> compile -> run -> compare -> profile, and --emit bundles for every
example whose scripts are run and imported back. No real Ascend tool or device is involved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from standin_env import standin_path

from vlc.accuracy import compare_outputs, default_tolerance
from vlc.artifact import Artifact
from vlc.cli.app import main
from vlc.errors import CompileError, InputError
from vlc.plugin_manager import get_target
from vlc.spec import Precision, TargetSpec
from vlc.timing import ProfileSettings

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def vilbert():
    from vlc.frontend.pipeline import prepare

    return prepare("vilbert-vqa@test")


def test_vilbert_through_the_stand_ins(vilbert, standins, tmp_path, monkeypatch, capsys):
    from vlc.frontend.pipeline import torch_outputs

    monkeypatch.setenv("STANDIN_CANN", "6")  # the reference guide's CANN 6.0 opset limits
    # pre-flight: the guide's problems are found, each with the patch that fixes it
    code = main(["check", "vilbert-vqa@test", "-t", "ascend310p", "-p", "fp16", "-O", "cann=6",
                 "--batch", "1,2,2", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    import json

    report = json.loads(out)
    fixes = {f["fix"] for f in report["findings"]}
    assert {"ascend-gather-neg-index", "ascend-fp16-clamp", "ascend-opset", "ascend-layernorm"} <= fixes
    assert report["ok"] and report["after_patches"] == []

    target = get_target("ascend310p")
    spec = TargetSpec("ascend310p", Precision.FP16, batch=(1, 2, 2),
                      options={"cann": 6, "implmode": "high_performance", "implmode_ops": ["Gelu"]})
    artifact = target.compile(vilbert, spec, tmp_path / "art")
    builds = artifact.manifest["extra"]["builds"]
    assert [b["batch"] for b in builds] == [1, 2]
    assert all(b["parity"]["passed"] for b in builds)
    assert "--optypelist_for_implmode=Gelu" in builds[0]["atc_args"]
    assert (artifact.path / builds[0]["om"]).is_file() and (artifact.path / "atc_bs1.log").is_file()

    feeds = vilbert.generate_inputs(2, seed=5)
    outputs = target.run(artifact, feeds)
    reference = torch_outputs(vilbert.model, feeds)
    accuracy = compare_outputs(outputs, reference, default_tolerance(Precision.FP16))
    assert accuracy.passed, accuracy.to_json()

    profile = target.profile(artifact, feeds, ProfileSettings(warmup=1, iterations=4))
    assert profile.batch == 2 and profile.latency.count == 4 and not profile.includes_transfers
    assert {"compute", "h2d", "d2h"} <= set(profile.breakdown)

    with pytest.raises(InputError, match="batch 3 was not built"):
        target.open(artifact)._om_for(3)

    # the same artifact through the Python API path of the stand-in
    monkeypatch.delenv("VLC_AIS_BENCH")
    monkeypatch.setattr(sys, "path", [str(standins), *sys.path])
    api_outputs = target.run(artifact, feeds)
    np.testing.assert_array_equal(api_outputs["logits"], outputs["logits"])


def test_vilbert_unpatched_is_refused_before_atc(vilbert, standins, tmp_path):
    spec = TargetSpec("ascend310p", Precision.FP16, batch=(1, 1, 1), options={"cann": 6, "patches": "none"})
    with pytest.raises(InputError, match="remain after vlc's patches"):
        get_target("ascend310p").compile(vilbert, spec, tmp_path / "art")


def test_atc_rejection_becomes_one_actionable_error(vilbert, standins, tmp_path, monkeypatch):
    # vlc believes CANN 7 (keeps LayerNormalization at opset 18); the stand-in ATC has CANN 6 rules
    monkeypatch.setenv("STANDIN_CANN", "6")
    spec = TargetSpec("ascend310p", Precision.FP16, batch=(1, 1, 1), options={"cann": 7})
    mine = tmp_path / "art.failed-build.log"
    mine.write_text("the user's own notes\n")  # a file of the log's name that vlc did not write
    with pytest.raises(CompileError) as info:
        get_target("ascend310p").compile(vilbert, spec, tmp_path / "art")
    assert "E19010" in info.value.what and "vlc check" in info.value.fix
    kept = Path(info.value.where)
    assert kept == tmp_path / "art.failed-build.1.log" and "ATC run failed" in kept.read_text()
    assert mine.read_text() == "the user's own notes\n"
    assert not (tmp_path / "art").exists()


def test_gear_build_runs_each_gear(vilbert, standins, tmp_path):
    target = get_target("ascend310p")
    spec = TargetSpec("ascend310p", Precision.FP32, batch=(1, 2, 4), options={"gears": [1, 2, 4]})
    artifact = target.compile(vilbert, spec, tmp_path / "art")
    assert artifact.manifest["files"]["main"].endswith("_linux_x86_64.om")  # found by <stem>*.om
    feeds = vilbert.generate_inputs(4, seed=1)
    from vlc.targets.ascend.builds import ort_outputs

    outputs = target.run(artifact, feeds)
    reference = ort_outputs(vilbert.onnx_path, feeds)
    assert compare_outputs(outputs, reference, default_tolerance(Precision.FP32)).passed


def _examples() -> list[str]:
    from vlc import examples

    return list(examples.names())


@pytest.mark.parametrize("name", _examples())
def test_emit_bundle_scripts_and_import(name, standins, tmp_path):
    from vlc.frontend.pipeline import FrontendOptions, prepare
    from vlc.targets.ascend.bundle import emit_bundle, import_results

    # The front end's onnxsim step fuses some attention blocks into ONNX Runtime's
    # com.microsoft::Attention (onnxsim 0.8); vlc check rightly refuses those for ATC, so the
    # bundles are emitted from unsimplified exports (the Ascend patches fold shapes themselves).
    source = prepare(f"{name}@test", options=FrontendOptions(simplify=False))
    spec = TargetSpec("ascend310p", Precision.FP16, batch=(1, 2, 2), options={"cann": 8})
    bundle = emit_bundle(source, spec, tmp_path / "bundle")
    for script in ("compile.sh", "run.sh", "profile.sh"):
        assert os.access(bundle / script, os.X_OK)
    env = {**os.environ, "PATH": standin_path()}
    for script in ("compile.sh", "run.sh", "profile.sh"):
        proc = subprocess.run(["bash", str(bundle / script)], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = import_results(bundle)
    assert not results.missing
    assert sorted(results.outputs) == [1, 2] and sorted(results.profiles) == [1, 2]
    for batch, report in results.compare().items():
        assert report.passed, (batch, report.to_json())
    assert results.profiles[2].latency.count == 100


def test_emit_bundle_needs_no_toolkit_and_refuses_foreign_dirs(vilbert, tmp_path, monkeypatch):
    from vlc.targets.ascend.bundle import emit_bundle

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("VLC_AIS_BENCH", raising=False)
    spec = TargetSpec("ascend310", Precision.FP16, batch=(1, 1, 1))
    target = get_target("ascend310")
    assert target.capabilities.bundles
    bundle = target.emit_bundle(vilbert, spec, tmp_path / "b")
    assert Artifact.load(bundle).manifest["extra"]["bundle"] and (tmp_path / "b" / "compile.sh").is_file()
    script = (tmp_path / "b" / "compile.sh").read_text()
    assert " --soc_version=Ascend310 " in script and "set -euo pipefail" in script
    assert "'--input_shape=box_features:1,100,1024;box_coordinates:1,100,4;" in script  # ';' quoted
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("mine")
    with pytest.raises(InputError, match="not a vlc Ascend bundle"):
        emit_bundle(vilbert, TargetSpec("ascend310", Precision.FP16), tmp_path / "other")

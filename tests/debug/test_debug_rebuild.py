"""Bisection against a compiled artifact: each probe rebuilds it from its source graph with the
marked tensors as extra outputs, through its own target (compile, open, run).

ONNX Runtime stands in for the engine-producing targets here (TensorRT engines and Ascend .om
files cannot run on this machine); the Ascend path through the stand-in atc/ais_bench is tested
in tests/targets/ascend/test_ascend_dumps.py. The same driver is what a trt artifact goes
through on a machine with TensorRT, which has never run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import onnx
import pytest

from tests.conftest import model_ref
from tests.debug.corrupt import corrupt_weight
from vlc.debug import debug_accuracy
from vlc.debug.compiled import RebuiltCandidate, with_outputs
from vlc.frontend.pipeline import prepare


@pytest.fixture(scope="module")
def bad_cnn(tmp_path_factory):
    src = Path(prepare(model_ref("cnn")).onnx_path)
    bad = tmp_path_factory.mktemp("rebuild") / "cnn.bad.onnx"
    name = corrupt_weight(src, bad, "Conv", lambda convs: convs[1])
    return src, bad, name


def _compile(vlc_cli, model, out, *extra):
    code, _, err = vlc_cli("compile", model, "--target", "onnxruntime", "-o", out, *extra)
    assert code == 0, err
    return out


def test_rebuilt_onnxruntime_artifact_names_the_corrupted_conv(vlc_cli, bad_cnn, tmp_path):
    src, bad, name = bad_cnn
    artifact = _compile(vlc_cli, bad, tmp_path / "bad-ort")
    before = sorted(p.name for p in artifact.iterdir())
    report = debug_accuracy(str(src), str(artifact), batch=2, bisect=True, rebuild=True)
    first = report.first_divergent
    assert report.mode == "bisect" and first is not None and first.node == name, first
    assert not first.passed and first.op_type == "Conv"
    # every probed tensor was read from a rebuilt artifact: a handful of builds, not one per tensor
    note = next(n for n in report.notes if "rebuild(s)" in n)
    builds = int(note.split("file: ")[1].split(" rebuild")[0])
    assert 2 <= builds < 12 and len(report.nodes) >= builds
    assert sorted(p.name for p in artifact.iterdir()) == before  # nothing written into the artifact


def test_rebuilt_clean_fp16_artifact_shows_no_divergence(vlc_cli, tmp_path):
    artifact = _compile(vlc_cli, model_ref("cnn"), tmp_path / "cnn-fp16", "--precision", "fp16")
    code, out, err = vlc_cli("debug", "accuracy", model_ref("cnn"), artifact, "--batch", "2", "--bisect",
                             "--rebuild", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["mode"] == "bisect" and data["first_divergent"] is None and data["passed"]
    assert data["compared"] == 1  # the last tensor passes: one build settles it
    assert any("1 rebuild(s)" in n for n in data["notes"])


def test_marked_outputs_are_typed(bad_cnn):
    src, _, _ = bad_cnn
    proto = onnx.load(str(src))
    inner = [o for n in proto.graph.node[2:4] for o in n.output]
    marked = with_outputs(proto, inner)
    added = {o.name: o for o in marked.graph.output[len(proto.graph.output):]}
    assert list(added) == inner
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in added.values())
    assert len(proto.graph.output) == 1  # the original is left alone


@pytest.mark.parametrize("args, words", [
    (["--rebuild"], "--rebuild probes a compiled artifact by bisection"),
    (["--bisect", "--rebuild"], "needs a compiled artifact as the candidate"),
])
def test_rebuild_misuse_is_one_line(vlc_cli, bad_cnn, args, words):
    src, bad, _ = bad_cnn
    code, _, err = vlc_cli("debug", "accuracy", src, bad, *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="tensorrt_rtx is not installed (pip install tensorrt-rtx-cu13)")
def test_a_trt_engine_is_bisected_by_rebuilds_and_refused_where_it_cannot_run(vlc_cli, tmp_path):
    """The engine builds here but no GPU runs it: bisection says so in one line before any
    rebuild, rather than comparing something else."""
    out = tmp_path / "cnn-trt"
    code, _, err = vlc_cli("compile", model_ref("cnn"), "--target", "trt-rtx", "--precision", "fp16", "-o", out)
    assert code == 0, err
    code, _, err = vlc_cli("debug", "accuracy", model_ref("cnn"), out, "--bisect")
    assert code == 2 and "rebuilds it with marked outputs" in err and "cannot build and run it here" in err
    assert len(err.strip().splitlines()) == 1, err
    with pytest.raises(Exception, match="cannot build and run it here"):
        from vlc.artifact import Artifact

        RebuiltCandidate(Artifact.load(out))

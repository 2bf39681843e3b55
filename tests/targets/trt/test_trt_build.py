"""Real TensorRT-RTX engines built on the CPU (compute capability 8.6, the A10's preset).

Without a GPU the engine cannot be deserialized here; what an engine holds is checked through
the builder's own layer report (layers.json), the manifest and the build log.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny_models as tm  # put on sys.modules by conftest.py
from onnx import TensorProto, helper

from vlc.artifact import Artifact
from vlc.errors import CompileError, InputError, TargetUnavailable
from vlc.plugin_manager import get_target
from vlc.spec import Precision, ShapeRange, TargetSpec
from vlc.target import CompileSource

rtx_missing = importlib.util.find_spec("tensorrt_rtx") is None
pytestmark = pytest.mark.skipif(rtx_missing, reason="tensorrt_rtx is not installed (pip install tensorrt-rtx-cu13)")


def _source(graphs: dict[str, Path], name: str) -> CompileSource:
    return CompileSource(graphs[name], name, tm.input_specs(name))


def _compile(graphs, tmp_path, name="mlp", target="trt-rtx", precision="fp32", **spec) -> Artifact:
    spec.setdefault("batch", (1, 4, 8))
    return get_target(target).compile(_source(graphs, name), TargetSpec(target, Precision(precision), **spec),
                                      tmp_path / f"{name}-{precision}")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_builds_engine_on_cpu(tiny_graphs, tmp_path, name, precision):
    artifact = _compile(tiny_graphs, tmp_path, name, precision=precision)
    engine = artifact.file("main")
    assert engine.is_file() and engine.stat().st_size > 1000
    m = artifact.manifest
    trt = m["extra"]["trt"]
    assert m["target"] == "trt-rtx" and m["preset"] == "a10" and m["precision"] == precision
    assert trt["backend"] == "tensorrt_rtx" and trt["compute_capabilities"] == ["8.6"]
    assert trt["preset"]["compute_capability"] == "8.6" and trt["strongly_typed"] is True
    first_input = tm.input_specs(name)[0].name
    assert trt["profiles"][0][first_input]["min"][0] == 1 and trt["profiles"][0][first_input]["max"][0] == 8
    assert m["batch_range"] == [1, 8]
    assert m["tool_versions"]["tensorrt_rtx"]
    log = (artifact.path / m["build_log"]).read_text()
    assert "[vlc] parsing" in log and "[I]" in log  # TensorRT's own logger is captured
    layers = json.loads(artifact.file("layers").read_text())
    assert layers["layers"] and any(layer["onnx_layers"] for layer in layers["layers"])
    assert trt["io"]["inputs"][0]["name"] == first_input
    if precision == "fp32":
        assert "precision" not in m["extra"] and trt["tf32"] is False
    else:
        report = m["extra"]["precision"]
        assert report["passed"] and report["precision"] == precision
        assert artifact.file("graph").is_file()
        graph_ops = {n.op_type for n in onnx.load(str(artifact.file("graph"))).graph.node}
        assert ("QuantizeLinear" in graph_ops) == (precision == "int8")


def test_bf16_engine(tiny_graphs, tmp_path):
    artifact = _compile(tiny_graphs, tmp_path, "transformer", precision="bf16")
    assert artifact.manifest["extra"]["precision"]["passed"]


def test_rebuild_is_reused_when_nothing_changed(tiny_graphs, tmp_path):
    first = _compile(tiny_graphs, tmp_path)
    again = _compile(tiny_graphs, tmp_path)
    assert again.manifest["created"] == first.manifest["created"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="tensorrt is installed: `trt` builds with it")
def test_trt_with_only_rtx_refuses_and_points_at_trt_rtx(tiny_graphs, tmp_path):
    # TensorRT cannot load a TensorRT-RTX engine: `trt` must not build one
    with pytest.raises(TargetUnavailable) as info:
        _compile(tiny_graphs, tmp_path, target="trt")
    line = info.value.line()
    assert "\n" not in line and "use --target trt-rtx" in line and "TensorRT-RTX" in line
    assert not any(tmp_path.iterdir())  # nothing built, nothing left behind
    status = get_target("trt").available()
    assert not status.ok and "--target trt-rtx" in status.reason


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="tensorrt is installed: `trt` builds with it")
def test_cli_trt_with_only_rtx_is_one_line(vlc_cli, tiny_graphs, tmp_path):
    code, out, err = vlc_cli("compile", tiny_graphs["mlp"], "--target", "trt", "-o", tmp_path / "a")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 3 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "use --target trt-rtx" in lines[0]
    assert not (tmp_path / "a").exists()


def test_options_are_recorded(tiny_graphs, tmp_path):
    cache = tmp_path / "timing.cache"
    artifact = _compile(tiny_graphs, tmp_path, precision="tf32",
                        options={"workspace": 64, "builder_optimization_level": "2", "timing_cache": str(cache)})
    trt = artifact.manifest["extra"]["trt"]
    assert trt["workspace_mib"] == 64 and trt["builder_optimization_level"] == 2 and trt["tf32"] is True
    assert "ignored" in trt["timing_cache"]  # TensorRT-RTX has no timing cache


def test_explicit_shapes(tiny_graphs, tmp_path):
    shapes = {"image": ShapeRange((2, 3, 16, 16), (4, 3, 16, 16), (6, 3, 16, 16))}
    artifact = _compile(tiny_graphs, tmp_path, "cnn", batch=None, shapes=shapes)
    assert artifact.manifest["extra"]["trt"]["profiles"][0]["image"]["max"] == [6, 3, 16, 16]
    assert artifact.manifest["batch_range"] == [2, 6]


# ---- errors ----------------------------------------------------------------------------------

def test_unknown_input_name_in_shapes(tiny_graphs, tmp_path):
    shapes = {"imgae": ShapeRange((1, 3, 16, 16), (1, 3, 16, 16), (1, 3, 16, 16))}
    with pytest.raises(InputError, match="no input named 'imgae'.*inputs are: image"):
        _compile(tiny_graphs, tmp_path, "cnn", batch=None, shapes=shapes)


def test_dynamic_batch_without_range(tiny_graphs, tmp_path):
    artifact = _compile(tiny_graphs, tmp_path, "mlp", batch=None)  # batch 1, chosen and recorded
    assert artifact.manifest["extra"]["shape_choice"]["shapes"]["x"]["max"][0] == 1
    # the manifest's batch range counts vlc's choice: the engine takes batch 1 only, and a run at
    # another batch is refused before any TensorRT call
    assert artifact.manifest["batch_range"] == [1, 1]
    with pytest.raises(InputError, match="batch 2 is outside the compiled range 1..1") as info:
        get_target("trt-rtx").validate_feeds(artifact, tm.generate("mlp", 2))
    assert "--batch 1,1,2" in info.value.fix


def test_dynamic_non_batch_axis_without_range(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    artifact = get_target("trt-rtx").compile(CompileSource(path, "seq", []),
                                             TargetSpec("trt-rtx", batch=(1, 2, 4)), tmp_path / "out")
    assert artifact.manifest["extra"]["shape_choice"]["shapes"]["x"] == {"min": [1, 1], "opt": [2, 1],
                                                                         "max": [4, 1]}


def test_parser_failure_names_the_node(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="ok_relu"),
             helper.make_node("Mystery", ["r"], ["y"], name="the_bad_node", domain="vlc.test")]
    graph = helper.make_graph(nodes, "g", [x], [y])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("vlc.test", 1)]), str(path))
    with pytest.raises(CompileError) as info:
        get_target("trt-rtx").compile(CompileSource(path, "bad", []), TargetSpec("trt-rtx"), tmp_path / "out")
    message = info.value.line()
    assert "the_bad_node" in message and "Mystery" in message and "\n" not in message
    kept = tmp_path / "out.failed-build.log"
    assert kept.is_file() and "the_bad_node" in kept.read_text()
    assert not (tmp_path / "out").exists()
    with pytest.raises(CompileError):  # a second failure replaces vlc's own log, nothing else
        get_target("trt-rtx").compile(CompileSource(path, "bad", []), TargetSpec("trt-rtx"), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "out.failed-build.log"]


def test_unknown_preset(tiny_graphs, tmp_path):
    with pytest.raises(InputError, match="unknown preset 'a11'"):
        _compile(tiny_graphs, tmp_path, preset="a11")


def test_rtx_cannot_target_hopper(tiny_graphs, tmp_path):
    with pytest.raises(InputError, match=r"cannot target preset 'h100'.*compute capability 9.0") as info:
        _compile(tiny_graphs, tmp_path, preset="h100")
    assert "a10" in info.value.fix


def test_other_rtx_presets_build(tiny_graphs, tmp_path):
    artifact = _compile(tiny_graphs, tmp_path, preset="rtx5090")
    assert artifact.manifest["extra"]["trt"]["compute_capabilities"] == ["12.0"]


@pytest.mark.parametrize("options, precision, match", [
    ({"legacy_precision_flags": True}, "fp16", "legacy_precision_flags needs TensorRT < 11"),
    ({"tf32": "on"}, "fp32", "use --precision tf32"),
    ({"workspace": "lots"}, "fp32", "-O workspace=lots is not an integer"),
    ({"builder_optimization_level": 7}, "fp32", "outside TensorRT's levels 0-5"),
    ({"calibration_method": "kl"}, "int8", "-O calibration_method=kl is not one of minmax, entropy"),
    ({"plugin_libraries": "/nonexistent/libplugin.so"}, "fp32", "plugin library .* does not exist"),
    ({"no_such_option": 1}, "fp32", "unknown option"),
])
def test_option_errors(tiny_graphs, tmp_path, options, precision, match):
    with pytest.raises(InputError, match=match):
        _compile(tiny_graphs, tmp_path, precision=precision, options=options)


def test_int8_calibration_directory_option(tiny_graphs, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        np.savez(calib / f"{i}.npz", **tm.generate("cnn", 2, seed=50 + i))
    artifact = _compile(tiny_graphs, tmp_path, "cnn", precision="int8",
                        options={"calibration": str(calib), "calibration_method": "percentile"})
    report = artifact.manifest["extra"]["precision"]
    assert report["method"] == "percentile" and str(calib) in report["calibration"]["source"]
    ones = tmp_path / "ones"
    ones.mkdir()
    np.savez(ones / "0.npz", image=np.ones((2, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match="constant"):
        _compile(tiny_graphs, tmp_path, "cnn", precision="int8", options={"calibration": str(ones)})


def test_open_without_gpu_says_why(tiny_graphs, tmp_path):
    from vlc.targets.trt.cuda import gpus

    if gpus()[0]:
        pytest.skip("a GPU is present: runtime tests in test_trt_runtime.py cover open()")
    artifact = _compile(tiny_graphs, tmp_path)
    target = get_target("trt-rtx")
    status = target.available()
    assert status.ok and status.devices == [] and "running them needs a GPU" in status.reason
    with pytest.raises(TargetUnavailable, match="needs a CUDA GPU"):
        target.run(artifact, tm.generate("mlp", 2))

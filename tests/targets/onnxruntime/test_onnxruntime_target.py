"""The onnxruntime target through its Python interface, on graphs built here with onnx.helper."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vlc.artifact import Artifact
from vlc.errors import InputError, TargetUnavailable
from vlc.model import specs_from_signature
from vlc.plugin_manager import get_target
from vlc.signature import onnx_signature
from vlc.spec import Precision, TargetSpec
from vlc.target import CompileSource

RNG = np.random.default_rng(0)
W1 = (RNG.standard_normal((8, 16)) * 0.5).astype(np.float32)
B1 = RNG.standard_normal(16).astype(np.float32)
W2 = (RNG.standard_normal((16, 4)) * 0.5).astype(np.float32)
B2 = RNG.standard_normal(4).astype(np.float32)


def numpy_mlp(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W1 + B1, 0) @ W2 + B2


def write_mlp(path: Path, *, external: bool = False) -> Path:
    """x[batch, 8] -> MatMul/Add/Relu/MatMul/Add -> y[batch, 4], seeded non-degenerate weights."""
    inits = [numpy_helper.from_array(a, n) for a, n in ((W1, "w1"), (B1, "b1"), (W2, "w2"), (B2, "b2"))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def source_of(path: Path) -> CompileSource:
    return CompileSource(onnx_path=path, ref=str(path), input_specs=specs_from_signature(onnx_signature(path).inputs))


def feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, 8)).astype(np.float32)}


@pytest.fixture
def target():
    return get_target("onnxruntime")


def test_compile_writes_graph_optimized_copy_and_manifest(tmp_path, target):
    src = write_mlp(tmp_path / "src" / "mlp.onnx")
    artifact = target.compile(source_of(src), TargetSpec("onnxruntime", batch=(1, 4, 8)), tmp_path / "art")
    files = {p.name for p in artifact.path.iterdir()}
    assert {"model.onnx", "model.optimized.onnx", "manifest.json", "build.log"} <= files
    assert artifact.manifest["files"] == {"main": "model.onnx", "optimized": "model.optimized.onnx"}
    extra = artifact.manifest["extra"]
    assert extra["providers"] == ["CPUExecutionProvider"]
    assert extra["onnxruntime_version"] == ort.__version__
    assert artifact.manifest["tool_versions"]["onnxruntime"] == ort.__version__
    assert artifact.manifest["batch_range"] == [1, 8]
    onnx.checker.check_model(str(artifact.path / "model.optimized.onnx"))
    for batch in (1, 5, 8):
        x = feeds(batch, seed=batch)
        out = target.run(artifact, x)
        assert list(out) == ["y"] and out["y"].dtype == np.float32
        np.testing.assert_allclose(out["y"], numpy_mlp(x["x"]), rtol=1e-5, atol=1e-5)
        assert out["y"].std() > 0.1


def test_external_data_travels_with_the_artifact(tmp_path, target):
    src = write_mlp(tmp_path / "src" / "big.onnx", external=True)
    assert (tmp_path / "src" / "big.onnx.data").is_file()
    artifact = target.compile(source_of(src), TargetSpec("onnxruntime"), tmp_path / "art")
    assert (artifact.path / "big.onnx.data").is_file()
    shutil.rmtree(tmp_path / "src")  # the artifact must not need its source any more
    x = feeds(3)
    np.testing.assert_allclose(target.run(Artifact.load(artifact.path), x)["y"], numpy_mlp(x["x"]),
                               rtol=1e-5, atol=1e-5)


def test_reused_when_nothing_changed_and_rebuilt_with_force(tmp_path, target):
    src = source_of(write_mlp(tmp_path / "mlp.onnx"))
    first = target.compile(src, TargetSpec("onnxruntime"), tmp_path / "art")
    stamp = (first.path / "manifest.json").stat().st_mtime_ns
    again = target.compile(src, TargetSpec("onnxruntime"), tmp_path / "art")
    assert (again.path / "manifest.json").stat().st_mtime_ns == stamp
    target.compile(src, TargetSpec("onnxruntime"), tmp_path / "art", force=True)
    assert (first.path / "manifest.json").stat().st_mtime_ns != stamp
    other = target.compile(src, TargetSpec("onnxruntime", options={"graph_optimization_level": "basic"}),
                           tmp_path / "art")
    assert other.manifest["extra"]["graph_optimization_level"] == "basic"


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_every_optimization_level_gives_the_same_numbers(tmp_path, target, level):
    src = source_of(write_mlp(tmp_path / "mlp.onnx"))
    spec = TargetSpec("onnxruntime", options={"graph_optimization_level": level, "intra_op_threads": 1})
    artifact = target.compile(src, spec, tmp_path / level)
    assert artifact.manifest["extra"]["intra_op_threads"] == 1
    x = feeds(2)
    np.testing.assert_allclose(target.run(artifact, x)["y"], numpy_mlp(x["x"]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"graph_optimization_level": "max"}, "graph_optimization_level=max is not one of"),
    ({"intra_op_threads": -2}, "intra_op_threads=-2 is not a non-negative integer"),
    ({"intra_op_threads": "four"}, "intra_op_threads=four"),
    ({"bogus": 1}, "unknown option(s) bogus"),
    ({"providers": "cuda,cpu"}, "needs --device cuda"),
    ({"providers": "warp-drive"}, "unknown execution provider 'warp-drive'"),
])
def test_bad_options_fail_before_building(tmp_path, target, options, message):
    src = source_of(write_mlp(tmp_path / "mlp.onnx"))
    with pytest.raises(InputError) as info:
        target.compile(src, TargetSpec("onnxruntime", options=options), tmp_path / "art")
    assert message in info.value.line()
    assert not (tmp_path / "art").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".art")]


def test_providers_override_names_and_unavailable_providers(tmp_path, target):
    src = source_of(write_mlp(tmp_path / "mlp.onnx"))
    artifact = target.compile(src, TargetSpec("onnxruntime", options={"providers": "cpu"}), tmp_path / "a")
    assert artifact.manifest["extra"]["providers_requested"] == ["CPUExecutionProvider"]
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        spec = TargetSpec("onnxruntime", device="cuda", options={"providers": "tensorrt,cpu"})
        with pytest.raises(TargetUnavailable, match="TensorrtExecutionProvider not available"):
            target.compile(src, spec, tmp_path / "b")
        assert not (tmp_path / "b").exists()


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_device_cuda_without_the_cuda_provider_is_unavailable(tmp_path, target):
    assert target.available().devices == ["cpu"]
    with pytest.raises(TargetUnavailable, match="CUDAExecutionProvider"):
        target.compile(source_of(write_mlp(tmp_path / "m.onnx")), TargetSpec("onnxruntime", device="cuda"),
                       tmp_path / "art")
    assert not (tmp_path / "art").exists()


def test_fp16_through_the_shared_precision_pass(tmp_path, target):
    assert {Precision.FP16, Precision.INT8} <= set(target.precisions)
    artifact = target.compile(source_of(write_mlp(tmp_path / "m.onnx")), TargetSpec("onnxruntime", Precision.FP16),
                              tmp_path / "art")
    kinds = {i.data_type for i in onnx.load(str(artifact.file())).graph.initializer}
    assert TensorProto.FLOAT16 in kinds  # the weights really are fp16
    x = feeds(4)
    out = target.run(artifact, x)["y"]
    assert out.dtype == np.float32  # the boundary stays fp32
    np.testing.assert_allclose(out, numpy_mlp(x["x"]), rtol=2e-2, atol=2e-2)
    assert artifact.manifest["extra"]["precision"]["precision"] == "fp16"


def test_precisions_outside_the_list_are_refused(tmp_path, target):
    with pytest.raises(InputError, match="does not support precision bf16|not yet supported"):
        target.compile(source_of(write_mlp(tmp_path / "m.onnx")), TargetSpec("onnxruntime", Precision.BF16),
                       tmp_path / "art")


def test_run_checks_inputs_against_the_artifact(tmp_path, target):
    artifact = target.compile(source_of(write_mlp(tmp_path / "m.onnx")),
                              TargetSpec("onnxruntime", batch=(1, 2, 4)), tmp_path / "art")
    with pytest.raises(InputError, match="batch 8 is outside the compiled range 1..4"):
        target.run(artifact, feeds(8))
    with pytest.raises(InputError, match="dtype float64"):
        target.run(artifact, {"x": feeds(2)["x"].astype(np.float64)})
    with pytest.raises(InputError, match="size 7 on axis 1"):
        target.run(artifact, {"x": np.ones((2, 7), np.float32)})
    with pytest.raises(InputError, match="unknown input"):
        target.run(artifact, {**feeds(2), "z": np.ones(1)})
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    assert manifest["signature"]["inputs"][0] == {"name": "x", "dtype": "float32", "shape": ["batch", 8]}


def test_an_artifact_of_another_target_is_refused(tmp_path, target):
    artifact = target.compile(source_of(write_mlp(tmp_path / "m.onnx")), TargetSpec("onnxruntime"), tmp_path / "a")
    with pytest.raises(InputError, match="built for target 'onnxruntime', not 'torch'"):
        get_target("torch").run(artifact, feeds(1))


GENERATED_MODEL = '''
import numpy as np
import torch

from vlc.model import BATCH, InputSpec, ModelSource


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return torch.tanh(self.fc(x) / 40.0)


def factory():
    def generate(batch, seed):  # what the model really sees: far from the spec's normal(0, 1)
        rng = np.random.default_rng(seed)
        return {"x": (100.0 + 30.0 * rng.standard_normal((batch, 8))).astype(np.float32)}

    return ModelSource(name="shifted", ref="", module=Net().eval(),
                       inputs=[InputSpec("x", (BATCH, 8), "float32", "normal", 0.0, 1.0)],
                       output_names=["y"], generator=generate)
'''


def test_precision_check_and_compare_see_the_models_own_inputs(tmp_path, vlc_cli):
    """One input source: the fp16 build checks on the model's generator, and `vlc compare` of the
    artifact uses the same generator, so both report the same numbers for the same batch and seed."""
    model = tmp_path / "shifted.py"
    model.write_text(GENERATED_MODEL)
    art = tmp_path / "art"
    code, _, err = vlc_cli("compile", f"{model}:factory", "-t", "onnxruntime", "-p", "fp16", "-o", art,
                           "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    check = Artifact.load(art).manifest["extra"]["precision"]
    assert "shifted's input generator" in check["check"]["inputs"]
    built = check["accuracy"]["outputs"][0]
    code, out, err = vlc_cli("compare", art, "--reference", "onnx", "--batch", "2", "--seed", "0", "--json")
    assert code == 0, err
    compared = json.loads(out)["outputs"][0]
    assert compared["ref_std"] == pytest.approx(built["ref_std"], rel=1e-5)
    assert compared["max_abs"] == pytest.approx(built["max_abs"], rel=1e-3, abs=1e-7)


OUTLIER_MODEL = '''
import numpy as np
import torch

from vlc.model import BATCH, InputSpec, ModelSource


class Net(torch.nn.Module):
    """Reads only features 1..7; feature 0 carries an outlier that sets the int8 input scale."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 4)
        with torch.no_grad():
            self.fc.weight[:, 0] = 0.0

    def forward(self, x):
        return self.fc(x)


def factory():
    def generate(batch, seed):
        x = np.random.default_rng(seed).standard_normal((batch, 8)).astype(np.float32)
        x[:, 0] = 2000.0
        return {"x": x}

    return ModelSource(name="outlier", ref="", module=Net().eval(),
                       inputs=[InputSpec("x", (BATCH, 8), "float32", "normal", 0.0, 1.0)],
                       output_names=["y"], generator=generate)
'''


def test_int8_that_misses_its_gate_is_refused_or_kept_and_said_so(tmp_path, vlc_cli):
    model = tmp_path / "outlier.py"
    model.write_text(OUTLIER_MODEL)
    ref, cache = f"{model}:factory", tmp_path / "cache"
    code, _, err = vlc_cli("compile", ref, "-t", "onnxruntime", "-p", "int8", "-o", tmp_path / "strict",
                           "--cache-dir", cache)
    assert code != 0 and "int8 graph misses its tolerance" in err and len(err.strip().splitlines()) == 1
    assert "outlier's input generator" in err and ".building-" not in err
    assert not (tmp_path / "strict").exists()

    code, out, err = vlc_cli("compile", ref, "-t", "onnxruntime", "-p", "int8", "-O", "strict_precision=false",
                             "-o", tmp_path / "kept", "--cache-dir", cache)
    assert code == 0, err
    assert "int8 vs fp32 on outlier's input generator" in out and ": FAIL" in out
    assert "misses its tolerance against fp32 and was kept" in err
    precision = Artifact.load(tmp_path / "kept").manifest["extra"]["precision"]
    assert precision["passed"] is False and precision["accuracy"]["outputs"][0]["cosine"] < 0.98
    code, _, _ = vlc_cli("compare", tmp_path / "kept", "--reference", "onnx")
    assert code == 4  # the kept artifact still fails the accuracy gate where it is compared


def test_int8_calibration_from_a_directory(tmp_path, vlc_cli):
    model = tmp_path / "outlier.py"
    model.write_text(OUTLIER_MODEL)
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        np.savez(calibration / f"{i}.npz", x=rng.standard_normal((2, 8)).astype(np.float32) * 3)
    code, _, err = vlc_cli("compile", f"{model}:factory", "-t", "onnxruntime", "-p", "int8",
                           "-O", f"calibration={calibration}", "-O", "strict_precision=false",
                           "-o", tmp_path / "art", "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    used = Artifact.load(tmp_path / "art").manifest["extra"]["precision"]["calibration"]
    assert str(calibration) in json.dumps(used) and "4 files" in json.dumps(used)

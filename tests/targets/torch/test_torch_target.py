"""The torch target through its Python interface, on the shared test models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import model_ref
from vlc.artifact import Artifact
from vlc.errors import CompileError, InputError, TargetUnavailable
from vlc.frontend.loader import load_model
from vlc.frontend.pipeline import prepare
from vlc.model import flatten_outputs, named_outputs, specs_from_signature
from vlc.plugin_manager import get_target
from vlc.signature import onnx_signature
from vlc.spec import Precision, TargetSpec
from vlc.target import CompileSource
from vlc.timing import ProfileSettings

HERE = Path(__file__).resolve().parent
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def sources():
    return {name: prepare(model_ref(name)) for name in ("mlp", "cnn", "transformer")}


@pytest.fixture
def target():
    return get_target("torch")


def eager(ref: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    source = load_model(ref)
    args = [torch.from_numpy(feeds[s.name]) for s in source.inputs]
    with torch.no_grad():
        out = source.module.eval()(*args)
    return {k: v.numpy() for k, v in named_outputs(out, source.output_names).items()}


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_fp32_cpu_is_the_eager_model(tmp_path, target, sources, name):
    source = sources[name]
    artifact = target.compile(source, TargetSpec("torch", batch=(1, 4, 8)), tmp_path / "art")
    assert artifact.manifest["files"]["main"] == "weights.pt"
    assert artifact.manifest["extra"]["model_ref"] == model_ref(name)
    assert "checked: re-created" in (artifact.path / "build.log").read_text()
    for batch in (1, 3, 8):
        feeds = source.generate_inputs(batch, seed=batch)
        out = target.run(artifact, feeds)
        ref = eager(model_ref(name), feeds)
        assert list(out) == list(ref) == list(source.model.output_names)
        for key in ref:
            assert out[key].dtype == np.float32 and out[key].shape[0] == batch
            np.testing.assert_allclose(out[key], ref[key], rtol=1e-6, atol=1e-6)
            assert ref[key].std() > 1e-3


@pytest.mark.parametrize("precision, dtype, tol", [(Precision.FP16, torch.float16, 1e-2),
                                                   (Precision.BF16, torch.bfloat16, 5e-2)])
def test_half_precisions_cast_weights_and_inputs(tmp_path, target, sources, precision, dtype, tol):
    source = sources["cnn"]
    artifact = target.compile(source, TargetSpec("torch", precision), tmp_path / "art")
    state = torch.load(artifact.file(), weights_only=True)
    floats = {v.dtype for v in state.values() if v.is_floating_point()}
    assert floats == {dtype}
    feeds = source.generate_inputs(4, seed=0)
    out = target.run(artifact, feeds)["output"]
    ref = eager(model_ref("cnn"), feeds)["output"]
    assert out.dtype == np.float32
    assert not np.array_equal(out, ref)  # really ran in lower precision
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def test_what_runs_is_the_compiled_state_dict(tmp_path, target, sources):
    source = sources["mlp"]
    artifact = target.compile(source, TargetSpec("torch"), tmp_path / "art")
    state = torch.load(artifact.file(), weights_only=True)
    last_bias = [k for k in state if k.endswith("bias")][-1]
    state[last_bias] = state[last_bias] + 1.0
    torch.save(state, artifact.file())
    feeds = source.generate_inputs(2, seed=0)
    out = target.run(artifact, feeds)["output"]
    np.testing.assert_allclose(out, eager(model_ref("mlp"), feeds)["output"] + 1.0, rtol=1e-5, atol=1e-5)


def test_weights_that_no_longer_fit_the_model_fail_clearly(tmp_path, target, sources):
    artifact = target.compile(sources["mlp"], TargetSpec("torch"), tmp_path / "art")
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    manifest["extra"]["model_ref"] = model_ref("cnn")  # as if the factory now built another model
    (artifact.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CompileError, match="do not fit the model"):
        target.run(Artifact.load(artifact.path), sources["mlp"].generate_inputs(1))


def test_onnx_sources_are_refused_with_a_pointer_to_onnxruntime(tmp_path, target, sources):
    onnx_path = sources["mlp"].onnx_path
    bare = CompileSource(onnx_path=onnx_path, ref=str(onnx_path),
                         input_specs=specs_from_signature(onnx_signature(onnx_path).inputs))
    with pytest.raises(InputError) as info:
        target.compile(bare, TargetSpec("torch"), tmp_path / "art")
    assert "target torch needs a PyTorch model; got an ONNX file" in info.value.line()
    assert "--target onnxruntime" in info.value.line()
    assert not (tmp_path / "art").exists() and not list(tmp_path.glob(".art*"))


def test_tf32_needs_cuda_and_bad_modes_are_refused(tmp_path, target, sources):
    with pytest.raises(InputError, match="tf32 needs --device cuda"):
        target.compile(sources["mlp"], TargetSpec("torch", Precision.TF32), tmp_path / "a")
    with pytest.raises(InputError, match="mode=jit is not one of eager, compile, reduce-overhead"):
        target.compile(sources["mlp"], TargetSpec("torch", options={"mode": "jit"}), tmp_path / "b")
    with pytest.raises(InputError, match="does not support precision int8"):
        target.compile(sources["mlp"], TargetSpec("torch", Precision.INT8), tmp_path / "c")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_is_unavailable_without_a_gpu(tmp_path, target, sources):
    assert target.available().devices == ["cpu"]
    with pytest.raises(TargetUnavailable, match="no CUDA device"):
        target.compile(sources["mlp"], TargetSpec("torch", device="cuda"), tmp_path / "art")
    assert not (tmp_path / "art").exists()


def test_torch_compile_mode_matches_eager(tmp_path, target, sources):
    source = sources["mlp"]
    artifact = target.compile(source, TargetSpec("torch", options={"mode": "compile"}), tmp_path / "art")
    assert artifact.manifest["extra"]["mode"] == "compile"
    feeds = source.generate_inputs(3, seed=0)
    np.testing.assert_allclose(target.run(artifact, feeds)["output"], eager(model_ref("mlp"), feeds)["output"],
                               rtol=1e-5, atol=1e-5)


def test_dict_outputs_keep_their_names(tmp_path, target):
    ref = f"{HERE / 'torch_models.py'}:dict_heads"
    source = prepare(ref)
    artifact = target.compile(source, TargetSpec("torch"), tmp_path / "art")
    feeds = source.generate_inputs(2)
    out = target.run(artifact, feeds)
    assert list(out) == ["logits", "embedding"]
    assert out["embedding"].shape == (2, 12) and out["logits"].shape == (2, 3)


def test_output_flattening_follows_the_exporter_order():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert [t.item() for t in flatten_outputs((a, (b, [c])))] == [0, 1, 2]
    assert [t.item() for t in flatten_outputs({"x": a, "y": (b, c)})] == [0, 1, 2]
    assert list(named_outputs({"q": a, "p": b}, ["p", "q"])) == ["p", "q"]  # by name when keys match


def test_profile_on_cpu_includes_transfers(tmp_path, target, sources):
    source = sources["cnn"]
    artifact = target.compile(source, TargetSpec("torch"), tmp_path / "art")
    result = target.profile(artifact, source.generate_inputs(2), ProfileSettings(warmup=2, iterations=5))
    assert result.batch == 2 and result.includes_transfers and result.latency.count == 5
    assert result.latency.median > 0 and result.throughput > 0


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.TF32, Precision.FP16, Precision.BF16])
def test_cuda_precisions(tmp_path, target, sources, precision):
    source = sources["transformer"]
    artifact = target.compile(source, TargetSpec("torch", precision, device="cuda"), tmp_path / "art")
    assert artifact.manifest["extra"]["gpu"]
    feeds = source.generate_inputs(8, seed=0)
    out = target.run(artifact, feeds)
    ref = eager(model_ref("transformer"), feeds)
    tol = {Precision.FP32: 1e-4, Precision.TF32: 1e-2, Precision.FP16: 2e-2, Precision.BF16: 1e-1}[precision]
    for key in ref:
        np.testing.assert_allclose(out[key], ref[key], rtol=tol, atol=tol)
    timed = target.profile(artifact, feeds, ProfileSettings(warmup=2, iterations=5, include_transfers=False))
    assert timed.includes_transfers is False and timed.device == "cuda"

"""The torch target's compiled modes: option checks, outputs equal to eager, one static-shape
compilation per batch size, and what a profile says about how it was timed.

torch.compile runs inductor on the CPU here (it needs a C++ compiler); the model is the small
MLP so that each compilation takes seconds.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.conftest import model_ref
from vlc.errors import InputError
from vlc.frontend.loader import load_model
from vlc.plugin_manager import get_target
from vlc.spec import Precision, TargetSpec
from vlc.targets.torch.session import MODES, TorchSession, check_mode
from vlc.timing import ProfileSettings

CUDA = torch.cuda.is_available()
needs_inductor = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("gcc") is None,
                                    reason="torch.compile on the CPU needs a C++ compiler (gcc or g++)")


@pytest.fixture(scope="module")
def mlp():
    from vlc.frontend.pipeline import prepare

    return prepare(model_ref("mlp"))


@pytest.fixture
def target():
    return get_target("torch")


def eager(feeds: dict[str, np.ndarray]) -> np.ndarray:
    module = load_model(model_ref("mlp")).module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(feeds["x"])).numpy()


def test_every_mode_is_accepted_and_others_are_refused_in_one_line(target, mlp):
    assert MODES == ("eager", "compile", "reduce-overhead", "max-autotune")
    for mode in ("eager", "compile", "max-autotune"):
        spec = target.validate_spec(TargetSpec("torch", options={"mode": mode}), mlp.signature)
        assert spec.options["mode"] == mode
    with pytest.raises(InputError) as info:
        target.validate_spec(TargetSpec("torch", options={"mode": "jit"}), mlp.signature)
    line = info.value.line()
    assert "\n" not in line and "-O mode=jit is not one of eager, compile, reduce-overhead, max-autotune" in line


def test_cuda_graph_mode_is_refused_on_the_cpu(tmp_path, target, mlp):
    with pytest.raises(InputError) as info:
        target.compile(mlp, TargetSpec("torch", options={"mode": "reduce-overhead"}), tmp_path / "art")
    line = info.value.line()
    assert "\n" not in line and "mode=reduce-overhead needs --device cuda" in line
    assert not (tmp_path / "art").exists()
    assert check_mode("reduce-overhead", "cuda") == "reduce-overhead"


@needs_inductor
@pytest.mark.parametrize("mode", ["compile", "max-autotune"])
def test_compiled_modes_give_the_eager_outputs(tmp_path, target, mlp, mode):
    artifact = target.compile(mlp, TargetSpec("torch", options={"mode": mode}), tmp_path / "art")
    assert artifact.manifest["extra"]["mode"] == mode
    feeds = mlp.generate_inputs(3, seed=1)
    ref = eager(feeds)
    assert ref.std() > 1e-2  # outputs with spread: a constant or zero output cannot pass
    np.testing.assert_allclose(target.run(artifact, feeds)["output"], ref, rtol=1e-5, atol=1e-5)


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@needs_inductor
def test_each_batch_size_compiles_its_own_static_graph(tmp_path, target, mlp):
    artifact = target.compile(mlp, TargetSpec("torch", options={"mode": "compile"}), tmp_path / "art")
    session = target.open(artifact)
    try:
        before = graphs_compiled()
        for batch in (2, 3, 5):
            feeds = mlp.generate_inputs(batch, seed=batch)
            np.testing.assert_allclose(session.run(feeds)["output"], eager(feeds), rtol=1e-5, atol=1e-5)
        # with dynamic shapes the third size would reuse the second's graph: two, not three
        assert graphs_compiled() - before == 3
        assert sorted(k[0][0][0] for k in session.compiled) == [2, 3, 5]
        again = graphs_compiled()
        session.run(mlp.generate_inputs(3, seed=7))  # a shape seen before is not compiled again
        assert graphs_compiled() == again and len(session.compiled) == 3
    finally:
        session.close()


@needs_inductor
def test_profile_says_how_it_timed_and_compiles_before_timing(tmp_path, target, mlp):
    artifact = target.compile(mlp, TargetSpec("torch", options={"mode": "compile"}), tmp_path / "art")
    session = target.open(artifact)
    try:
        result = session.profile(mlp.generate_inputs(4), ProfileSettings(warmup=0, iterations=7), 4)
    finally:
        session.close()
    assert result.batch == 4 and result.latency.count == 7 and result.includes_transfers
    assert result.extra["timing"] == "host clock" and result.extra["torch_mode"] == "compile"
    assert result.extra["dynamic"] is False and result.extra["torch_compile_mode"] == "default"
    # compiling took far longer than a call; with warm-up 0 it still stays out of the samples
    assert result.extra["compile_seconds"] * 1000 > 10 * result.latency.max


def test_eager_profile_through_the_target(tmp_path, target, mlp):
    artifact = target.compile(mlp, TargetSpec("torch"), tmp_path / "art")
    result = target.profile(artifact, mlp.generate_inputs(2), ProfileSettings(warmup=1, iterations=4))
    assert result.extra["timing"] == "host clock" and result.extra["torch_mode"] == "eager"
    assert "compile_seconds" not in result.extra and result.device == "cpu"


def test_session_leaves_global_flags_as_it_found_them(target):
    module = load_model(model_ref("mlp")).module.eval()
    saved = torch.backends.cudnn.benchmark
    session = TorchSession(module, ["x"], ["output"], "cpu", Precision.FP32, "compile")
    session.close()
    assert torch.backends.cudnn.benchmark == saved and session.compiled == {}


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["compile", "reduce-overhead", "max-autotune"])
def test_cuda_modes_match_eager_and_time_on_the_device(tmp_path, target, mode):
    from vlc.frontend.pipeline import prepare

    source = prepare(model_ref("transformer"))
    spec = TargetSpec("torch", Precision.FP16, device="cuda", options={"mode": mode})
    artifact = target.compile(source, spec, tmp_path / "art")
    feeds = source.generate_inputs(8, seed=0)
    ref_module = load_model(model_ref("transformer")).module.eval()
    with torch.no_grad():
        ref = ref_module(*(torch.from_numpy(feeds[s.name]) for s in source.model.inputs))[0].numpy()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark
    session = target.open(artifact)
    try:
        for _ in range(3):  # CUDA graphs are recorded and replayed: every call's output is right
            np.testing.assert_allclose(next(iter(session.run(feeds).values())), ref, rtol=2e-2, atol=2e-2)
        timed = session.profile(feeds, ProfileSettings(warmup=2, iterations=5, include_transfers=False), 8)
    finally:
        session.close()
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark) == tf32
    assert timed.includes_transfers is False and timed.device == "cuda"
    assert timed.extra["timing"] == "host clock, synchronised after each call"
    assert timed.extra["torch_mode"] == mode and timed.extra["cudnn_benchmark"] is True

"""vlc.api: compile, run, profile and compare from Python, as the commands do."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import model_ref
from vlc import api
from vlc.errors import AccuracyError, InputError
from vlc.timing import ProfileSettings


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "mlp"
    return api.compile(model_ref("mlp"), "onnxruntime", batch="1,4,8", options={"intra_op_threads": 1},
                       output=out)


def test_compile_returns_the_artifact_with_typed_options(artifact):
    assert artifact.target == "onnxruntime" and artifact.manifest.batch_range == [1, 8]
    assert artifact.spec.options["intra_op_threads"] == 1 and artifact.spec.options["cuda_graph"] is True
    again = api.build(model_ref("mlp"), "onnxruntime", batch=(1, 4, 8), options=["intra_op_threads=1"],
                      output=artifact.path)
    assert again.reused and again.artifact.manifest.created == artifact.manifest.created


def test_run_matches_the_pytorch_model_on_its_own_inputs(artifact):
    feeds = api.inputs(artifact, batch=3, seed=1)
    outputs = api.run(artifact, feeds)
    reference = api.torch_reference(artifact.manifest.source.ref, feeds)
    for name, value in reference.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-4, atol=1e-5)
        assert float(np.std(value)) > 0  # outputs with spread: the comparison can fail
    assert set(api.run(artifact.path, batch=2)) == set(reference)


def test_profile_times_each_batch_and_records_it(artifact):
    seen = []
    measured = api.profile(artifact, batches=[1, 8, 1], settings=ProfileSettings(warmup=2, iterations=5),
                           on_batch=lambda b, feeds: seen.append((b, next(iter(feeds.values())).shape[0])))
    assert seen == [(1, 1), (8, 8)]  # each batch once, inputs of that batch
    assert [r.batch for r in measured.records] == [1, 8]
    for result in measured.results:
        assert result.latency.count == 5 and 0 < result.latency.min <= result.latency.median <= result.latency.p99
    assert measured.records[0].artifact["spec"]["options"]["intra_op_threads"] == 1


def test_a_batch_outside_the_compiled_range_is_refused_before_timing(artifact):
    with pytest.raises(InputError, match="batch 9 is outside the compiled range 1..8"):
        api.profile(artifact, batches=[1, 9])


def test_compare_against_torch_and_onnx(artifact):
    torch_side = api.compare(artifact)
    assert torch_side.reference == "torch" and torch_side.passed
    onnx_side = api.compare(artifact, "onnx", batch=2)
    assert onnx_side.passed and onnx_side.to_json()["inputs"]["x"][0] == 2
    onnx_side.raise_for_failure()  # passes: nothing raised


def test_compare_fails_with_the_outputs_named(artifact, tmp_path):
    feeds = api.inputs(artifact)
    wrong = {name: value + 1.0 for name, value in api.run(artifact, feeds).items()}
    np.savez(tmp_path / "wrong.npz", **wrong)
    result = api.compare(artifact, expected=[str(tmp_path / "wrong.npz")])
    assert not result.passed
    with pytest.raises(AccuracyError, match="differ from expected outputs"):
        result.raise_for_failure()


def test_bad_input_is_refused_before_the_front_end(tmp_path):
    with pytest.raises(InputError, match="-O intra_op_threads=-1 is not a non-negative integer"):
        api.compile("no-such-model-is-loaded", "onnxruntime", options={"intra_op_threads": -1},
                    output=tmp_path / "a")
    with pytest.raises(InputError, match="cannot write deploy bundles"):
        api.compile("no-such-model-is-loaded", "onnxruntime", emit=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

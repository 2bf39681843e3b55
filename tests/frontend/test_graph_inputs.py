"""Inputs derived from an ONNX graph, and the normalized graph checked against the original file.

Each hand-made graph fails under vlc's old generic inputs (ints in [0, 2), every dynamic dim the
batch, normal(0, 1) floats): an Expand shape, an If on a sample rate, a reflect Pad that needs a
length of 2, a saturating threshold. The derived inputs make each run, with spread."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as P
from onnx import helper as h
from onnx import numpy_helper as nh

from vlc.errors import ExportError
from vlc.frontend import pipeline
from vlc.frontend.graph_inputs import derive_input_specs
from vlc.frontend.onnx_parity import onnx_parity
from vlc.frontend.pipeline import FrontendOptions, prepare
from vlc.model import generate_from_specs, specs_from_signature
from vlc.signature import onnx_signature

RNG = np.random.default_rng(5)


def _save(tmp_path, name, nodes, inputs, outputs, inits=(), opset=17):
    graph = h.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _runs(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _generic_fails(path, batch=1):
    feeds = generate_from_specs(specs_from_signature(onnx_signature(path).inputs), batch, 0)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own exception types are not importable portably
        _runs(path, feeds)


def _derived(path):
    derived = derive_input_specs(path, onnx_signature(path))
    assert derived.runs, derived.how
    feeds = generate_from_specs(derived.specs, 1, 0)
    return derived, feeds, _runs(path, feeds)


def expand_model(tmp_path):
    """y = Expand(x, shape) * w: `shape` is data, not a tensor to fill with noise."""
    w = nh.from_array(RNG.standard_normal((1, 4)).astype(np.float32), "w")
    nodes = [h.make_node("Expand", ["x", "shape"], ["e"]), h.make_node("Mul", ["e", "w"], ["y"])]
    return _save(tmp_path, "expand", nodes,
                 [h.make_tensor_value_info("x", P.FLOAT, [3, 4]), h.make_tensor_value_info("shape", P.INT64, [2])],
                 [h.make_tensor_value_info("y", P.FLOAT, [3, 4])], [w])


def test_a_shape_input_gets_ones(tmp_path):
    path = expand_model(tmp_path)
    for seed in range(4):  # [0, 2) noise gives a 0 in the shape sooner or later
        feeds = generate_from_specs(specs_from_signature(onnx_signature(path).inputs), 1, seed)
        if 0 in feeds["shape"]:
            with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own exception types are not importable portably
                _runs(path, feeds)
            break
    derived, feeds, _ = _derived(path)
    assert feeds["shape"].tolist() == [1, 1]
    assert "Expand" in derived.reasons["shape"]


def test_an_if_on_a_sample_rate_takes_a_branch_that_runs(tmp_path):
    """sr == 16000 takes a branch that runs; any other value one that fails (as silero-vad's
    8 kHz branch does on a frame too short for it)."""
    then = h.make_graph([h.make_node("Relu", ["x"], ["t"])], "then", [], [h.make_tensor_value_info("t", P.FLOAT, None)])
    bad = nh.from_array(np.array([7, -1], np.int64), "bad_shape")
    other = h.make_graph([h.make_node("Reshape", ["x", "bad_shape"], ["e"])], "else", [],
                         [h.make_tensor_value_info("e", P.FLOAT, None)], initializer=[bad])
    k = nh.from_array(np.array(16000, np.int64), "k16")
    nodes = [h.make_node("Equal", ["sr", "k16"], ["is16"]),
             h.make_node("If", ["is16"], ["y"], then_branch=then, else_branch=other)]
    path = _save(tmp_path, "if_sr", nodes,
                 [h.make_tensor_value_info("x", P.FLOAT, ["batch", 4]), h.make_tensor_value_info("sr", P.INT64, [])],
                 [h.make_tensor_value_info("y", P.FLOAT, ["batch", 4])], [k])
    _generic_fails(path)
    derived, feeds, _ = _derived(path)
    assert feeds["sr"].item() == 16000 and "16000" in derived.reasons["sr"]


def test_a_dynamic_length_gets_a_size_the_graph_runs_with(tmp_path):
    """A reflect Pad needs a length of at least 2: the generic size (the batch, 1) fails."""
    pads = nh.from_array(np.array([0, 1, 0, 1], np.int64), "pads")
    nodes = [h.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")]
    path = _save(tmp_path, "reflect", nodes, [h.make_tensor_value_info("x", P.FLOAT, ["batch", "length"])],
                 [h.make_tensor_value_info("y", P.FLOAT, ["batch", "padded"])], [pads])
    _generic_fails(path)
    derived, feeds, _ = _derived(path)
    assert derived.sizes["length"] >= 2 and feeds["x"].shape == (1, derived.sizes["length"])
    assert derived.specs[0].shape == ("batch", derived.sizes["length"])  # batch stays dynamic


def test_saturating_inputs_are_replaced_by_a_distribution_with_spread(tmp_path):
    """Shrink with lambda 2 zeroes everything normal(0, 1) gives, nearly always: a constant output
    proves nothing, so a wider distribution is taken, and the reason says so."""
    nodes = [h.make_node("Shrink", ["x"], ["y"], lambd=2.0, bias=2.0)]
    path = _save(tmp_path, "shrink", nodes, [h.make_tensor_value_info("x", P.FLOAT, [1, 6])],
                 [h.make_tensor_value_info("y", P.FLOAT, [1, 6])])
    derived, feeds, (out,) = _derived(path)
    assert derived.spread and np.std(out) > 0
    assert "normal(0, 4)" in derived.reasons["x"]


def test_a_model_no_generated_input_exercises_is_said_plainly(tmp_path):
    """A graph whose output ignores its input: runs, never with spread, and says how to do better."""
    c = nh.from_array(np.full((1, 3), 2.0, np.float32), "c")
    nodes = [h.make_node("Mul", ["x", "zero"], ["z"]), h.make_node("Add", ["z", "c"], ["y"])]
    zero = nh.from_array(np.zeros((1, 3), np.float32), "zero")
    path = _save(tmp_path, "constant", nodes, [h.make_tensor_value_info("x", P.FLOAT, [1, 3])],
                 [h.make_tensor_value_info("y", P.FLOAT, [1, 3])], [c, zero])
    derived = derive_input_specs(path, onnx_signature(path))
    assert derived.runs and not derived.spread
    assert "--input" in derived.how


def test_indices_and_masks_follow_the_graph(tmp_path):
    table = nh.from_array(RNG.standard_normal((37, 8)).astype(np.float32), "table")
    nodes = [h.make_node("Gather", ["table", "ids"], ["emb"]),
             h.make_node("Cast", ["attention_mask"], ["m"], to=P.FLOAT),
             h.make_node("Unsqueeze", ["m", "ax"], ["m3"]),
             h.make_node("Mul", ["emb", "m3"], ["y"])]
    ax = nh.from_array(np.array([-1], np.int64), "ax")
    path = _save(tmp_path, "emb", nodes,
                 [h.make_tensor_value_info("ids", P.INT64, ["batch", 5]),
                  h.make_tensor_value_info("attention_mask", P.INT64, ["batch", 5])],
                 [h.make_tensor_value_info("y", P.FLOAT, ["batch", 5, 8])], [table, ax])
    derived, feeds, _ = _derived(path)
    ids = next(s for s in derived.specs if s.name == "ids")
    assert (ids.kind, ids.low, ids.high) == ("int", 0, 37)
    assert feeds["attention_mask"][:, 0].all() and not feeds["attention_mask"][:, -1].any()


def test_every_step_uses_the_derived_inputs(tmp_path, vlc_cli):
    """The specs land in the normalized graph's metadata and the artifact, so compile's check,
    `vlc run` and `vlc compare` all run on inputs the graph accepts."""
    path = expand_model(tmp_path)
    out = tmp_path / "art"
    code, o, e = vlc_cli("compile", path, "--target", "onnxruntime", "-o", out, "--cache-dir", tmp_path / "c")
    assert code == 0, o + e
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = {s["name"]: s["kind"] for s in manifest["source"]["input_specs"]}
    assert kinds == {"x": "normal", "shape": "fill"}
    code, o, e = vlc_cli("run", out)
    assert code == 0, o + e
    code, o, e = vlc_cli("compare", out)
    assert code == 0, o + e


def test_the_normalized_graph_is_checked_against_the_original(tmp_path, monkeypatch):
    path = expand_model(tmp_path)
    source = prepare(str(path), tmp_path / "cache")
    parity = source.frontend["parity"]
    assert parity["passed"] and parity["reference"].startswith("the original file")
    assert json.loads(dict((p.key, p.value) for p in onnx.load(str(source.onnx_path)).metadata_props)
                      [pipeline.META_INPUT_SPECS])

    real = pipeline.run_passes

    def corrupting(model, names):  # a front-end rewrite that changes results
        model, reports = real(model, names)
        for value in model.graph.initializers.values():
            if value.const_value is not None and value.name == "w":
                import onnx_ir as ir
                value.const_value = ir.tensor(value.const_value.numpy() * 1.5)
        return model, reports

    monkeypatch.setattr(pipeline, "run_passes", corrupting)
    with pytest.raises(ExportError, match="disagrees with the original file"):
        prepare(str(path), tmp_path / "cache2", FrontendOptions(simplify=False))


def test_parity_with_an_original_onnx_runtime_cannot_run_is_skipped_with_the_reason(tmp_path):
    path = expand_model(tmp_path)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    result = onnx_parity(broken, path, derive_input_specs(path, onnx_signature(path)).specs)
    assert result.report is None and "does not run in ONNX Runtime" in result.skipped

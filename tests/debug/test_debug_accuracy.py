"""vlc debug accuracy: the first divergent node of a candidate graph, on real ONNX Runtime runs.

Each test corrupts one node of a copy of a graph (or builds a precision the pass would not) and
checks that exactly that node is named first, with every tensor before it within tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import ROOT, model_ref
from vlc.accuracy import default_tolerance
from vlc.debug import (
    GraphRunner,
    bisect_first_divergent,
    bisect_graphs,
    debug_accuracy,
    debug_inputs,
)
from vlc.debug.layerwise import compare_layerwise
from vlc.debug.sources import resolve
from vlc.frontend.pipeline import prepare


def _normalized(factory: str) -> Path:
    return Path(prepare(model_ref(factory)).onnx_path)


def _corrupt_weight(src: Path, dst: Path, op_type: str, pick) -> str:
    """A copy of `src` whose chosen `op_type` node reads its weight with its values shifted by one
    place (same shape, wrong values); returns the node's name. The wrong weight is a new
    initializer: layers built as copies of one module share their (identical) weights."""
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type == op_type and n.input[1] in inits]
    node = pick(weighted)
    array = numpy_helper.to_array(inits[node.input[1]])
    wrong = f"{node.input[1]}__corrupted"
    model.graph.initializer.append(numpy_helper.from_array(np.roll(array.reshape(-1), 1).reshape(array.shape), wrong))
    node.input[1] = wrong
    onnx.save(model, str(dst))
    return node.name


def _assert_first(report, node_name: str) -> None:
    first = report.first_divergent
    assert first is not None, "no divergence found"
    assert first.node == node_name, f"named {first.node} ({first.op_type}) first, not {node_name}"
    before = [c for c in report.nodes if c.index < first.index]
    assert before and all(c.passed for c in before), [c.node for c in before if not c.passed]
    assert not first.passed and first.inputs_passed


@pytest.fixture(scope="module")
def cnn_pair(tmp_path_factory):
    src = _normalized("cnn")
    bad = tmp_path_factory.mktemp("cnn") / "cnn.bad.onnx"
    name = _corrupt_weight(src, bad, "Conv", lambda convs: convs[1])
    return src, bad, name


@pytest.fixture(scope="module")
def transformer_pair(tmp_path_factory):
    src = _normalized("transformer")
    bad = tmp_path_factory.mktemp("transformer") / "transformer.bad.onnx"
    name = _corrupt_weight(src, bad, "MatMul", lambda mms: mms[len(mms) // 2])
    return src, bad, name


def test_corrupted_conv_is_named_first_on_a_cnn(cnn_pair):
    src, bad, name = cnn_pair
    report = debug_accuracy(str(src), str(bad), batch=2)
    _assert_first(report, name)
    assert report.first_divergent.op_type == "Conv"
    # the same graph against itself: nothing diverges
    assert debug_accuracy(str(src), str(src), batch=2).first_divergent is None


def test_corrupted_matmul_is_named_first_on_a_transformer(transformer_pair):
    src, bad, name = transformer_pair
    report = debug_accuracy(str(src), str(bad), batch=2)
    _assert_first(report, name)
    assert report.first_divergent.op_type == "MatMul"
    assert len(report.nodes) > 40  # the whole graph is compared, not its outputs only


def test_model_refs_resolve_to_their_normalized_graph(cnn_pair):
    src, bad, name = cnn_pair
    report = debug_accuracy(model_ref("cnn"), str(bad), batch=2)
    _assert_first(report, name)


# ---- windows and bisection -------------------------------------------------------------------

def test_small_windows_give_the_same_answer_as_one_big_window(transformer_pair):
    src, bad, name = transformer_pair
    small = debug_accuracy(str(src), str(bad), batch=2, window=5)
    big = debug_accuracy(str(src), str(bad), batch=2, window=100_000)
    assert small.first_divergent.node == big.first_divergent.node == name
    assert [c.output for c in small.nodes] == [c.output for c in big.nodes]
    for a, b in zip(small.nodes, big.nodes):
        assert a.passed == b.passed and a.inputs_passed == b.inputs_passed, a.output
        assert a.max_abs == pytest.approx(b.max_abs, rel=1e-6, abs=1e-6), a.output
    assert big.runs == 2
    assert small.runs == 2 * math.ceil(len(small.nodes) / 5)


class CountingRunner(GraphRunner):
    """A real ONNX Runtime runner that records how many tensors each run marks."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.marked: list[int] = []

    def run(self, feeds, names):
        self.marked.append(len(names))
        return super().run(feeds, names)


@pytest.mark.parametrize("pair", ["cnn_pair", "transformer_pair"])
def test_bisection_marking_one_output_per_run_finds_the_same_node(pair, request):
    src, bad, name = request.getfixturevalue(pair)
    full = debug_accuracy(str(src), str(bad), batch=2)
    ref, cand = resolve(str(src)), resolve(str(bad))
    feeds = debug_inputs(ref, cand, batch=2)
    with CountingRunner(src) as ref_run, CountingRunner(bad) as cand_run:
        found = bisect_graphs(ref_run, cand_run, feeds, default_tolerance("fp32"), max_outputs=1)
    assert found.tensor == full.first_divergent.output
    assert set(cand_run.marked) == {1}
    n = len(full.nodes)
    assert found.runs <= 2 * math.ceil(math.log2(n)) + 4, (found.runs, n)


def test_bisection_loop_checks_the_node_it_lands_on():
    """Tensors after the bad one that do not depend on it pass (a parallel branch): plain binary
    search would stop after them; the input check sends it back before them."""
    order = ["a", "b", "c", "d", "e", "f", "g", "h"]
    bad = {"b", "g", "h"}  # b is wrong; c..f belong to a branch that does not read b
    inputs_of = {"g": ["b", "f"], "h": ["g"], "b": ["a"], "c": ["a"], "d": ["c"], "e": ["d"], "f": ["e"]}
    marked: list[list[str]] = []

    def run_with_outputs(names):
        marked.append(list(names))
        return {n: np.array([1.0 if n in bad else 0.0]) for n in names}

    result = bisect_first_divergent(run_with_outputs, order, lambda n, v: bool(v[0]), inputs_of=inputs_of)
    assert result.tensor == "b"
    assert all(len(m) == 1 for m in marked)
    assert result.runs < len(order)
    unchecked = bisect_first_divergent(run_with_outputs, order, lambda n, v: bool(v[0]))
    assert unchecked.tensor == "g"  # without the input check the branch misleads it


# ---- precision: fp16 islands and int8 Q/DQ ----------------------------------------------------

def _overflow_graph(path: Path) -> None:
    """A decomposed log-softmax of scaled logits: x -> MatMul -> Mul(8) -> Exp -> ReduceSum -> Log
    -> Sub. The logits reach ~20 and exp(11.1) is beyond fp16's 65504, so Exp must stay in fp32
    (the precision pass keeps it there, with ReduceSum and Log)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 16)) / 4).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(8.0, np.float32), "scale"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("Mul", ["h", "scale"], ["logits"], name="scale_up"),
             helper.make_node("Exp", ["logits"], ["e"], name="exp"),
             helper.make_node("ReduceSum", ["e", "axes"], ["total"], name="sum_exp", keepdims=1),
             helper.make_node("Log", ["total"], ["lse"], name="log"),
             helper.make_node("Sub", ["logits", "lse"], ["y"], name="log_softmax")]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_fp16_without_its_exp_island_is_localised_to_the_overflowing_node(tmp_path):
    from vlc.frontend.precision.lowp import KEEP_FP32_OPS, to_low_precision

    src = tmp_path / "overflow.onnx"
    _overflow_graph(src)
    model = onnx.load(str(src))
    kept, _ = to_low_precision(model, TensorProto.FLOAT16)  # Exp stays fp32
    no_island, stats = to_low_precision(model, TensorProto.FLOAT16, keep_ops=KEEP_FP32_OPS - {"Exp"})
    assert stats.fp32_ops["Exp"] == 0 and stats.fp32_ops["Log"] == 1
    onnx.save(kept, str(tmp_path / "fp16.onnx"))
    onnx.save(no_island, str(tmp_path / "fp16.no-island.onnx"))
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)}

    good = debug_accuracy(str(src), str(tmp_path / "fp16.onnx"), feeds=feeds)
    assert good.first_divergent is None, good.first_divergent
    assert {c.node for c in good.nodes} >= {"proj", "scale_up", "exp", "sum_exp", "log_softmax"}

    bad = debug_accuracy(str(src), str(tmp_path / "fp16.no-island.onnx"), feeds=feeds)
    assert bad.tolerance.min_cosine == 0.999  # fp16's tolerance, read from the candidate graph
    _assert_first(bad, "exp")
    assert "NaN or Inf" in bad.first_divergent.reason


def test_int8_candidate_is_matched_through_its_dq_outputs(tmp_path, cnn_pair):
    from vlc.frontend.precision import convert

    source = prepare(model_ref("cnn"))
    src = Path(source.onnx_path)
    qdq = tmp_path / "cnn.int8.onnx"
    convert(src, "int8", qdq, input_specs=list(source.input_specs), strict=False)
    model = onnx.load(str(qdq))
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    report = debug_accuracy(str(src), str(qdq), batch=2)
    assert report.tolerance.min_cosine == 0.98  # int8's tolerance, read from the Q/DQ graph
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    pairs = [c for c in report.nodes if c.output in quantized]
    assert len(pairs) >= 2  # the activations the second Conv and the Gemm read
    assert all(c.candidate_tensor in dq_outputs and c.candidate_tensor != c.output for c in pairs), pairs
    assert report.first_divergent is None, report.first_divergent

    # flip the sign of the second Conv's weight scales: that Conv is named first
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producer = {o: n for n in model.graph.node for o in n.output}
    weight_dq = producer[convs[1].input[1]]
    inits = {i.name: i for i in model.graph.initializer}
    scale = inits[weight_dq.input[1]]
    scale.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(scale), scale.name))
    onnx.save(model, str(tmp_path / "cnn.int8.bad.onnx"))
    bad = debug_accuracy(str(src), str(tmp_path / "cnn.int8.bad.onnx"), batch=2)
    assert bad.first_divergent.node == convs[1].name


# ---- a reference workload --------------------------------------------------------------------

@pytest.mark.parametrize("op_type", ["Conv", "MatMul"])
def test_corrupted_node_is_named_first_in_mobilevit(tmp_path, op_type):
    """The test-size MobileViT-S example: a convolution of its CNN stages, a MatMul of its
    transformer blocks, each corrupted in the middle of the graph."""
    src = Path(prepare("mobilevit-s@test").onnx_path)
    bad = tmp_path / "mobilevit.bad.onnx"
    name = _corrupt_weight(src, bad, op_type, lambda nodes: nodes[len(nodes) // 2])
    report = debug_accuracy(str(src), str(bad), batch=1)
    _assert_first(report, name)
    assert report.first_divergent.op_type == op_type


# ---- a graph nobody here wrote ---------------------------------------------------------------

def test_corrupted_conv_is_named_first_in_the_onnx_packages_squeezenet(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks" / "corpus"))
    import build_corpus

    build_corpus.build(tmp_path, ["onnx-package"], only={"zoo-squeezenet"}, log=lambda _: None)
    src = next(tmp_path.rglob("*squeezenet*.onnx"))
    bad = tmp_path / "squeezenet.bad.onnx"
    name = _corrupt_weight(src, bad, "Conv", lambda convs: convs[len(convs) // 2])
    report = debug_accuracy(str(src), str(bad))
    _assert_first(report, name)


# ---- the command -----------------------------------------------------------------------------

def test_json_schema_and_html_page(vlc_cli, cnn_pair, tmp_path):
    src, bad, name = cnn_pair
    page = tmp_path / "debug.html"
    code, out, err = vlc_cli("debug", "accuracy", src, bad, "--batch", "2", "--json", "--html", page,
                             "--window", "2")
    assert code == 0, err
    data = json.loads(out)
    first = data["first_divergent"]
    assert first["node"] == name and first["op_type"] == "Conv"
    assert first["output"] in {o for n in onnx.load(str(src)).graph.node if n.name == name for o in n.output}
    for key in ("cosine", "max_abs", "mean_abs", "median_abs", "max_rel", "rel_error", "growth", "reason"):
        assert key in first
    assert len(data["nodes"]) == data["compared"] >= 5
    assert {n["output"] for n in data["nodes"]} >= {first["output"]}
    assert all(set(n) >= {"node", "op_type", "output", "cosine", "max_abs", "passed"} for n in data["nodes"])
    assert data["window"] == 2 and data["passed"] is False
    text = page.read_text()
    assert "data:image/png;base64," in text and name in text


def test_table_names_the_first_divergent_node(vlc_cli, cnn_pair):
    src, bad, name = cnn_pair
    code, out, err = vlc_cli("debug", "accuracy", src, bad, "--batch", "2")
    assert code == 0, err
    assert f"first divergent node: {name} (Conv)" in out


def test_bisect_option_names_the_same_node(vlc_cli, transformer_pair):
    src, bad, name = transformer_pair
    code, out, err = vlc_cli("debug", "accuracy", src, bad, "--batch", "2", "--bisect", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["mode"] == "bisect" and data["first_divergent"]["node"] == name
    assert data["compared"] < 40  # only the probed tensors


@pytest.mark.parametrize("args, words", [
    (["missing.onnx", "also-missing.onnx"], "does not exist"),
    (["{src}", "{src}", "--window", "0"], "--window 0"),
    (["{src}", "{src}", "--html", "page.txt"], "does not end in .html"),
    (["{src}", "{src}", "--input", "nope.npy"], "does not exist"),
    (["{src}", "{readme}"], "neither an .onnx file"),
])
def test_bad_input_is_one_line(vlc_cli, cnn_pair, args, words):
    src = cnn_pair[0]
    args = [a.format(src=src, readme=ROOT / "README.md") for a in args]
    code, out, err = vlc_cli("debug", "accuracy", *args)
    assert code == 2, (out, err)
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


# ---- matching and the forms a side may take ---------------------------------------------------

def test_a_tensor_left_only_as_its_cast_copy_is_matched_by_the_precision_pass_names():
    from vlc.debug.graph import candidate_names

    nodes = [helper.make_node("Relu", ["x"], ["h__lowp"]), helper.make_node("Cast", ["h__lowp"], ["h__to_fp32"], to=1),
             helper.make_node("Neg", ["h__to_fp32"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    matched = candidate_names(["h", "y", "absent"], helper.make_model(graph))
    assert matched == {"h": "h__lowp", "y": "y"}


def test_growth_is_the_error_over_the_worst_input_error(cnn_pair):
    src, bad, name = cnn_pair
    report = debug_accuracy(str(src), str(bad), batch=2)
    first = report.first_divergent
    assert first.growth is None  # its inputs are exact
    producer = {o: n for n in onnx.load(str(src)).graph.node for o in n.output}
    by_output = {c.output: c for c in report.nodes}
    later = [c for c in report.nodes if c.index > first.index]
    checked = 0
    for c in later:
        inputs = [by_output[i] for i in producer[c.output].input if i in by_output]
        if inputs and max(i.rel_error for i in inputs) > 0:
            assert c.growth == pytest.approx(c.rel_error / max(i.rel_error for i in inputs))
            checked += 1
    assert checked >= 2


def test_an_onnxruntime_artifact_is_compared_through_the_graph_it_runs(vlc_cli, tmp_path):
    out = tmp_path / "cnn-fp16"
    code, _, err = vlc_cli("compile", model_ref("cnn"), "--target", "onnxruntime", "--precision", "fp16",
                           "-o", out)
    assert code == 0, err
    side = resolve(str(out))
    assert side.kind == "artifact" and side.precision == "fp16"
    assert side.onnx_path == out / side.artifact.manifest["files"]["main"]
    report = debug_accuracy(model_ref("cnn"), str(out), batch=2)
    assert report.tolerance.min_cosine == 0.999
    assert len(report.nodes) >= 5 and report.first_divergent is None, report.first_divergent


def test_windows_shrink_to_the_byte_budget(transformer_pair):
    src, bad, name = transformer_pair
    ref, cand = resolve(str(src)), resolve(str(bad))
    feeds = debug_inputs(ref, cand, batch=2)
    with CountingRunner(src) as ref_run, CountingRunner(bad) as cand_run:
        unbounded = compare_layerwise(ref_run, cand_run, feeds, default_tolerance("fp32"), window=64,
                                      window_bytes=None)
        assert max(ref_run.marked) == 64
        ref_run.marked.clear()
        # a budget of four of the largest tensors: no window after the first exposes more than four
        largest = max(int(np.prod(c.shape)) * 4 for c in unbounded.nodes)
        bounded = compare_layerwise(ref_run, cand_run, feeds, default_tolerance("fp32"), window=64,
                                    window_bytes=4 * largest)
    assert ref_run.marked[0] == 64 and max(ref_run.marked[1:]) <= 4
    assert bounded.first_divergent.node == unbounded.first_divergent.node == name


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="tensorrt_rtx is not installed (pip install tensorrt-rtx-cu13)")
def test_an_engine_artifact_is_compared_through_the_graph_it_was_built_from(vlc_cli, tmp_path):
    out = tmp_path / "cnn-trt"
    code, _, err = vlc_cli("compile", model_ref("cnn"), "--target", "trt-rtx", "--precision", "fp16", "-o", out)
    assert code == 0, err
    side = resolve(str(out))
    assert side.onnx_path.suffix == ".onnx" and side.onnx_path.parent == out
    assert any("cannot expose its intermediate tensors" in n for n in side.notes)
    code, data, err = vlc_cli("debug", "accuracy", model_ref("cnn"), out, "--batch", "2", "--json")
    assert code == 0, err
    data = json.loads(data)
    assert data["first_divergent"] is None and data["compared"] >= 5
    assert any("cannot expose" in n for n in data["notes"])


def test_input_files_are_the_feeds(vlc_cli, cnn_pair, tmp_path):
    src, bad, name = cnn_pair
    image = np.random.default_rng(7).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    code, out, err = vlc_cli("debug", "accuracy", src, bad, "--input", tmp_path / "image.npy", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["first_divergent"]["node"] == name
    assert data["first_divergent"]["shape"][0] == 3  # the file's batch, not a generated one


def test_graphs_with_external_data_run_in_place(cnn_pair, tmp_path):
    src, bad, name = cnn_pair
    for path, dst in ((src, tmp_path / "ref" / "model.onnx"), (bad, tmp_path / "bad" / "model.onnx")):
        (dst.parent / "weights").mkdir(parents=True)
        onnx.save(onnx.load(str(path)), str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="weights/data.bin")
        assert (dst.parent / "weights" / "data.bin").is_file()
    report = debug_accuracy(str(tmp_path / "ref" / "model.onnx"), str(tmp_path / "bad" / "model.onnx"), batch=2,
                            window=3)
    _assert_first(report, name)


def test_weights_inside_a_large_graph_are_written_out_once(cnn_pair, monkeypatch):
    src, bad, name = cnn_pair
    held = debug_accuracy(str(src), str(bad), batch=2, window=3)
    monkeypatch.setattr(GraphRunner, "SPILL_BYTES", 0)
    with GraphRunner(src) as runner:
        assert runner.weights_dir is not None and (runner.weights_dir / "weights.bin").is_file()
        assert all(i.data_location == onnx.TensorProto.EXTERNAL for i in runner.proto.graph.initializer
                   if i.dims and np.prod(i.dims) * 4 >= 1024)
        folder = runner.weights_dir
    assert not folder.exists()  # removed with the runner
    spilled = debug_accuracy(str(src), str(bad), batch=2, window=3)
    assert [(c.output, c.max_abs) for c in spilled.nodes] == [(c.output, c.max_abs) for c in held.nodes]
    _assert_first(spilled, name)

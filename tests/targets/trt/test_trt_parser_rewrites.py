"""Graph rewrites before TensorRT's parser (vlc.targets.trt.parser_rewrites) and TensorRT's own
input names: each rule checked for exactness in ONNX Runtime against the untouched graph, and
with a real TensorRT-RTX engine build on the CPU (compute capability 8.6)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto as P
from onnx import helper, numpy_helper

from vlc.errors import CompileError, InputError
from vlc.model import InputSpec
from vlc.plugin_manager import get_target
from vlc.spec import Precision, ShapeRange, TargetSpec
from vlc.target import CompileSource
from vlc.targets.trt.builder import pair_names
from vlc.targets.trt.parser_rewrites import pool_is_global, rewrite_for_parser
from vlc.targets.trt.target import parse_shape_values

rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                         reason="tensorrt_rtx is not installed (pip install tensorrt-rtx-cu13)")
RNG = np.random.default_rng(7)


def _save(path: Path, nodes, inputs, outputs, initializers=(), opset=17) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _assert_same(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], atol: float) -> None:
    assert reference.keys() == candidate.keys()
    for name, ref in reference.items():
        out = candidate[name]
        assert out.shape == ref.shape and out.dtype == ref.dtype, name
        err = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        scale = np.abs(ref.astype(np.float64)).max() or 1.0
        flat_ref, flat_out = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
        cosine = float(flat_ref @ flat_out / (np.linalg.norm(flat_ref) * np.linalg.norm(flat_out) or 1.0))
        print(f"{name}: max abs {err.max():.3g}, mean abs {err.mean():.3g}, median abs {np.median(err):.3g}, "
              f"max rel {err.max() / scale:.3g}, cosine {cosine:.9f}")
        assert err.max() <= atol, (name, err.max())


def _compile(path: Path, out: Path, specs=(), **spec):
    return get_target("trt-rtx").compile(CompileSource(path, path.stem, list(specs)),
                                         TargetSpec("trt-rtx", Precision.FP32, **spec), out)


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


# ---- AveragePool whose window exceeds its input -------------------------------------------------

def _pool_head(tmp_path: Path, name="pool", **pool) -> Path:
    """A head pooling the 7x7 maps of a stride-2 convolution (15x15 input) with one window."""
    w = numpy_helper.from_array(RNG.normal(size=(8, 3, 3, 3)).astype(np.float32), "W")
    attrs = {"kernel_shape": [8, 8], "strides": [8, 8], "ceil_mode": 1, **pool}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], strides=[2, 2], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("AveragePool", ["r"], ["p"], name="head_pool", **attrs),
             helper.make_node("Flatten", ["p"], ["y"], name="flatten")]
    return _save(tmp_path / f"{name}.onnx", nodes, [_vi("x", P.FLOAT, ["batch", 3, 15, 15])],
                 [_vi("y", P.FLOAT, ["batch", 8])], [w])


@pytest.mark.parametrize("spatial, attrs, expected", [
    ([7, 7], {"kernel_shape": [8, 8], "strides": [8, 8], "ceil_mode": 1}, True),
    ([7, 7], {"kernel_shape": [8, 8], "strides": [1, 1], "ceil_mode": 1}, False),  # output size 0
    ([7, 7], {"kernel_shape": [7, 7]}, False),  # the kernel fits: TensorRT's ordinary pooling
    ([5, 5], {"kernel_shape": [8, 8], "strides": [8, 8], "ceil_mode": 1, "pads": [1, 1, 1, 1]}, True),
    ([5, 5], {"kernel_shape": [8, 8], "strides": [8, 8], "ceil_mode": 1, "pads": [1, 1, 1, 1],
              "count_include_pad": 1}, False),  # padding counted in the divisor
    ([7, 7], {"kernel_shape": [8, 8], "strides": [8, 8], "ceil_mode": 1, "dilations": [2, 2]}, False),
    ([7, 7], {"kernel_shape": [8, 8], "strides": [8, 8], "ceil_mode": 1, "auto_pad": "SAME_UPPER"}, False),
    ([7, 7], {"kernel_shape": [8, 8], "strides": [8, 8], "ceil_mode": 0}, False),  # floor: output 0
    ([3, 7], {"kernel_shape": [4, 8], "strides": [4, 8], "ceil_mode": 1, "pads": [2, 0, 0, 0]}, False),
])
def test_which_pools_are_exactly_global(spatial, attrs, expected):
    node = ir.node("AveragePool", [ir.Value(name="x")], attrs)
    assert pool_is_global(node, spatial) is expected


def test_oversized_pool_becomes_global_and_matches(tmp_path):
    path = _pool_head(tmp_path)
    profile = {"x": ShapeRange((1, 3, 15, 15), (2, 3, 15, 15), (4, 3, 15, 15))}
    rewritten, report = rewrite_for_parser(path, tmp_path, profile, rtx=True)
    assert report.rules == {"average-pool-global": ["head_pool"]} and rewritten.name == "pool.trt.onnx"
    assert "GlobalAveragePool" in _ops(rewritten) and "AveragePool" not in _ops(rewritten)
    feeds = {"x": RNG.normal(size=(3, 3, 15, 15)).astype(np.float32)}
    reference = _ort(path, feeds)
    assert reference["y"].std() > 0.05  # outputs with spread
    _assert_same(reference, _ort(rewritten, feeds), atol=1e-6)


def test_pool_is_left_alone_where_the_profile_changes_its_input_size(tmp_path):
    path = _pool_head(tmp_path, "dynamic")
    model = onnx.load(str(path))
    for axis in (2, 3):
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = "side"
    onnx.save(model, str(path))
    profile = {"x": ShapeRange((1, 3, 15, 15), (1, 3, 15, 15), (1, 3, 31, 31))}
    rewritten, report = rewrite_for_parser(path, tmp_path, profile, rtx=True)
    assert not report.changed and rewritten == path


@rtx
def test_oversized_pool_builds_from_the_rewritten_graph(tmp_path):
    artifact = _compile(_pool_head(tmp_path), tmp_path / "out", batch=(1, 2, 4))
    m = artifact.manifest
    assert m["extra"]["parser_rewrites"] == {"rules": {"average-pool-global": ["head_pool"]}, "graph": "pool.trt.onnx"}
    assert m["files"]["graph"] == m["extra"]["trt"]["graph"] == "pool.trt.onnx"
    assert "GlobalAveragePool" in _ops(artifact.file("graph"))
    layers = json.loads(artifact.file("layers").read_text())["layers"]
    assert any("head_pool" in name for layer in layers for name in layer["onnx_layers"])
    assert "[vlc] parser rewrites: average-pool-global: head_pool" in (artifact.path / "build.log").read_text()


# ---- LayerNormalization with Mean / InvStdDev ---------------------------------------------------

def _layernorm(tmp_path: Path, name: str, *, outputs=("Y", "Mean", "InvStdDev"), graph_outputs=None,
               dtype=P.FLOAT, axis=1, opset=17, consumer=False) -> Path:
    np_type = np.float16 if dtype == P.FLOAT16 else np.float32
    scale = numpy_helper.from_array(RNG.uniform(0.5, 1.5, size=(4, 6)).astype(np_type), "scale")
    bias = numpy_helper.from_array(RNG.normal(size=(4, 6)).astype(np_type), "bias")
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], list(outputs), name="norm",
                              axis=axis, epsilon=1e-5)]
    graph_outputs = list(outputs) if graph_outputs is None else list(graph_outputs)
    if consumer:  # Mean read by another node, not a graph output
        nodes.append(helper.make_node("Add", ["Y", "Mean"], ["Z"], name="uses_mean"))
    shapes = {"Y": [2, 4, 6], "Z": [2, 4, 6], "Mean": [2, 1, 1], "InvStdDev": [2, 1, 1]}
    types = {"Y": dtype, "Z": dtype, "Mean": P.FLOAT, "InvStdDev": P.FLOAT}
    return _save(tmp_path / f"{name}.onnx", nodes, [_vi("x", dtype, [2, 4, 6])],
                 [_vi(o, types[o], shapes[o]) for o in graph_outputs], [scale, bias], opset=opset)


def _ln_feeds(dtype=np.float32):
    return {"x": (RNG.normal(size=(2, 4, 6)) * 3 + RNG.normal(size=(2, 1, 1)) * 5).astype(dtype)}


STATIC = {"x": ShapeRange((2, 4, 6), (2, 4, 6), (2, 4, 6))}


def test_unused_layernorm_outputs_are_dropped(tmp_path):
    path = _layernorm(tmp_path, "unused", graph_outputs=["Y"])
    rewritten, report = rewrite_for_parser(path, tmp_path, STATIC, rtx=True)
    assert report.rules == {"layernorm-unused-outputs-dropped": ["norm"]}
    node = onnx.load(str(rewritten)).graph.node[0]
    assert node.op_type == "LayerNormalization" and list(node.output) == ["Y"] and node.name == "norm"
    feeds = _ln_feeds()
    _assert_same(_ort(path, feeds), _ort(rewritten, feeds), atol=0.0)


@pytest.mark.parametrize("opset", [17, 18])  # ReduceMean's axes: an attribute, then an input
@pytest.mark.parametrize("consumer", [False, True])
def test_used_layernorm_outputs_are_decomposed_exactly(tmp_path, opset, consumer):
    outputs = ["Z", "InvStdDev"] if consumer else None
    path = _layernorm(tmp_path, f"used{opset}{consumer}", opset=opset, consumer=consumer, graph_outputs=outputs)
    rewritten, report = rewrite_for_parser(path, tmp_path, STATIC, rtx=True)
    assert report.rules == {"layernorm-decomposed": ["norm"]}
    assert "LayerNormalization" not in _ops(rewritten)
    onnx.checker.check_model(onnx.load(str(rewritten)), full_check=True)
    feeds = _ln_feeds()
    reference = _ort(path, feeds)
    assert all(v.std() > 1e-3 for v in reference.values())
    _assert_same(reference, _ort(rewritten, feeds), atol=2e-5)


def test_fp16_layernorm_is_decomposed_in_its_stash_type(tmp_path):
    path = _layernorm(tmp_path, "half", dtype=P.FLOAT16)
    rewritten, _ = rewrite_for_parser(path, tmp_path, STATIC, rtx=True)
    casts = [n for n in onnx.load(str(rewritten)).graph.node if n.op_type == "Cast"]
    assert len(casts) == 2  # to float32 for the statistics, back to float16 for Y
    feeds = _ln_feeds(np.float16)
    _assert_same(_ort(path, feeds), _ort(rewritten, feeds), atol=4e-3)  # fp16 Y: a few ulp


@rtx
def test_layernorm_with_statistics_builds(tmp_path):
    artifact = _compile(_layernorm(tmp_path, "stats"), tmp_path / "out")
    assert artifact.manifest["extra"]["parser_rewrites"]["rules"] == {"layernorm-decomposed": ["norm"]}
    io = artifact.manifest["extra"]["trt"]["io"]["outputs"]
    assert [o["name"] for o in io] == ["Y", "Mean", "InvStdDev"] and io[1]["shape"] == [2, 1, 1]


# ---- TensorRT's own input names -----------------------------------------------------------------

def _loop_fed(tmp_path: Path) -> Path:
    """`cond` feeds a Loop directly: TensorRT names that network input after the body's `cond_in`."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Mul", ["y_in", "w"], ["y_out"])],
        "body", [_vi("i", P.INT64, []), _vi("cond_in", P.BOOL, []), _vi("y_in", P.FLOAT, ["batch", 4])],
        [_vi("cond_out", P.BOOL, []), _vi("y_out", P.FLOAT, ["batch", 4])])
    inits = [numpy_helper.from_array(np.array([1.5, 0.5, -1.0, 2.0], np.float32), "w"),
             numpy_helper.from_array(np.array(3, np.int64), "M")]
    return _save(tmp_path / "loop_fed.onnx", [helper.make_node("Loop", ["M", "cond", "y"], ["res"], body=body)],
                 [_vi("cond", P.BOOL, []), _vi("y", P.FLOAT, ["batch", 4])], [_vi("res", P.FLOAT, ["batch", 4])],
                 inits)


def test_names_pair_by_equality_then_in_order():
    assert pair_names(["cond", "y"], ["cond_in", "y"], "input") == {"y": "y", "cond": "cond_in"}
    assert pair_names(["a", "b", "c"], ["a", "x", "z"], "input") == {"a": "a", "b": "x", "c": "z"}
    with pytest.raises(CompileError, match="cannot pair"):
        pair_names(["a", "b"], ["a"], "input")


@rtx
def test_profile_follows_tensorrts_name_for_a_loop_fed_input(tmp_path):
    artifact = _compile(_loop_fed(tmp_path), tmp_path / "out", batch=(1, 2, 4))
    trt = artifact.manifest["extra"]["trt"]
    assert trt["network_names"] == {"inputs": {"cond": "cond_in"}, "outputs": {}}
    assert [i["name"] for i in trt["io"]["inputs"]] == ["cond_in", "y"]
    assert trt["profiles"][0]["cond"] == {"min": [], "opt": [], "max": []}
    assert artifact.manifest["batch_range"] == [1, 4]


# ---- shape-tensor inputs ------------------------------------------------------------------------

def _reshaper(tmp_path: Path) -> tuple[Path, list[InputSpec]]:
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    path = _save(tmp_path / "reshaper.onnx", nodes, [_vi("x", P.FLOAT, [1, 16]), _vi("shape", P.INT64, [2])],
                 [_vi("y", P.FLOAT, ["a", "b"])])
    return path, [InputSpec("x", (1, 16)), InputSpec("shape", (2,), "int64", "fill", 4, 4)]


@rtx
def test_shape_tensor_input_gets_the_value_vlc_feeds_and_says_so(tmp_path):
    path, specs = _reshaper(tmp_path)
    artifact = _compile(path, tmp_path / "out", specs)
    values = artifact.manifest["extra"]["trt"]["shape_tensor_values"]
    assert values == {"shape": {"min": [4, 4], "opt": [4, 4], "max": [4, 4], "chosen_by": "vlc"}}
    assert "-O shape_values=shape:MIN,OPT,MAX" in (artifact.path / "build.log").read_text()


@rtx
def test_shape_tensor_value_range_from_the_option(tmp_path):
    path, specs = _reshaper(tmp_path)
    artifact = _compile(path, tmp_path / "out", specs, options={"shape_values": "shape:2x2,4x4,8x8"})
    values = artifact.manifest["extra"]["trt"]["shape_tensor_values"]["shape"]
    assert values == {"min": [2, 2], "opt": [4, 4], "max": [8, 8], "chosen_by": "user"}


@pytest.mark.parametrize("text, match", [
    ("shape:1,2", "not NAME:MIN,OPT,MAX"), ("shape", "not NAME:MIN,OPT,MAX"), (":1,2,3", "not NAME:MIN,OPT,MAX"),
    ("shape:1x2,3,4x5", "not NAME:MIN,OPT,MAX"), ("shape:a,b,c", "not NAME:MIN,OPT,MAX"),
    ("shape:2x8,4x4,8x2", "not ordered MIN <= OPT <= MAX"),
])
def test_shape_values_option_errors(text, match):
    with pytest.raises(InputError, match=match):
        parse_shape_values(text)


def test_shape_values_option_parses():
    assert parse_shape_values("n:1,5,10; s:1x8,2x8,4x8") == {"n": ((1,), (5,), (10,)),
                                                             "s": ((1, 8), (2, 8), (4, 8))}


# ---- NonZero on TensorRT-RTX --------------------------------------------------------------------

def _squeeze_ones(tmp_path: Path) -> Path:
    """The axes of size 1, found with NonZero over the shape (as tf2onnx and paddle2onnx write a
    squeeze): constant once the input shape is."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.int64))),
             helper.make_node("Equal", ["s", "one"], ["is_one"], name="is_one"),
             helper.make_node("NonZero", ["is_one"], ["where"], name="ones_at"),
             helper.make_node("Squeeze", ["where"], ["axes"], name="flat_axes"),
             helper.make_node("Squeeze", ["x", "axes"], ["y"], name="squeeze")]
    return _save(tmp_path / "squeeze_ones.onnx", nodes, [_vi("x", P.FLOAT, [2, 1, 4, 1])],
                 [_vi("y", P.FLOAT, None)])


def _masked(tmp_path: Path) -> Path:
    nodes = [helper.make_node("Greater", ["x", "zero"], ["mask"], name="positive"),
             helper.make_node("NonZero", ["mask"], ["where"], name="where_positive")]
    return _save(tmp_path / "masked.onnx", nodes, [_vi("x", P.FLOAT, ["batch", 6])],
                 [_vi("where", P.INT64, [2, "n"])], [numpy_helper.from_array(np.zeros((), np.float32), "zero")])


def test_nonzero_over_shapes_is_folded(tmp_path):
    path = _squeeze_ones(tmp_path)
    shape = (2, 1, 4, 1)
    rewritten, report = rewrite_for_parser(path, tmp_path, {"x": ShapeRange(shape, shape, shape)}, rtx=True)
    assert report.rules == {"nonzero-static-at-profile-shapes": ["ones_at"]}
    assert "NonZero" not in _ops(rewritten)
    feeds = {"x": RNG.normal(size=(2, 1, 4, 1)).astype(np.float32)}
    _assert_same(_ort(path, feeds), _ort(rewritten, feeds), atol=0.0)


def test_nonzero_is_untouched_for_tensorrt(tmp_path):
    path = _masked(tmp_path)
    rewritten, report = rewrite_for_parser(path, tmp_path, {"x": ShapeRange((1, 6), (1, 6), (1, 6))}, rtx=False)
    assert not report.changed and rewritten == path  # TensorRT 10/11 parses NonZero natively


@rtx
def test_nonzero_over_shapes_builds(tmp_path):
    artifact = _compile(_squeeze_ones(tmp_path), tmp_path / "out")
    assert artifact.manifest["extra"]["parser_rewrites"]["rules"] == {"nonzero-static-at-profile-shapes": ["ones_at"]}
    assert artifact.manifest["extra"]["trt"]["io"]["outputs"][0]["shape"] == [2, 4]


@rtx
def test_data_dependent_nonzero_is_one_line_naming_the_node(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CompileError) as info:
        _compile(_masked(tmp_path), out, batch=(1, 2, 4))
    line = info.value.line()
    assert "\n" not in line and "node 'where_positive' (NonZero)" in line
    assert "input 'mask' depends on the model's inputs" in line and "--target trt" in line
    assert not out.exists()

"""Every Ascend patch: the rewrite happens, and ONNX Runtime gives the same outputs before/after."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from ascend_patch_helpers import I64, F, assert_same, copy, make_model, ops, run, tensor
from onnx import helper

from vlc.ascend_patches import PatchContext, apply_patches, get_patch
from vlc.targets.ascend.patch_set import ATC_PATCHES, ordered

RNG = np.random.default_rng(0)


def apply(name, model, ctx=None):
    result = get_patch(name).run(copy(model), ctx or PatchContext())
    onnx.checker.check_model(result.model)
    assert result.modified == (result.record.changed > 0 or result.record.nodes_before != result.record.nodes_after)
    return result.model, result.record


def test_every_patch_is_registered_as_a_graph_pass_and_in_the_atc_set():
    from vlc.ascend_patches.core import all_patches
    from vlc.plugin_manager import pass_sets, passes

    registered = passes()
    names = [p.name for p in all_patches()]
    assert sorted(names) == sorted(ATC_PATCHES.passes)
    for name in names:
        assert registered[name] is get_patch(name) and registered[name].summary
    assert pass_sets()["ascend-atc"] is ATC_PATCHES


def test_graph_pass_wrapper_runs_on_onnx_ir():
    import onnx_ir as ir

    from vlc.frontend.passes import run_passes

    model = _mask_model()
    patched, reports = run_passes(ir.from_proto(copy(model)), ["ascend-fp16-clamp"])
    proto = ir.to_proto(patched)
    assert reports[0].name == "ascend-fp16-clamp"
    assert all(abs(v) <= 65504 for init in proto.graph.initializer
               for v in onnx.numpy_helper.to_array(init).ravel())


def _mask_model():
    nodes = [helper.make_node("Mul", ["mask", "neg"], ["bias"]),
             helper.make_node("Add", ["x", "bias"], ["s"]),
             helper.make_node("Softmax", ["s"], ["y"], axis=-1)]
    return make_model(nodes, [tensor("x", F, [2, 8]), tensor("mask", F, [2, 8])], [tensor("y", F, [2, 8])],
                      {"neg": np.array(-3.4e38, dtype=np.float32)})


def test_fp16_clamp_keeps_masked_softmax():
    model = _mask_model()
    patched, record = apply("ascend-fp16-clamp", model)
    assert record.changed == 1
    value = onnx.numpy_helper.to_array(patched.graph.initializer[0])
    assert value == np.float32(-65504.0)
    mask = (RNG.random((2, 8)) < 0.3).astype(np.float32)
    feeds = {"x": RNG.standard_normal((2, 8)).astype(np.float32), "mask": mask}
    assert_same(model, patched, feeds)
    # and in fp16 the clamped bias is finite where the original is -inf
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(np.float32(-3.4e38))) and np.isfinite(np.float16(value))


def test_fp16_clamp_constant_nodes():
    const = helper.make_tensor("c", onnx.TensorProto.FLOAT, [1], [-np.inf])
    nodes = [helper.make_node("Constant", [], ["c"], value=const),
             helper.make_node("Max", ["x", "c"], ["y"])]
    model = make_model(nodes, [tensor("x", F, [4])], [tensor("y", F, [4])])
    patched, record = apply("ascend-fp16-clamp", model)
    assert record.changed == 1
    assert_same(model, patched, {"x": RNG.standard_normal(4).astype(np.float32)})


@pytest.mark.parametrize("index", [np.array(-1), np.array(-3), np.array([-1, 0, -2])])
def test_gather_negative_index(index):
    nodes = [helper.make_node("Gather", ["x", "idx"], ["y"], axis=1)]
    out_shape = [2] + ([] if index.ndim == 0 else [3]) + [4]
    model = make_model(nodes, [tensor("x", F, [2, 5, 4])], [tensor("y", F, out_shape)],
                       {"idx": index.astype(np.int64)})
    patched, record = apply("ascend-gather-neg-index", model)
    assert record.changed == 1
    assert not any(n.op_type == "Gather" and (onnx.numpy_helper.to_array(
        next(i for i in patched.graph.initializer if i.name == n.input[1])) < 0).any()
        for n in patched.graph.node if n.op_type == "Gather")
    if index.ndim == 0:
        assert {"Slice", "Squeeze"} <= set(ops(patched))
    assert_same(model, patched, {"x": RNG.standard_normal((2, 5, 4)).astype(np.float32)})


def test_gather_negative_index_dynamic_axis_uses_slices():
    nodes = [helper.make_node("Gather", ["x", "idx"], ["y"], axis=1)]
    model = make_model(nodes, [tensor("x", F, ["b", "s", 4])], [tensor("y", F, ["b", 2, 4])],
                       {"idx": np.array([-1, 0], dtype=np.int64)})
    patched, _ = apply("ascend-gather-neg-index", model)
    assert "Concat" in ops(patched)
    assert_same(model, patched, {"x": RNG.standard_normal((3, 7, 4)).astype(np.float32)})


def test_trilu_to_where_and_constant():
    nodes = [helper.make_node("Trilu", ["x", "k"], ["y"], upper=0),
             helper.make_node("Trilu", ["c"], ["m"], upper=1),
             helper.make_node("Add", ["y", "m"], ["z"])]
    model = make_model(nodes, [tensor("x", F, [2, 5, 5])], [tensor("z", F, [2, 5, 5])],
                       {"k": np.array(1, dtype=np.int64),
                        "c": RNG.standard_normal((5, 5)).astype(np.float32)}, opset=14)
    patched, record = apply("ascend-trilu-mask", model)
    assert record.changed == 2 and "Trilu" not in ops(patched)
    x = RNG.standard_normal((2, 5, 5)).astype(np.float32)
    x[0, 4, 0] = -np.inf  # Where keeps -inf where Trilu keeps it, and 0 elsewhere (no NaN)
    assert_same(model, patched, {"x": x})


def test_int64_index_math_moves_to_int32():
    nodes = [helper.make_node("Add", ["ids", "offset"], ["pos"]),
             helper.make_node("Mul", ["pos", "two"], ["pos2"]),
             helper.make_node("Gather", ["table", "pos2"], ["emb"], axis=0),
             helper.make_node("Shape", ["ids"], ["shape"]),
             helper.make_node("Reshape", ["emb", "flat"], ["y"])]
    model = make_model(nodes, [tensor("ids", I64, [2, 3])], [tensor("y", F, [2, 12])],
                       {"offset": np.array(1, dtype=np.int64), "two": np.array(2, dtype=np.int64),
                        "table": RNG.standard_normal((16, 4)).astype(np.float32),
                        "flat": np.array([2, 12], dtype=np.int64)})
    patched, record = apply("ascend-int64-to-int32", model)
    assert record.changed == 1
    inits = {i.name: i for i in patched.graph.initializer}
    assert inits["offset"].data_type == onnx.TensorProto.INT32
    assert inits["flat"].data_type == onnx.TensorProto.INT64  # Reshape's shape stays int64
    assert patched.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64  # interface kept
    assert_same(model, patched, {"ids": RNG.integers(0, 7, (2, 3)).astype(np.int64)})


def test_int64_group_with_out_of_range_constant_is_left_alone():
    nodes = [helper.make_node("Add", ["ids", "big"], ["s"]),
             helper.make_node("Sub", ["s", "big"], ["t"]),
             helper.make_node("Gather", ["table", "t"], ["y"], axis=0)]
    model = make_model(nodes, [tensor("ids", I64, [3])], [tensor("y", F, [3, 4])],
                       {"big": np.array(2**40, dtype=np.int64),
                        "table": RNG.standard_normal((8, 4)).astype(np.float32)})
    patched, record = apply("ascend-int64-to-int32", model)
    assert record.changed == 0
    assert_same(model, patched, {"ids": np.array([1, 5, 7], dtype=np.int64)})


@pytest.mark.parametrize("equation,shapes", [
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bi,bi->b", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("abcd,cde->abe", [(2, 3, 4, 5), (4, 5, 6)]),
    ("bqd,kd->bkq", [(2, 3, 5), (4, 5)]),
])
def test_einsum_to_matmul(equation, shapes):
    a, b = (RNG.standard_normal(s).astype(np.float32) for s in shapes)
    expected = np.einsum(equation, a, b)
    nodes = [helper.make_node("Einsum", ["a", "b"], ["y"], equation=equation)]
    model = make_model(nodes, [tensor("a", F, list(shapes[0])), tensor("b", F, list(shapes[1]))],
                       [tensor("y", F, list(expected.shape))], opset=13)
    patched, record = apply("ascend-einsum", model)
    assert record.changed == 1 and "Einsum" not in ops(patched), record.notes
    np.testing.assert_allclose(run(patched, {"a": a, "b": b})["y"], expected, rtol=1e-5, atol=1e-5)


def _layernorm_model(opset=17):
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)]
    return make_model(nodes, [tensor("x", F, [2, 4, 8])], [tensor("y", F, [2, 4, 8])],
                      {"g": RNG.standard_normal(8).astype(np.float32),
                       "b": RNG.standard_normal(8).astype(np.float32)}, opset=opset)


@pytest.mark.parametrize("cann,precision,form", [(6, "fp16", "decomposed"), (7, "fp32", "decomposed"),
                                                 (8, "fp16", "fused")])
def test_layernorm_form_per_cann(cann, precision, form):
    model = _layernorm_model()
    patched, _ = apply("ascend-layernorm", model, PatchContext(cann=cann, precision=precision))
    if form == "decomposed":
        assert "LayerNormalization" not in ops(patched)
        assert ops(patched) == ["ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Add"]
    else:
        assert ops(patched) == ["LayerNormalization"]
    assert_same(model, patched, {"x": RNG.standard_normal((2, 4, 8)).astype(np.float32)}, rtol=1e-5, atol=1e-5)


def test_opset_down_conversion_decomposes_gelu_and_layernorm():
    nodes = [helper.make_node("Gelu", ["x"], ["g"]),
             helper.make_node("Gelu", ["x"], ["t"], approximate="tanh"),
             helper.make_node("Add", ["g", "t"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma"], ["y"], axis=-1),
             helper.make_node("ReduceMean", ["y", "axes"], ["m"], keepdims=1)]
    model = make_model(nodes, [tensor("x", F, [2, 8])], [tensor("m", F, [2, 1])],
                       {"gamma": RNG.standard_normal(8).astype(np.float32),
                        "axes": np.array([-1], dtype=np.int64)}, opset=20)
    patched, record = apply("ascend-opset", model, PatchContext(cann=6))
    assert next(i.version for i in patched.opset_import if i.domain == "") == 13
    assert not {"Gelu", "LayerNormalization"} & set(ops(patched))
    feeds = {"x": RNG.standard_normal((2, 8)).astype(np.float32) * 2}
    a, b = run(model, feeds)["m"], run(patched, feeds)["m"]
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_opset_in_range_is_untouched():
    model = _mask_model()
    patched, record = apply("ascend-opset", model, PatchContext(cann=8))
    assert record.changed == 0 and ops(patched) == ops(model)


def test_attention_scale_and_mask():
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["scores"]),
             helper.make_node("Div", ["scores", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "mask"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["y"], axis=-1)]
    model = make_model(nodes, [tensor("q", F, [2, 3, 4, 8]), tensor("kt", F, [2, 3, 8, 4]),
                               tensor("mask", F, [2, 1, 1, 4])], [tensor("y", F, [2, 3, 4, 4])],
                       {"scale": np.array(np.sqrt(8.0), dtype=np.float32)})
    patched, record = apply("ascend-attention", model)
    assert "Div" not in ops(patched) and "Mul" in ops(patched) and "Expand" in ops(patched)
    feeds = {"q": RNG.standard_normal((2, 3, 4, 8)).astype(np.float32),
             "kt": RNG.standard_normal((2, 3, 8, 4)).astype(np.float32),
             "mask": np.where(RNG.random((2, 1, 1, 4)) < 0.3, -10000.0, 0.0).astype(np.float32)}
    assert_same(model, patched, feeds, rtol=1e-5, atol=1e-6)


def test_freeze_shapes_per_batch():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    model = make_model(nodes, [tensor("x", F, ["batch", 6])], [tensor("y", F, ["batch", 6])])
    patched, record = apply("ascend-freeze-shapes", model, PatchContext(batch=4))
    dims = [d.dim_value for d in patched.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [4, 6]
    assert "Shape" not in ops(patched)
    assert_same(model, patched, {"x": RNG.standard_normal((4, 6)).astype(np.float32)})


def test_patches_run_in_the_sets_order():
    model = _mask_model()
    names = ordered(["ascend-fp16-clamp", "ascend-opset", "ascend-fp16-clamp"])
    assert names == ["ascend-opset", "ascend-fp16-clamp"]
    _, records = apply_patches(copy(model), names, PatchContext(cann=6))
    assert [r.name for r in records] == names
    assert records[1].changed == 1 and records[1].modified and records[1].nodes_before == 3
    assert records[0].nodes_before == records[0].nodes_after == 3 and records[0].seconds > 0


def test_an_unknown_patch_is_refused():
    from vlc.errors import InputError

    with pytest.raises(InputError, match="unknown Ascend patch 'ascend-nope'"):
        ordered(["ascend-opset", "ascend-nope"])


def test_freeze_shapes_keeps_output_ranks_of_a_loop_graph():
    """onnx's own Loop case (IR 6, no dynamic dims): the checker requires shapes on its graph
    outputs, so freezing may clear their dims but not drop them."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        case = next(c for c in collect_testcases(None) if c.name == "test_loop11")
    model = case.model
    patched, _ = apply("ascend-freeze-shapes", model, PatchContext(batch=1))
    onnx.checker.check_model(patched)
    assert [len(o.type.tensor_type.shape.dim) for o in patched.graph.output] == \
           [len(o.type.tensor_type.shape.dim) for o in model.graph.output]
    feeds = {"trip_count": np.array(5, np.int64), "cond": np.array(True), "y": np.array([-2.0], np.float32)}
    assert_same(model, patched, feeds)


@pytest.mark.parametrize("mode", ["linear", "cubic", "nearest"])
def test_gridsample_of_opset_22_is_lowered_for_cann_8(mode):
    """onnx's version converter has no GridSample adapter; on 4-D inputs opset 16's GridSample is
    the same op under its old mode names."""
    nodes = [helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, align_corners=0)]
    model = make_model(nodes, [tensor("x", F, [1, 2, 5, 6]), tensor("grid", F, [1, 3, 4, 2])],
                       [tensor("y", F, [1, 2, 3, 4])], opset=22)
    model.ir_version = 10
    patched, record = apply("ascend-opset", model, PatchContext(cann=8))
    assert next(i.version for i in patched.opset_import if i.domain == "") == 18
    mode_16 = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}[mode]
    mode_attr = next(a for a in patched.graph.node[0].attribute if a.name == "mode")
    assert helper.get_attribute_value(mode_attr).decode() == mode_16
    feeds = {"x": RNG.standard_normal((1, 2, 5, 6)).astype(np.float32),
             "grid": RNG.uniform(-1, 1, (1, 3, 4, 2)).astype(np.float32)}
    assert_same(model, patched, feeds, rtol=1e-5, atol=1e-5)

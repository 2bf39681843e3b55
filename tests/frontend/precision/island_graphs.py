"""A graph whose fp32 needs in fp16 are known, for the islands=auto tests: three islands fp16
overflows (an Exp of large logits, the sum of those exponentials, a sum of large squares) and two
it holds (a decomposed LayerNorm and a Softmax on unit-scale data)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DIM = 64
LN_NODES = {"ln_mean", "ln_sub", "ln_pow", "ln_var", "ln_add_eps", "ln_sqrt", "ln_div", "ln_gamma", "ln_beta"}
OVERFLOWING = {"exp", "sum_exp", "sum_sq"}


def mixed_graph(path=None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    f32 = np.float32
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.array(1e-5, f32), "eps"),
             numpy_helper.from_array(np.array(2.0, f32), "two"),
             numpy_helper.from_array((1 + 0.1 * rng.standard_normal(DIM)).astype(f32), "gamma"),
             numpy_helper.from_array((0.1 * rng.standard_normal(DIM)).astype(f32), "beta"),
             numpy_helper.from_array((rng.standard_normal((DIM, 16)) / 8).astype(f32), "w1"),
             numpy_helper.from_array((rng.standard_normal((DIM, 16)) / 8).astype(f32), "w2"),
             numpy_helper.from_array(np.array(10.0, f32), "ten"),
             numpy_helper.from_array(np.array(50.0, f32), "fifty")]
    node = helper.make_node
    nodes = [
        # A: decomposed LayerNorm -> MatMul -> Softmax, on unit-scale values: fp16 holds them
        node("ReduceMean", ["x"], ["mean"], name="ln_mean", axes=[-1], keepdims=1),
        node("Sub", ["x", "mean"], ["centered"], name="ln_sub"),
        node("Pow", ["centered", "two"], ["squared"], name="ln_pow"),
        node("ReduceMean", ["squared"], ["var"], name="ln_var", axes=[-1], keepdims=1),
        node("Add", ["var", "eps"], ["var_eps"], name="ln_add_eps"),
        node("Sqrt", ["var_eps"], ["std"], name="ln_sqrt"),
        node("Div", ["centered", "std"], ["normed"], name="ln_div"),
        node("Mul", ["normed", "gamma"], ["scaled"], name="ln_gamma"),
        node("Add", ["scaled", "beta"], ["ln_out"], name="ln_beta"),
        node("MatMul", ["ln_out", "w1"], ["scores"], name="proj_a"),
        node("Softmax", ["scores"], ["y_a"], name="softmax", axis=-1),
        # B: a softmax written out without subtracting the max: exp(logits up to ~30) > 65504
        node("MatMul", ["x", "w2"], ["logits_raw"], name="proj_b"),
        node("Mul", ["logits_raw", "ten"], ["logits"], name="scale_b"),
        node("Exp", ["logits"], ["e"], name="exp"),
        node("ReduceSum", ["e", "axes"], ["e_sum"], name="sum_exp", keepdims=1),
        node("Div", ["e", "e_sum"], ["y_b"], name="normalize_b"),
        # C: an L2 norm of values whose squares fit fp16 and whose sum (about 1.6e5) does not
        node("Mul", ["x", "fifty"], ["big"], name="scale_c"),
        node("Mul", ["big", "big"], ["big_sq"], name="square_c"),
        node("ReduceSum", ["big_sq", "axes"], ["sq_sum"], name="sum_sq", keepdims=1),
        node("Add", ["sq_sum", "eps"], ["sq_sum_eps"], name="add_eps_c"),
        node("Sqrt", ["sq_sum_eps"], ["norm"], name="sqrt_c"),
        node("Div", ["big", "norm"], ["y_c"], name="normalize_c"),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", d])
               for n, d in (("y_a", 16), ("y_b", 16), ("y_c", DIM))]
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", DIM])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if path is not None:
        onnx.save(model, str(path))
    return model


def feeds(seed: int = 0, batch: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, DIM)).astype(np.float32)}

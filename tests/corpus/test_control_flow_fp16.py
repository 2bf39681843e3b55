"""Control flow under fp16: If/Loop graphs converted by the precision pass run and match fp32.

The subgraph-carrying nodes stay fp32 with casts at their boundary, and outer tensors their
bodies read keep an fp32 version; both branches of the If are exercised.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as P
from onnx import helper as h
from onnx import numpy_helper as nh

from vlc.frontend.precision.lowp import to_low_precision

RNG = np.random.default_rng(21)
W = RNG.standard_normal((8, 8)).astype(np.float32)
W2 = (RNG.standard_normal((8, 8)) * 0.5).astype(np.float32)


def _vi(name, shape):
    return h.make_tensor_value_info(name, P.FLOAT, shape)


def if_loop_model() -> onnx.ModelProto:
    """m = x @ W; y = If(sum(m) > 0, (m @ W) * 0.5, relu(m)); z = y @ W2; out = Loop3(tanh(. @ W2)) + z.

    The branches read the outer m and W (fp16 candidates outside), the Loop body reads W2, which
    an outer fp16 MatMul reads too.
    """
    then = h.make_graph([h.make_node("MatMul", ["m", "W"], ["t"]),
                         h.make_node("Constant", [], ["k"], value=nh.from_array(np.array(0.5, np.float32))),
                         h.make_node("Mul", ["t", "k"], ["t2"])], "then", [], [_vi("t2", None)])
    other = h.make_graph([h.make_node("Relu", ["m"], ["e"])], "else", [], [_vi("e", None)])
    body = h.make_graph([h.make_node("Identity", ["c"], ["co"]),
                         h.make_node("MatMul", ["hh", "W2"], ["mm"]),
                         h.make_node("Tanh", ["mm"], ["ho"])], "body",
                        [h.make_tensor_value_info("i", P.INT64, []),
                         h.make_tensor_value_info("c", P.BOOL, []), _vi("hh", None)],
                        [h.make_tensor_value_info("co", P.BOOL, []), _vi("ho", None)])
    nodes = [h.make_node("MatMul", ["x", "W"], ["m"]),
             h.make_node("ReduceSum", ["m"], ["s"], keepdims=0),
             h.make_node("Greater", ["s", "zero"], ["c"]),
             h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other),
             h.make_node("MatMul", ["y", "W2"], ["z"]),
             h.make_node("Loop", ["trips", "true", "z"], ["l"], body=body),
             h.make_node("Add", ["l", "z"], ["out"])]
    inits = [nh.from_array(W, "W"), nh.from_array(W2, "W2"), nh.from_array(np.array(0, np.float32), "zero"),
             nh.from_array(np.array(3, np.int64), "trips"), nh.from_array(np.array(True), "true")]
    graph = h.make_graph(nodes, "if_loop", [_vi("x", ["batch", 8])], [_vi("out", ["batch", 8])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _input(branch: int) -> np.ndarray:
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    return x if np.sign((x @ W).sum()) == branch else -x


@pytest.mark.parametrize("branch", [1, -1])
def test_if_and_loop_convert_and_match_fp32(branch):  # bf16: ONNX Runtime CPU has no bf16 MatMul
    model = if_loop_model()
    x = _input(branch)
    want = _run(model, x)
    converted, stats = to_low_precision(model, P.FLOAT16)
    assert stats.nodes_low >= 3  # the MatMuls outside the control flow run in low precision
    assert stats.fp32_ops["If"] == 1 and stats.fp32_ops["Loop"] == 1
    got = _run(converted, x)
    assert want.std() > 0.1
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * float(np.abs(want).max()))


def test_if_model_compiles_for_onnxruntime_fp16(tmp_path, vlc_cli):
    src = tmp_path / "if_loop.onnx"
    onnx.save(if_loop_model(), str(src))
    art = tmp_path / "ort16"
    code, out, err = vlc_cli("compile", str(src), "--target", "onnxruntime", "--precision", "fp16",
                             "-o", str(art))
    assert code == 0, out + err
    for branch in (1, -1):
        np.save(tmp_path / "x.npy", _input(branch))
        code, out, err = vlc_cli("compare", str(art), "--input", str(tmp_path / "x.npy"))
        assert code == 0, out + err

"""The pre-flight table and checks: findings, the patch that fixes each, and the exit status."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ascend_patches"))
from ascend_patch_helpers import make_model, tensor

from vlc.cli.app import main
from vlc.signature import onnx_signature
from vlc.spec import Precision, ShapeRange, TargetSpec
from vlc.targets.ascend.cann import CANN_VERSIONS, cann_info, op_support
from vlc.targets.ascend.options import parse_options
from vlc.targets.ascend.preflight import check

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def run_check(model, precision=Precision.FP16, shapes=None, **options):
    spec = TargetSpec("ascend310p", precision, batch=(1, 1, 1), shapes=shapes or {}, options=options)
    sig = onnx_signature(model)
    return check(model, parse_options("ascend310p", spec, sig), spec, sig)


def codes(findings):
    return {(f.code, f.fix) for f in findings}


def test_tables_load_for_every_cann():
    assert [cann_info(v).max_opset for v in CANN_VERSIONS] == [13, 18, 18]
    support = op_support()
    assert support.parsed("LayerNormalization", 6) is False and support.parsed("LayerNormalization", 7)
    assert support.parsed("Trilu", 8) is False and support.parsed("MatMul", 6)
    assert support.parsed("NoSuchOp", 8) is None
    assert "ab,cb->ac" in support.einsum_equations and len(support.einsum_equations) == 20


def test_guide_problems_are_found_and_fixed():
    nodes = [helper.make_node("Gather", ["x", "last"], ["g"], axis=1),
             helper.make_node("Mul", ["g", "neg"], ["m"]),
             helper.make_node("Einsum", ["m", "w"], ["e"], equation="bd,dk->bk"),
             helper.make_node("Trilu", ["sq"], ["t"]),
             helper.make_node("ReduceSum", ["t"], ["ts"], keepdims=0),
             helper.make_node("Add", ["e", "ts"], ["y"])]
    model = make_model(nodes, [tensor("x", F, [1, 5, 4]), tensor("sq", F, [3, 3])], [tensor("y", F, [1, 6])],
                       {"last": np.array(-1, dtype=np.int64), "neg": np.array(-3.4e38, dtype=np.float32),
                        "w": np.ones((4, 6), dtype=np.float32)}, opset=14)
    report = run_check(model, cann=6)
    assert {("opset", "ascend-opset"), ("gather-negative-index", "ascend-gather-neg-index"),
            ("fp16-range", "ascend-fp16-clamp"), ("einsum-equation", "ascend-einsum"),
            ("unsupported-op", "ascend-trilu-mask")} <= codes(report.findings)
    assert report.after == [] and report.ok
    # fp32 builds are not held to the fp16 range
    assert ("fp16-range", "ascend-fp16-clamp") not in codes(run_check(model, Precision.FP32, cann=6).findings)


def test_custom_ops_cannot_be_fixed():
    nodes = [helper.make_node("Attention", ["x"], ["y"], domain="com.microsoft")]
    model = helper.make_model(helper.make_graph(nodes, "g", [tensor("x", F, [1, 4])], [tensor("y", F, [1, 4])]),
                              opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    report = run_check(model)
    assert not report.ok and report.remaining[0].code == "custom-domain"
    assert report.remaining[0].hint


def test_unknown_ops_warn_but_pass():
    nodes = [helper.make_node("Hardmax", ["x"], ["h"]), helper.make_node("Det", ["h"], ["y"])]
    model = make_model(nodes, [tensor("x", F, [1, 3, 3])], [tensor("y", F, [1])])
    report = run_check(model)
    assert [(f.severity, f.op_type) for f in report.findings] == [("warning", "Det")]
    assert report.ok


def test_dynamic_dims_need_shapes():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", F, ["batch", "seq", 4])],
                       [tensor("y", F, ["batch", "seq", 4])])
    report = run_check(model)
    assert [f.code for f in report.remaining] == ["dynamic-dim"] and "--shapes x:" in report.remaining[0].hint
    fixed = run_check(model, shapes={"x": ShapeRange((1, 7, 4), (1, 7, 4), (1, 7, 4))})
    assert fixed.ok


def test_fixed_batch_against_gears():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", F, [2, 4])], [tensor("y", F, [2, 4])])
    spec = TargetSpec("ascend310p", Precision.FP16, batch=(1, 4, 4), options={"gears": [1, 4]})
    sig = onnx_signature(model)
    report = check(model, parse_options("ascend310p", spec, sig), spec, sig)
    assert "fixed-batch" in {f.code for f in report.remaining}


def test_int64_math_is_a_fixable_warning():
    nodes = [helper.make_node("Add", ["ids", "one"], ["p"]),
             helper.make_node("Gather", ["table", "p"], ["y"], axis=0)]
    model = make_model(nodes, [tensor("ids", I64, [1, 3])], [tensor("y", F, [1, 3, 4])],
                       {"one": np.array(1, dtype=np.int64), "table": np.ones((8, 4), dtype=np.float32)})
    report = run_check(model)
    assert ("int64-math", "ascend-int64-to-int32") in codes(report.findings)
    assert "ascend-int64-to-int32" in report.patches and report.ok


def test_patch_selection_options():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", F, [1, 4])], [tensor("y", F, [1, 4])])
    assert "ascend-attention" not in run_check(model, patches="-ascend-attention").patches
    assert run_check(model, patches="none").patches == []
    assert run_check(model, patches=["ascend-opset"]).patches == ["ascend-opset"]


def _save(model, path):
    onnx.save(model, str(path))
    return str(path)


def test_vlc_check_exit_status(tmp_path, capsys):
    good = make_model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], [tensor("x", F, [1, 5])],
                      [tensor("y", F, [1])], {"i": np.array(-1, dtype=np.int64)})
    assert main(["check", _save(good, tmp_path / "good.onnx"), "-t", "ascend310p", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["findings"][0]["fix"] == "ascend-gather-neg-index"
    bad = helper.make_model(helper.make_graph([helper.make_node("Foo", ["x"], ["y"], domain="acme")], "g",
                                              [tensor("x", F, [1])], [tensor("y", F, [1])]),
                            opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("acme", 1)])
    assert main(["check", _save(bad, tmp_path / "bad.onnx"), "-t", "ascend310"]) == 1
    text = capsys.readouterr().out
    assert "acme::Foo" in text and "no vlc patch fixes" in text

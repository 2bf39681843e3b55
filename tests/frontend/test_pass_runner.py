"""The one pass abstraction: the registry's sets resolve and cover every pass, the runner times,
counts and records per pass across both model forms, and onnx_ir can run vlc's passes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.conftest import registered_plugin
from vlc import plugin_manager
from vlc.errors import InputError
from vlc.frontend.passes import (
    FORMS,
    IR,
    PROTO,
    FunctionPass,
    GraphPass,
    PassSet,
    as_onnx_ir_pass,
    count_nodes,
    form_of,
    run_pass_set,
    run_passes,
)
from vlc.hookspecs import hookimpl

# Who owns which set: each target's pass set must be registered (an owner that stopped
# registering its set would leave its passes in no set, which the registry refuses).
OWNED_SETS = {"frontend-default": "frontend", "frontend-optional": "frontend",
              "onnxruntime-cuda": "onnxruntime", "trt-parser": "trt", "trt-rtx-parser": "trt-rtx",
              "ascend-atc": "ascend"}


def test_every_registered_pass_is_in_a_set_and_every_set_resolves():
    passes, sets = plugin_manager.passes(), plugin_manager.pass_sets()
    assert {name: s.owner for name, s in sets.items() if name in OWNED_SETS} == OWNED_SETS
    for pass_set in sets.values():
        assert pass_set.passes and all(n in passes for n in pass_set.passes), pass_set
    assert set(passes) == {n for s in sets.values() for n in s.passes}
    for name, graph_pass in passes.items():
        assert isinstance(graph_pass, GraphPass) and graph_pass.name == name
        assert graph_pass.summary and graph_pass.form in FORMS and graph_pass.keeps_numerics is True
    assert {p.form for p in passes.values()} == {IR, PROTO}  # the Ascend patches stay on ModelProto


def test_the_owners_run_their_declared_sets():
    from vlc.frontend.builtin_passes import DEFAULT_PASSES
    from vlc.targets.onnxruntime.gpu_path import FUSION_PASSES, UNDONE_BY
    from vlc.targets.trt.parser_rewrites import PARSER_SET, RTX_PARSER_SET

    sets = plugin_manager.pass_sets()
    assert sets["frontend-default"].passes == DEFAULT_PASSES
    assert FUSION_PASSES == sets["onnxruntime-cuda"].passes == ("patch-matmul", "conv-bias-add", "ort-fusions",
                                                                "qkv-attention")
    assert UNDONE_BY == {"conv-bias-add": ("ConvAddFusion",)}
    assert sets["trt-parser"] is PARSER_SET and sets["trt-rtx-parser"] is RTX_PARSER_SET
    assert RTX_PARSER_SET.passes[:len(PARSER_SET.passes)] == PARSER_SET.passes


class _Plugin:
    def __init__(self, passes=(), sets=()):
        self._passes, self._sets = passes, sets

    @hookimpl
    def register_passes(self, register):
        for p in self._passes:
            register(p)

    @hookimpl
    def register_pass_sets(self, register):
        for s in self._sets:
            register(s)


@contextlib.contextmanager
def _with_plugin(plugin: object) -> Iterator[None]:
    plugin_manager._pass_registry.cache_clear()
    try:
        with registered_plugin(plugin, "test-passes"):
            yield
    finally:
        plugin_manager._pass_registry.cache_clear()


def _noop(name: str) -> GraphPass:
    return FunctionPass(name, "does nothing", lambda model, ctx, record: None)


def test_a_registered_pass_in_no_set_is_refused():
    with (_with_plugin(_Plugin(passes=[_noop("orphan-pass")])),
          pytest.raises(InputError, match="'orphan-pass' is in no pass set")):
        plugin_manager.passes()
    assert "orphan-pass" not in plugin_manager.passes()  # the registry is whole again


def test_a_set_naming_an_unregistered_pass_is_refused():
    broken = PassSet("broken", "test", "names a pass nobody has", ("no-such-pass",))
    with (_with_plugin(_Plugin(sets=[broken])),
          pytest.raises(InputError, match="pass set 'broken' .* unregistered pass 'no-such-pass'")):
        plugin_manager.pass_sets()


def test_two_plugins_registering_one_pass_name_is_refused():
    twin = _noop("remove-unused")
    with (_with_plugin(_Plugin(passes=[twin], sets=[PassSet("twin", "test", "", ("remove-unused",))])),
          pytest.raises(InputError, match="two plugins register pass 'remove-unused'")):
        plugin_manager.passes()


def test_a_set_selects_in_its_own_order_and_refuses_strangers():
    s = PassSet("s", "test", "", ("a", "b", "c"))
    assert s.select(["c", "a", "c"]) == ("a", "c")
    with pytest.raises(InputError, match="'d' is not a pass of the s pass set"):
        s.select(["a", "d"])
    with pytest.raises(ValueError, match="twice"):
        PassSet("t", "test", "", ("a", "a"))


def _chain(n: int = 3) -> onnx.ModelProto:
    """x -> Identity^n -> Relu -> y, plus an unused Neg (something for remove-unused)."""
    nodes = [helper.make_node("Identity", [f"t{i}"], [f"t{i + 1}"], name=f"id{i}") for i in range(n)]
    nodes[0].input[0] = "x"
    nodes += [helper.make_node("Relu", [f"t{n}"], ["y"], name="relu"),
              helper.make_node("Neg", ["x"], ["unused"], name="dead")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _drop_first_identity(model: onnx.ModelProto, ctx, record) -> None:
    """A PROTO pass: bypass the first Identity (rewires its consumer to its input)."""
    first = next(n for n in model.graph.node if n.op_type == "Identity")
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == first.output[0]:
                node.input[i] = first.input[0]
    model.graph.node.remove(first)
    record.add("identity", first.name)
    record.notes.append(f"context {ctx!r}")


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_the_runner_converts_forms_only_between_passes_and_records_each():
    proto_pass = FunctionPass("drop-identity", "test pass", _drop_first_identity, form=PROTO)
    model = ir.from_proto(_chain())
    out, records = run_passes(model, [proto_pass, "remove-unused", proto_pass], ctx="the-context")
    assert form_of(out) == IR  # back in the form it came in
    assert [r.name for r in records] == ["drop-identity", "remove-unused", "drop-identity"]
    assert [(r.nodes_before, r.nodes_after) for r in records] == [(5, 4), (4, 3), (3, 2)]
    assert [r.modified for r in records] == [True, True, True] and all(r.seconds > 0 for r in records)
    assert records[0].sites == {"identity": ["id0"]} and records[2].sites == {"identity": ["id1"]}
    assert records[0].notes == ["context 'the-context'"]
    assert records[1].changed == 0 and records[1].to_json()["nodes_after"] == 3
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(ir.to_proto(out), x), np.maximum(x, 0))


def test_a_pass_that_changes_nothing_is_not_modified():
    model = _chain()
    model.graph.node.pop()  # no dead node left
    out, (record,) = run_passes(model, ["remove-unused"])
    assert form_of(out) == PROTO and not record.modified and record.nodes_before == record.nodes_after == 4
    assert count_nodes(out) == count_nodes(ir.from_proto(out)) == 4


def test_run_pass_set_runs_a_subset_in_the_sets_order():
    _, records = run_pass_set(ir.from_proto(_chain()), "frontend-default", only=["remove-unused", "rewrite-default"])
    assert [r.name for r in records] == ["rewrite-default", "remove-unused"]
    with pytest.raises(InputError, match="not a pass of the frontend-default pass set"):
        run_pass_set(ir.from_proto(_chain()), "frontend-default", only=["fold-constants"])


def test_vlc_passes_run_inside_an_onnx_ir_pass_manager():
    proto_pass = FunctionPass("drop-identity", "test pass", _drop_first_identity, form=PROTO)
    adapted = [as_onnx_ir_pass(proto_pass), as_onnx_ir_pass(plugin_manager.passes()["remove-unused"])]
    model = ir.from_proto(_chain())
    result = ir.passes.PassManager(adapted)(model)
    assert result.modified and count_nodes(result.model) == 3
    assert adapted[0].records[0].sites == {"identity": ["id0"]}
    assert adapted[1].records[0].nodes_before == 4


def test_the_front_end_report_carries_the_records():
    """The fuse-layernorm pass counts what it fused; the record's JSON is what the manifest keeps."""
    from tests.frontend.test_passes import _decomposed_layernorm

    _, (record,) = run_passes(ir.from_proto(_decomposed_layernorm()), ["fuse-layernorm"])
    report = record.to_json()
    # onnxscript counts two rewrites: the LayerNormalization, then its bias Add folded in
    assert report["name"] == "fuse-layernorm" and report["changed"] == 2 and report["modified"]
    assert report["rules"] == {"layer-normalization": 2} and report["nodes_before"] == 9
    assert report["nodes_after"] < 9 and report["seconds"] > 0 and report["keeps_numerics"]

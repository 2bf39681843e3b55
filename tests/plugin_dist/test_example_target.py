"""The example target plugin is its own installed distribution, found through the `vlc` entry
point group, and named nowhere in vlc; its own failure modes (an operator the interpreter lacks,
a tensor that breaks its declared shape under -O check_shapes) are one error line each.

tests/contract/ holds it to everything the built-in targets are held to."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import ROOT, save_onnx
from vlc import plugin_manager
from vlc.errors import CompileError
from vlc.model import specs_from_signature
from vlc.signature import onnx_signature
from vlc.spec import Precision, TargetSpec
from vlc.target import CompileSource

DISTRIBUTION = "vlc-example-target"
TARGET = "onnx-reference"


def test_it_is_an_installed_distribution_loaded_through_the_vlc_entry_point() -> None:
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.fail("vlc-example-target is not installed: ./dev test installs it "
                    "(pip install -c constraints.txt -e tests/plugin_dist)")
    entry_points = [(ep.name, ep.value) for ep in dist.entry_points if ep.group == plugin_manager.ENTRY_POINT_GROUP]
    assert entry_points == [(TARGET, "vlc_example_target.plugin")]
    loaded = {d.project_name for _, d in plugin_manager.get_plugin_manager().list_plugin_distinfo()}
    assert DISTRIBUTION in loaded  # pluggy loaded it from the distribution, not a test's registration
    assert type(plugin_manager.get_target(TARGET)).__module__ == "vlc_example_target.target"


def test_nothing_in_vlc_names_it() -> None:
    """Adding the backend touched its own folder and its entry point only."""
    names = ("onnx-reference", "vlc_example_target", "vlc-example-target")
    product = [ROOT / "pyproject.toml", *(p for folder in ("compiler", "targets", "plugins", "ascend_patches",
                                                           "examples") for p in (ROOT / folder).rglob("*")
                                          if p.is_file() and p.suffix in (".py", ".toml", ".json", ".md"))]
    assert len(product) > 50
    assert [str(p.relative_to(ROOT)) for p in product if any(n in p.read_text(errors="replace") for n in names)] == []


def graph(path: Path, op: str = "Relu", domain: str = "", declared: int = 4) -> CompileSource:
    """x @ W then `op`; the output declared as [N, declared] (the graph computes [N, 4])."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node(op, ["h"], ["y"], domain=domain)]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", declared])], [weight]),
        opset_imports=opsets, ir_version=9)
    save_onnx(model, path)
    return CompileSource(path, str(path), specs_from_signature(onnx_signature(path).inputs))


def compile_(source: CompileSource, out: Path, **options: object):
    spec = TargetSpec(TARGET, Precision.FP32, batch=(1, 2, 4), options=dict(options))
    return plugin_manager.get_target(TARGET).compile(source, spec, out)


def test_an_operator_the_interpreter_lacks_fails_the_compile_in_one_line(tmp_path: Path) -> None:
    source = graph(tmp_path / "custom.onnx", op="Mystery", domain="ai.example")
    with pytest.raises(CompileError) as info:
        compile_(source, tmp_path / "art")
    line = info.value.line()
    assert "\n" not in line and "Mystery" in line and "--target onnxruntime" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.onnx"]


def test_check_shapes_catches_a_tensor_that_breaks_its_declared_shape(tmp_path: Path) -> None:
    source = graph(tmp_path / "wrong.onnx", declared=3)
    with pytest.raises(CompileError) as info:
        compile_(source, tmp_path / "checked", check_shapes="on")
    line = info.value.line()
    assert "\n" not in line and "'y'" in line and "declared dimension value 3" in line, line
    assert not (tmp_path / "checked").exists()
    built = compile_(source, tmp_path / "unchecked", check_shapes="off")  # the interpreter itself does not check
    assert built.manifest["extra"]["onnx_reference"] == {"check_shapes": False, "operators": ["MatMul", "Relu"]}
    outputs = plugin_manager.get_target(TARGET).run(built, {"x": np.ones((2, 4), np.float32)})
    assert outputs["y"].shape == (2, 4)

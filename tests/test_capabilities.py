"""Declared target capabilities: core asks `Target.capabilities`, never probes for methods."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import model_ref
from vlc import plugin_manager
from vlc.target import DYNAMIC, GEARS, PER_BATCH, Target

COMPILER = Path(__file__).resolve().parents[1] / "compiler"


@pytest.mark.parametrize("name", sorted(plugin_manager.targets()))
def test_a_declared_capability_is_implemented_and_an_implemented_one_declared(name):
    target = plugin_manager.targets()[name]
    caps = target.capabilities
    assert caps.preflight == (type(target).preflight is not Target.preflight)
    assert caps.bundles == (type(target).emit_bundle is not Target.emit_bundle)
    assert caps.batch_layouts and set(caps.batch_layouts) <= {DYNAMIC, PER_BATCH, GEARS}
    # a target whose first layout is not dynamic adds its layout to a sweep's options
    swept = target.sweep_options([1, 4, 8], {})
    assert (swept == {}) == (caps.batch_layouts[0] == DYNAMIC)


def test_ascend_sweeps_one_om_per_batch_unless_the_entry_chose_a_layout():
    target = plugin_manager.targets()["ascend310p"]
    assert target.sweep_options([8, 1, 4], {"log": "info"}) == {"log": "info", "batches": [1, 4, 8]}
    assert target.sweep_options([1, 8], {"gears": [1, 8]}) == {"gears": [1, 8]}


def test_emit_is_a_compile_parameter_not_a_target_option():
    for target in plugin_manager.targets().values():
        assert "emit" not in target.options


def test_core_finds_no_capability_by_probing():
    probes = re.compile(r"getattr\((backend|target|tgt|variant\.target|v\.target)\b|callable\(getattr\(")
    found = [f"{path.relative_to(COMPILER)}:{n}" for path in COMPILER.rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if probes.search(line)]
    assert not found


def test_emit_for_a_target_without_bundles_is_one_line(vlc_cli, tmp_path):
    code, _, stderr = vlc_cli("compile", model_ref("mlp"), "-t", "onnxruntime", "--emit", tmp_path / "b")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "target 'onnxruntime' cannot write deploy bundles" in lines[0]
    assert not (tmp_path / "b").exists()


def test_check_without_a_preflight_only_validates_the_spec(vlc_cli):
    code, stdout, _ = vlc_cli("check", model_ref("mlp"), "-t", "onnxruntime")
    assert code == 0 and "has no pre-flight table; the spec is valid" in stdout

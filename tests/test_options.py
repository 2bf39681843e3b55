"""Typed target options: the schema each target declares, parsed and checked by the Target base class."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import model_ref
from vlc import plugin_manager
from vlc.errors import InputError
from vlc.options import OptionInfo, parse_target_options, positive_ints
from vlc.signature import Signature, TensorSig
from vlc.spec import Precision, TargetSpec

SCHEMA = {
    "flag": OptionInfo("a switch", bool, True),
    "count": OptionInfo("a count", int, 3),
    "mode": OptionInfo("a mode", str, "fast", choices=("fast", "slow")),
    "names": OptionInfo("names", list),
    "sizes": OptionInfo("batch sizes", list, parse=positive_ints),
}


def test_values_are_typed_and_defaults_filled():
    typed = parse_target_options("t", SCHEMA, {"flag": "off", "count": "7", "names": "a, b", "sizes": "8,1,8"})
    assert typed == {"flag": False, "count": 7, "mode": "fast", "names": ["a", "b"], "sizes": [1, 8]}
    assert parse_target_options("t", SCHEMA, {}) == {"flag": True, "count": 3, "mode": "fast", "names": None,
                                                     "sizes": None}


@pytest.mark.parametrize("given, words", [
    ({"flag": "maybe"}, ["-O flag=maybe", "is not a boolean"]),
    ({"count": "seven"}, ["-O count=seven", "is not an integer"]),
    ({"count": True}, ["-O count=true", "is not an integer"]),
    ({"mode": "turbo"}, ["-O mode=turbo is not one of fast, slow", "use -O mode=<fast|slow>"]),
    ({"sizes": [4, 0]}, ["-O sizes=[4, 0]", "has a batch size <= 0"]),
    ({"colour": "red"}, ["unknown option(s) colour for target 't'", "count, flag, mode, names, sizes"]),
])
def test_bad_values_are_one_line_naming_option_value_and_choices(given, words):
    with pytest.raises(InputError) as info:
        parse_target_options("t", SCHEMA, given)
    line = info.value.line()
    assert "\n" not in line
    for word in words:
        assert word in line


def test_a_stored_spec_drops_options_this_vlc_does_not_know():
    assert parse_target_options("t", SCHEMA, {"gone": 1}, strict=False)["count"] == 3


def _signature() -> Signature:
    return Signature((TensorSig("x", "float32", ("batch", 4)),), (TensorSig("y", "float32", ("batch", 4)),))


@pytest.mark.parametrize("name", sorted(plugin_manager.targets()))
def test_every_target_types_its_options_without_touching_the_spec_it_was_given(name):
    target = plugin_manager.targets()[name]
    precision = target.precisions[0]
    spec = TargetSpec(name, precision, device=target.devices[0], batch=(1, 2, 4))
    before = copy.deepcopy(spec)
    checked = target.validate_spec(spec, _signature())
    assert spec == before  # a new spec, never the caller's mutated
    assert set(checked.options) == set(target.options)  # every declared option, typed
    assert checked.preset == (target.default_preset if spec.preset is None else spec.preset)
    # what a manifest stores parses back to the same values (and the same cache key)
    stored = TargetSpec.from_json(json.loads(json.dumps(checked.to_json())))
    assert target.parse_options(stored.options) == target.parse_options(checked.options)
    assert stored.key() == checked.key()
    again = target.validate_spec(stored, _signature())
    assert again.key() == checked.key()


def test_equivalent_spellings_share_one_cache_key():
    target = plugin_manager.targets()["onnxruntime"]
    keys = {target.validate_spec(TargetSpec("onnxruntime", options=options), _signature()).key()
            for options in ({}, {"cuda_graph": "on"}, {"cuda_graph": True}, {"conv_algo": "Heuristic"})}
    assert len(keys) == 1


def test_trt_calibration_methods_are_the_precision_pass_methods():
    from vlc.frontend.precision.quantize import METHODS
    from vlc.targets.trt.target import CALIBRATION_METHODS

    assert set(CALIBRATION_METHODS) == set(METHODS)


@pytest.mark.parametrize("option, phrase", [
    ("attention=fastest", "-O attention=fastest is not one of default, flash, efficient, trt-fused, cudnn, math"),
    ("intra_op_threads=many", "-O intra_op_threads=many is not an integer"),
    ("cuda_graph=perhaps", "-O cuda_graph=perhaps is not a boolean"),
])
def test_cli_reports_a_bad_value_in_one_line_before_the_front_end(vlc_cli, tmp_path, option, phrase):
    code, _, stderr = vlc_cli("compile", model_ref("mlp"), "--target", "onnxruntime", "-O", option,
                              "-o", tmp_path / "a")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, stderr
    assert phrase in lines[0]
    assert not (tmp_path / "a").exists()


def test_torch_mode_typed_value_reaches_the_target():
    target = plugin_manager.targets()["torch"]
    spec = target.validate_spec(TargetSpec("torch", Precision.FP32, options={"mode": "compile"}), _signature())
    assert spec.options == {"mode": "compile"}

"""ATC argument lists (golden), verdict parsing, error messages, and the run contract."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vlc.errors import CompileError, InputError
from vlc.signature import Signature, TensorSig
from vlc.spec import Precision, TargetSpec
from vlc.targets.ascend import atc
from vlc.targets.ascend.options import parse_options

STANDINS = Path(__file__).resolve().parents[2] / "standins"  # the stand-in atc, never a real one

VILBERT = Signature(
    inputs=(TensorSig("box_features", "float32", ("batch", 100, 1024)),
            TensorSig("box_coordinates", "float32", ("batch", 100, 4)),
            TensorSig("box_mask", "bool", ("batch", 100)),
            TensorSig("token_ids", "int64", ("batch", 32)),
            TensorSig("mask", "bool", ("batch", 32)),
            TensorSig("type_ids", "int64", ("batch", 32))),
    outputs=(TensorSig("logits", "float32", ("batch", 10026)), TensorSig("probs", "float32", ("batch", 10026))))
IMAGE = Signature(inputs=(TensorSig("pixels", "float32", ("batch", 3, 224, 224)),),
                  outputs=(TensorSig("label", "int64", ("batch",)),))


def opts(target="ascend310p", precision=Precision.FP16, signature=VILBERT, batch=None, **options):
    spec = TargetSpec(target, precision, preset=None, batch=batch, options=options)
    return parse_options(target, spec, signature)


def test_vilbert_reference_flow_args():
    """The reference guide's atc call: framework 5, ND, Ascend310P3, Gelu in high_performance."""
    o = opts(batch=(8, 8, 8), cann=6, implmode="high_performance", implmode_ops=["Gelu"])
    assert atc.atc_args("m.onnx", "out/m", o, VILBERT, 8) == [
        "--framework=5", "--model=m.onnx", "--output=out/m", "--soc_version=Ascend310P3",
        "--input_format=ND",
        "--input_shape=box_features:8,100,1024;box_coordinates:8,100,4;box_mask:8,100;token_ids:8,32;"
        "mask:8,32;type_ids:8,32",
        "--precision_mode=force_fp16", "--op_select_implmode=high_performance",
        "--optypelist_for_implmode=Gelu", "--output_type=FP32", "--log=error"]


def test_gears_args_for_ascend310_fp32_image_model():
    o = opts("ascend310", Precision.FP32, IMAGE, batch=(1, 4, 16), gears=[1, 4, 16], log="info")
    assert atc.atc_args("m.onnx", "m", o, IMAGE, None) == [
        "--framework=5", "--model=m.onnx", "--output=m", "--soc_version=Ascend310",
        "--input_format=NCHW", "--input_shape=pixels:-1,3,224,224", "--dynamic_batch_size=1,4,16",
        "--precision_mode=force_fp32", "--log=info"]


def test_output_type_fp32_only_when_every_output_is_fp32():
    """--output_type=FP32 casts every output; with an int64 output among them it would turn the
    class indices into floats, so it is given only when all outputs are float32."""
    mixed = Signature(inputs=IMAGE.inputs, outputs=(TensorSig("scores", "float32", ("batch", 10)),
                                                     TensorSig("label", "int64", ("batch",))))
    floats = Signature(inputs=IMAGE.inputs, outputs=(TensorSig("scores", "float32", ("batch", 10)),))
    for signature, wanted in ((mixed, False), (IMAGE, False), (floats, True)):
        args = atc.atc_args("m.onnx", "m", opts(signature=signature), signature, 1)
        assert ("--output_type=FP32" in args) is wanted, (signature.outputs, args)


def test_mixed_precision_with_fp32_islands_writes_side_files(tmp_path: Path):
    o = opts(fp32_ops=["LayerNorm"], keep_dtype=["OpType::Softmax", "node_7"], soc_version="Ascend310P1")
    files = atc.write_side_files(o, tmp_path)
    args = atc.atc_args("m.onnx", "m", o, VILBERT, 1, files)
    assert "--precision_mode=allow_mix_precision" in args
    assert f"--keep_dtype={tmp_path / 'keep_dtype.cfg'}" in args
    assert f"--modify_mixlist={tmp_path / 'mixlist.json'}" in args
    assert "--soc_version=Ascend310P1" in args
    assert (tmp_path / "keep_dtype.cfg").read_text() == "OpType::Softmax\nnode_7\n"
    assert '"to-add": [\n      "LayerNorm"' in (tmp_path / "mixlist.json").read_text()


def test_precision_overrides():
    assert opts(cann=8, precision_mode="mixed_float16").precision_flag == ("--precision_mode_v2", "mixed_float16")
    assert opts(precision=Precision.FP32).precision_flag == ("--precision_mode", "must_keep_origin_dtype")
    with pytest.raises(InputError, match="needs CANN 8"):
        opts(cann=7, precision_mode="origin")
    with pytest.raises(InputError, match="not one of"):
        opts(precision_mode="fp8")


@pytest.mark.parametrize("options,match", [
    ({"soc_version": "Ascend310P3"}, "not a chip of target ascend310"),
    ({"cann": 5}, "unknown CANN"),
    ({"gears": [8]}, "ATC takes 2 to 100"),
    ({"gears": [1, 2], "batches": [1]}, "exclude each other"),
    ({"implmode_ops": ["Gelu"]}, "needs implmode"),
    ({"log": "loud"}, "not one of"),
])
def test_option_errors(options, match):
    with pytest.raises(InputError, match=match):
        opts("ascend310", **options)


def test_input_names_that_break_the_syntax_are_refused():
    sig = Signature(inputs=(TensorSig("a;b", "float32", (1, 2)),), outputs=VILBERT.outputs)
    with pytest.raises(InputError, match="--input_shape syntax"):
        atc.input_shape_arg(sig, 1)


SUCCESS_OUT = f"{atc.START_LINE}\nW11001: warning\n{atc.SUCCESS_LINE}\n"
FAILURE_OUT = f"""{atc.START_LINE}
ATC run failed, Please check the detail log, Try 'atc --help' for more information
E19010: No parser is registered for Op [node_trilu, optype [ai.onnx::14::Trilu]].
        Solution: Check the version of the installation package and reinstall the package.
EZ3003: No supported Ops kernel and engine are found for [node_x], optype [Foo].
"""


def test_success_needs_exit_zero_and_the_success_line():
    assert atc.AtcResult(0, SUCCESS_OUT).success
    assert not atc.AtcResult(0, atc.START_LINE).success
    assert not atc.AtcResult(1, SUCCESS_OUT).success


def test_failure_message_names_the_code_the_op_and_the_fix(tmp_path: Path):
    result = atc.AtcResult(1, FAILURE_OUT)
    assert result.codes == ["E19010", "EZ3003"]
    error = atc.failure_message(result, tmp_path / "atc.log")
    assert isinstance(error, CompileError)
    assert "E19010" in error.what and "ai.onnx::14::Trilu" in error.what and "also EZ3003" in error.what
    assert "vlc check" in error.fix and error.where == str(tmp_path / "atc.log")
    gears = atc.failure_message(atc.AtcResult(1, "E10035: too few gears"), None)
    assert "at least 2" in gears.what and "-O gears" in gears.fix
    unknown = atc.failure_message(atc.AtcResult(2, "something broke\n"), None)
    assert "exit 2" in unknown.what and "something broke" in unknown.what


def test_find_atc_reports_why_not(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("VLC_ATC", raising=False)
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(tmp_path / "toolkit"))
    tool, why = atc.find_atc()
    assert tool is None and "toolkit" in why
    monkeypatch.setenv("VLC_ATC", str(tmp_path / "nope"))
    assert "not an executable" in atc.find_atc()[1]


def test_find_atc_sources_set_env(monkeypatch, tmp_path: Path):
    home = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "atc").write_text("#!/bin/sh\nexit 0\n")
    (home / "bin" / "atc").chmod(0o755)
    (home.parent / "set_env.sh").write_text('export VLC_TEST_SET_ENV="it ran"\n')
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("VLC_ATC", raising=False)
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(home))
    tool, why = atc.find_atc()
    assert tool is not None, why
    assert tool.env["VLC_TEST_SET_ENV"] == "it ran"


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _standin(args, cwd):
    return subprocess.run([str(STANDINS / "atc"), *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("args,code", [
    (["--framework", "5"], "E10001"),  # --opt value without '='
    (["--model=m.onnx", "--output=o", "--soc_version=Ascend310P3"], "E10007"),  # no framework
    (["--framework=5", "--model=m.onnx", "--output=o", "--soc_version=Ascend311"], "E10001"),
    (["--framework=5", "--bogus=1"], "E10001"),
])
def test_standin_atc_enforces_the_contract(tmp_path: Path, args, code):
    _tiny_onnx(tmp_path / "m.onnx")
    proc = _standin(args, tmp_path)
    assert proc.returncode != 0 and code in proc.stdout and "ATC run failed" in proc.stdout


def test_run_atc_in_a_temporary_directory(standins, tmp_path: Path, monkeypatch):
    model = _tiny_onnx(tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    tool, why = atc.find_atc()
    assert tool is not None, why
    sig = Signature(inputs=(TensorSig("x", "float32", (1, 4)),), outputs=(TensorSig("y", "float32", (1, 4)),))
    o = opts(signature=sig, batch=(1, 1, 1))
    result = atc.run_atc(tool, atc.atc_args(str(model), str(tmp_path / "out" / "m"), o, sig, 1),
                         tmp_path / "out" / "m", timeout=60)
    assert result.success and result.om_files == [tmp_path / "out" / "m.om"]
    assert "fusion_result.json" in result.output
    assert not (tmp_path / "fusion_result.json").exists()  # ATC's droppings stay out of the cwd

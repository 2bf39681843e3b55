"""`vlc targets` for the TensorRT targets: "compile only" where a target builds but cannot run."""

from __future__ import annotations

import importlib.util
import json

import pytest

from vlc.cli.targets_cmd import runs_here
from vlc.targets.trt.cuda import gpus

no_gpu = pytest.mark.skipif(bool(gpus()[0]), reason="a GPU is present: trt-rtx runs here")
rtx_only = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None
                              or importlib.util.find_spec("tensorrt") is not None,
                              reason="needs TensorRT-RTX without TensorRT")


def test_runs_here_values():
    assert runs_here(True, ["cuda"]) == "yes"
    assert runs_here(True, []) == "compile only"
    assert runs_here(False, []) == "no"


@no_gpu
@rtx_only
def test_table_says_compile_only_for_rtx_and_no_for_trt(vlc_cli):
    code, out, _ = vlc_cli("targets")
    assert code == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert rows["trt-rtx"] == "compile only" and rows["trt"] == "no"
    assert "trt-rtx compiles here but cannot run: no NVIDIA driver" in " ".join(out.split())
    assert "trt cannot run here: TensorRT 10/11 is not installed" in " ".join(out.split())
    assert "use --target trt-rtx" in " ".join(out.split())


@no_gpu
@rtx_only
def test_json_says_compile_only(vlc_cli):
    code, out, _ = vlc_cli("targets", "--json")
    rows = {t["name"]: t for t in json.loads(out)["targets"]}
    assert code == 0
    assert rows["trt-rtx"]["runs_here"] == "compile only" and rows["trt-rtx"]["available"] is True
    assert rows["trt-rtx"]["devices"] == [] and rows["trt-rtx"]["supported_devices"] == ["cuda"]
    assert rows["trt"]["runs_here"] == "no" and "--target trt-rtx" in rows["trt"]["reason"]
    assert rows["onnxruntime"]["runs_here"] == "yes"

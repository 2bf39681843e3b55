"""`vlc targets`: what is registered, what runs here, and why not."""

from __future__ import annotations

import json

import onnxruntime as ort
import torch


def test_targets_json_lists_the_builtin_targets(vlc_cli):
    code, stdout, stderr = vlc_cli("targets", "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    listed = {t["name"]: t for t in data["targets"]}
    assert {"torch", "onnxruntime"} <= set(listed)
    torch_target = listed["torch"]
    assert torch_target["available"] and torch_target["versions"]["torch"] == torch.__version__
    assert torch_target["precisions"] == ["fp32", "tf32", "fp16", "bf16"]
    assert torch_target["devices"] == (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    assert set(torch_target["options"]) == {"mode"}
    ort_target = listed["onnxruntime"]
    assert ort_target["available"] and ort_target["versions"]["onnxruntime"] == ort.__version__
    assert "fp32" in ort_target["precisions"] and "tf32" not in ort_target["precisions"]
    from vlc.plugin_manager import get_target

    # the listing is the target's declared schema, and holds the options users rely on
    assert set(ort_target["options"]) == set(get_target("onnxruntime").options)
    assert {"graph_optimization_level", "intra_op_threads", "providers", "fusions", "cuda_graph", "islands",
            "attention", "conv_algo", "calibration", "strict_precision"} <= set(ort_target["options"])
    assert ort_target["devices"][0] == "cpu"
    assert isinstance(data["load_errors"], list)


def test_targets_table_for_people(vlc_cli):
    code, stdout, stderr = vlc_cli("targets")
    assert code == 0, stderr
    for word in ("target", "runs here", "precisions", "onnxruntime", "torch", "fp32"):
        assert word in stdout

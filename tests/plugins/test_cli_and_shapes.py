"""`vlc plugins` and the activation-shape tracer."""

from __future__ import annotations

import json

from vlc.plugins import DOMAIN, load_decisions, registered_plugins
from vlc.plugins.shapes import load_shapes, trace, unique


def test_vlc_plugins_json_lists_every_plugin_with_status_per_target(vlc_cli):
    code, out, _ = vlc_cli("plugins", "--json")
    assert code == 0
    data = json.loads(out)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert {"silu", "gelu", "layernorm"} <= set(by_name)
    assert by_name["silu"]["op"] == f"{DOMAIN}::SiLU"
    for plugin in by_name.values():
        assert set(plugin["targets"]) == set(data["targets"])
        for entry in plugin["targets"].values():
            assert entry["status"] in ("plugin", "native-preferred", "unsupported") and entry["reason"]
    assert "trt" in data["targets"] and "ascend310p" in data["targets"]
    assert by_name["silu"]["targets"]["trt"]["status"] == "plugin"
    ln_trt = by_name["layernorm"]["targets"]["trt"]
    assert ln_trt["status"] == "native-preferred" and not ln_trt["on_by_default"]
    assert "LayerNormalization" in ln_trt["reason"]
    assert by_name["gelu"]["targets"]["torch"]["status"] == "unsupported"
    # kernels are on by default exactly where decisions.json (the benchmark) says, TensorRT only
    decisions = load_decisions()["decisions"]
    for name, plugin in by_name.items():
        for target, entry in plugin["targets"].items():
            expected = (target in ("trt", "trt-rtx") and entry["status"] == "plugin"
                        and decisions.get(name, {}).get("trt", {}).get("on", False))
            assert entry["on_by_default"] == expected, (name, target)
    if not data["decisions"]["measured"]:
        assert not any(e["on_by_default"] for p in by_name.values() for e in p["targets"].values())


def test_vlc_plugins_table(vlc_cli):
    code, out, _ = vlc_cli("plugins", "--verbose")
    assert code == 0
    for word in ("silu", "gelu", "layernorm", "native-preferred", "kernel off", "GeluFusionPass"):
        assert word in out


def test_third_party_plugins_register_through_the_hook():
    # the built-ins come through register_plugins exactly like an entry-point plugin would
    assert {"silu", "gelu", "layernorm"} <= set(registered_plugins())


def test_tracer_records_every_call_with_shapes():
    import torch
    import torch.nn.functional as F

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = torch.nn.SiLU()
            self.ln = torch.nn.LayerNorm(6, eps=1e-6)

        def forward(self, x):
            return F.gelu(self.ln(self.act(x)), approximate="tanh") + F.gelu(x) + self.act(x)

    calls = unique(trace(M(), (torch.randn(2, 3, 6),)))
    assert {json.dumps(c, sort_keys=True) for c in calls} == {json.dumps(c, sort_keys=True) for c in [
        {"kernel": "silu", "shape": [2, 3, 6], "count": 2},
        {"kernel": "layernorm", "eps": 1e-6, "shape": [2, 3, 6], "count": 1},
        {"kernel": "gelu", "approximate": "tanh", "shape": [2, 3, 6], "count": 1},
        {"kernel": "gelu", "approximate": "none", "shape": [2, 3, 6], "count": 1},
    ]}


def test_committed_shapes_cover_every_example():
    data = load_shapes()
    assert not data["errors"]
    examples = {s["example"] for s in data["shapes"]}
    assert examples == {"vilbert-vqa", "clip-vit-b32-image", "clip-vit-b32-text", "mobilevit-s"}
    kernels = {s["kernel"] for s in data["shapes"]}
    assert kernels == {"silu", "gelu", "layernorm"}

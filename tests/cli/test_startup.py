"""A fast start: printing help or listing targets imports no heavy framework.

Each case runs in a fresh interpreter and looks at sys.modules afterwards, so the check is
deterministic (benchmarks/startup.py measures the time itself).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlc import plugin_manager

# Frameworks that cost from a tenth of a second (onnxruntime) to over a second (torch) to import.
HEAVY = ("torch", "onnx", "onnx_ir", "onnxscript", "onnxruntime")

_PROBE = """
import contextlib, io, json, sys
from vlc.cli.app import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main({argv!r})
print(json.dumps({{"code": code, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def imported_heavy(argv: list[str]) -> list[str]:
    """The heavy modules a fresh `vlc ARGV` process has imported when it finishes."""
    done = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv, heavy=HEAVY)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    return result["heavy"]


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--version"], ["compile", "--help"],
                                  ["run", "-h"], ["profile", "--help"], ["bench", "--help"]])
def test_help_imports_no_framework(argv: list[str]) -> None:
    assert imported_heavy(argv) == []


@pytest.mark.parametrize("argv", [["targets"], ["targets", "--json"]])
def test_listing_targets_imports_no_framework(argv: list[str]) -> None:
    # onnxruntime is the onnxruntime target's own availability probe (a tenth of a second):
    # allowed; torch, onnx and the rewriters are not
    assert [m for m in imported_heavy(argv) if m != "onnxruntime"] == []


def test_deferred_plugin_modules_implement_only_register_plugins() -> None:
    """A deferred module is imported only through its register_plugins stand-in: any other hook it
    implements would silently never be called."""
    import importlib

    for name in plugin_manager.DEFERRED_OP_PLUGINS:
        module = importlib.import_module(name)
        hooks = sorted(attr for attr in dir(module) if hasattr(getattr(module, attr), "vlc_impl"))
        assert hooks == ["register_plugins"], (name, hooks)


def test_deferred_op_plugins_still_register() -> None:
    assert {"silu", "gelu", "layernorm"} <= set(plugin_manager.op_plugins())


def test_torch_probe_agrees_with_torch(tmp_path) -> None:
    """`vlc targets` reads a CPU build's torch version from metadata; it must say what torch says."""
    import torch

    from vlc.targets.torch.target import TorchTarget, _built_cuda

    status = TorchTarget().available()
    assert status.ok and status.versions["torch"] == torch.__version__
    assert ("cuda" in status.devices) == torch.cuda.is_available()
    built = tmp_path / "version.py"
    built.write_text("from typing import Optional\n__version__ = '2.5.1'\ncuda: Optional[str] = '12.4'\n")
    assert _built_cuda(built) == "12.4"  # a CUDA build: available() asks torch itself
    built.write_text("cuda: Optional[str] = None\n")
    assert _built_cuda(built) is None

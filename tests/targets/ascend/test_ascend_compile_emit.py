"""`vlc compile --emit DIR`: a deploy bundle from a machine without any Ascend tool, and a clear
refusal for targets that cannot write one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vlc.cli.app import main

ROOT = Path(__file__).resolve().parents[3]
MLP = f"{ROOT / 'tests' / 'models.py'}:mlp"


def test_compile_emit_writes_a_bundle_without_a_toolchain(tmp_path, no_toolkit, capsys, monkeypatch):
    from vlc.plugin_manager import get_target

    monkeypatch.chdir(tmp_path)  # where a default artifact directory would appear

    assert not get_target("ascend310p").available().ok  # nothing here could build or run it
    bundle = tmp_path / "bundle"
    argv = ["compile", MLP, "--target", "ascend310p", "-p", "fp16", "--batch", "1,2,4", "--emit", str(bundle),
            "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["artifact"] == str(bundle) and summary["files"] == {"main": "bundle.json"}
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["model"] == "mlp" and meta["precision"] == "fp16"
    assert [b["batches"] for b in meta["builds"]] == [[1], [2], [4]]
    for script in ("compile.sh", "run.sh", "profile.sh"):
        assert os.access(bundle / script, os.X_OK)
    assert " --soc_version=Ascend310P3 " in (bundle / "compile.sh").read_text()
    assert sorted(p.name for p in (bundle / "inputs").iterdir()) == ["bs1", "bs2", "bs4"]
    assert not (tmp_path / "artifacts").exists()
    # a bundle is copied to the target machine: it names no path of this one, and carries its source graph
    for name in ("bundle.json", "manifest.json"):
        assert str(tmp_path / "cache") not in (bundle / name).read_text(), name
    assert meta["source"]["onnx"] == "source.onnx" and (bundle / "source.onnx").is_file()

    assert main(argv) == 0  # again, in words: the earlier bundle is replaced
    assert "deploy bundle written" in capsys.readouterr().out


def test_compile_emit_is_refused_for_targets_without_bundles(tmp_path, no_toolkit, capsys):
    argv = ["compile", MLP, "--target", "onnxruntime", "--emit", str(tmp_path / "b"),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "target 'onnxruntime' cannot write deploy bundles" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists() and not (tmp_path / "cache").exists()  # refused before the front end

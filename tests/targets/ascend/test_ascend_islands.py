"""islands=auto for Ascend: the fp32 nodes vlc's search finds on the patched graph go into ATC's
--keep_dtype file, for bundles (no toolkit) and builds (STAND-IN atc, tests/standins)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from tests.frontend.precision.island_graphs import mixed_graph
from vlc.cli.app import main

# what fp16 overflows in the mixed graph: an Exp, two ReduceSums, and what reads the sums next
KEPT_OPS = sorted(["Exp", "ReduceSum", "ReduceSum", "Div", "Add", "Sqrt", "Div"])


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    mixed_graph(tmp_path / "mixed.onnx")
    return tmp_path / "mixed.onnx"


def _kept_ops(keep_file: Path, graph: Path) -> list[str]:
    names = keep_file.read_text().split()
    op_of = {n.name: n.op_type for n in onnx.load(str(graph)).graph.node}
    assert set(names) <= set(op_of), set(names) - set(op_of)  # ATC finds every listed node by name
    return sorted(op_of[n] for n in names)


def test_bundle_lists_the_overflowing_nodes_in_keep_dtype(mixed, tmp_path, no_toolkit, capsys):
    bundle = tmp_path / "bundle"
    code = main(["compile", str(mixed), "-t", "ascend310p", "-p", "fp16", "-O", "islands=auto",
                 "-O", "keep_dtype=OpType::Softmax", "--batch", "4", "--emit", str(bundle),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    lines = (bundle / "keep_dtype.cfg").read_text().split()
    assert lines[0] == "OpType::Softmax"  # the user's entries first, then the search's
    (bundle / "auto.cfg").write_text("\n".join(lines[1:]) + "\n")
    assert _kept_ops(bundle / "auto.cfg", bundle / "model_bs4.onnx") == KEPT_OPS
    assert "--keep_dtype=keep_dtype.cfg" in (bundle / "compile.sh").read_text()
    record = json.loads((bundle / "precision_islands.json").read_text())
    assert record["builds"]["bs4"]["passed"] and record["builds"]["bs4"]["min_cosine"] >= 0.999
    search = record["search"]
    assert search["chosen"]["fp32_nodes"] < search["static"]["fp32_nodes"]
    assert str(tmp_path) not in (bundle / "precision_islands.json").read_text()  # bundles travel


def test_build_records_the_choice_and_passes_keep_dtype(mixed, tmp_path, standins, capsys):
    out = tmp_path / "art"
    code = main(["compile", str(mixed), "-t", "ascend310p", "-p", "fp16", "-O", "islands=auto",
                 "-O", "accuracy=0.9995", "--batch", "2,4,4", "-O", "batches=[2,4]", "-o", str(out),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    precision = manifest["extra"]["precision"]
    assert precision["search"]["goal"]["min_cosine"] == 0.9995
    assert set(precision["builds"]) == {"bs2", "bs4"} and all(b["passed"] for b in precision["builds"].values())
    for build in manifest["extra"]["builds"]:
        assert "--keep_dtype=<artifact>/keep_dtype.cfg" in build["atc_args"]
        assert _kept_ops(out / "keep_dtype.cfg", out / build["onnx"]) == KEPT_OPS


@pytest.mark.parametrize("extra,message", [(["-p", "fp32"], "islands=auto chooses the fp32 nodes of an fp16"),
                                           (["-p", "fp16", "-O", "precision_mode=must_keep_origin_dtype"],
                                            "must_keep_origin_dtype ignores"),
                                           (["-p", "fp16", "-O", "accuracy=0"], "accuracy=0")])
def test_auto_islands_option_errors(mixed, tmp_path, no_toolkit, capsys, extra, message):
    code = main(["compile", str(mixed), "-t", "ascend310p", "-O", "islands=auto", *extra, "--batch", "4",
                 "--emit", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err

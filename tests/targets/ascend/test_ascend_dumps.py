"""Op dumps of Ascend bundles and bisection of .om artifacts, against the STAND-IN atc, ais_bench
and msaccucmp.py (tests/standins): dump.sh runs as written, the stand-in ais_bench dumps every
op's output (computed with ONNX Runtime on the patched graph, one op optionally corrupted through
STANDIN_CORRUPT_OP), and `vlc ascend import` names the first divergent node. No real Ascend tool
or device is involved: what the layout of real dumps is has never been checked here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from standin_env import STANDINS, standin_path

from tests.conftest import model_ref
from vlc.spec import Precision, TargetSpec

pytest.importorskip("torch")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": standin_path(), "VLC_AIS_BENCH": str(STANDINS / "ais_bench_cli"),
            "MSACCUCMP": str(STANDINS / "msaccucmp.py"), "STANDIN_CANN": "8", **extra}


def _script(bundle: Path, name: str, **extra: str) -> None:
    proc = subprocess.run(["bash", str(bundle / name)], env=_env(**extra), capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _bundle(tmp_path_factory, factory: str, precision: Precision) -> Path:
    from vlc.frontend.pipeline import prepare
    from vlc.targets.ascend.bundle import emit_bundle

    source = prepare(model_ref(factory))
    bundle = emit_bundle(source, TargetSpec("ascend310p", precision, batch=(2, 2, 2)),
                         tmp_path_factory.mktemp(factory) / "bundle")
    _script(bundle, "compile.sh")
    return bundle


@pytest.fixture(scope="module")
def cnn_bundle(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory, "cnn", Precision.FP16)


@pytest.fixture(scope="module")
def mlp_bundle(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory, "mlp", Precision.FP32)


def _graph(bundle: Path) -> onnx.ModelProto:
    meta = json.loads((bundle / "bundle.json").read_text())
    return onnx.load(str(bundle / meta["builds"][0]["onnx"]))


def _layerwise(bundle: Path):
    from vlc.targets.ascend.bundle import import_results

    results = import_results(bundle)
    reports = results.layerwise()
    assert sorted(reports) == [2]
    return reports[2]


def _assert_named_first(report, node: str) -> None:
    first = report.first_divergent
    assert first is not None and first.node == node, (first, node)
    assert not first.passed and first.inputs_passed
    before = [c for c in report.nodes if c.index < first.index]
    assert before and all(c.passed for c in before)


def test_bundle_scripts_dump_in_the_documented_layout(cnn_bundle):
    _script(cnn_bundle, "dump.sh")
    here = cnn_bundle / "results" / "dump" / "bs2"
    config = json.loads((here / "acl.json").read_text())["dump"]
    assert config["dump_mode"] == "output" and config["dump_list"] == [{"model_name": "model_bs2"}]
    raw = [p for p in (here / "dump").rglob("*") if p.is_file()]
    # dump_path/<time>/<device>/<model>/<model id>/<execution>/<type>.<name>.<task>.<stream>.<timestamp>
    parts = raw[0].relative_to(here / "dump").parts
    assert len(parts) == 6 and len(parts[0]) == 14 and parts[1:5] == ("0", "model_bs2", "1", "0")
    assert all(len(p.name.split(".")) == 5 and len(p.name.split(".")[-1]) == 16 for p in raw)
    converted = sorted(p.name for p in (here / "npy").glob("*.npy"))
    assert len(converted) == len(raw) and all(".output.0." in n for n in converted)
    assert (cnn_bundle / "om" / "model_bs2.json").is_file()  # atc --mode=1 ran in compile.sh
    text = (cnn_bundle / "README.md").read_text()
    assert "--acl_json_path results/dump/bs<N>/acl.json" in text and "Never checked on hardware" in text


def test_clean_dump_shows_no_divergence(cnn_bundle):
    _script(cnn_bundle, "dump.sh")
    report = _layerwise(cnn_bundle)
    assert report.first_divergent is None and report.passed
    convs = [n.name for n in _graph(cnn_bundle).graph.node if n.op_type == "Conv"]
    assert {c.node for c in report.nodes} >= set(convs) and len(report.nodes) >= 8
    assert any("NC1HWC0 x2" in n for n in report.notes)  # the stand-in dumps Conv outputs in 5HD
    assert any("atc --mode=1" in n for n in report.notes)
    assert report.tolerance.min_cosine == 0.999  # an fp16 build: fp16's tolerance


def test_a_corrupted_op_is_named_first_after_import(cnn_bundle, vlc_cli, tmp_path):
    convs = [n.name for n in _graph(cnn_bundle).graph.node if n.op_type == "Conv"]
    _script(cnn_bundle, "dump.sh", STANDIN_CORRUPT_OP=convs[1])
    page = tmp_path / "ops.html"
    code, out, err = vlc_cli("ascend", "import", cnn_bundle, "--json", "--html", page)
    assert code == 0, err
    data = json.loads(out)
    (report,) = data["layerwise"]
    first = report["first_divergent"]
    assert report["batch"] == 2 and first["node"] == convs[1] and first["op_type"] == "Conv"
    assert first["candidate_tensor"] == f"{convs[1]}:0" and first["passed"] is False
    assert {n["node"] for n in report["nodes"] if not n["passed"]} and report["compared"] >= 8
    assert all(n["passed"] for n in report["nodes"] if n["index"] < first["index"])
    assert "data:image/png;base64," in page.read_text() and convs[1] in page.read_text()
    code, out, err = vlc_cli("ascend", "import", cnn_bundle)
    assert code == 0, err
    assert f"first divergent node: {convs[1]} (Conv)" in out


def test_a_fused_op_is_mapped_to_the_nodes_it_covers(mlp_bundle, vlc_cli):
    graph = _graph(mlp_bundle).graph
    consumers = {i: n for n in graph.node for i in n.input}
    fused = [(n, consumers[n.output[0]]) for n in graph.node
             if n.op_type == "Gemm" and consumers.get(n.output[0]) is not None
             and consumers[n.output[0]].op_type == "Relu"]
    assert fused, "the MLP has a Gemm feeding a Relu"
    gemm, relu = fused[0]
    _script(mlp_bundle, "dump.sh", STANDIN_CORRUPT_OP=gemm.name)
    report = _layerwise(mlp_bundle)
    _assert_named_first(report, relu.name)  # the fused op's output is the Relu's
    first = report.first_divergent
    assert first.covers == [gemm.name, relu.name] and first.candidate_tensor == f"{gemm.name}{relu.name}:0"
    assert gemm.output[0] in report.unmatched  # computed inside the fused op: never dumped
    code, out, err = vlc_cli("ascend", "import", mlp_bundle)
    assert code == 0, err
    assert f"fused op {gemm.name}{relu.name}:0 covering {gemm.name}, {relu.name}" in out
    # without atc --mode=1's JSON the fused op is found from its concatenated name
    (mlp_bundle / "om" / "model_bs2.json").rename(mlp_bundle / "om" / "model_bs2.json.away")
    try:
        by_name = _layerwise(mlp_bundle)
    finally:
        (mlp_bundle / "om" / "model_bs2.json.away").rename(mlp_bundle / "om" / "model_bs2.json")
    assert by_name.first_divergent.node == relu.name and by_name.first_divergent.covers == [gemm.name, relu.name]
    assert any("names only" in n for n in by_name.notes)


def test_a_corrupted_matmul_of_a_transformer_is_named_first(tmp_path_factory):
    bundle = _bundle(tmp_path_factory, "transformer", Precision.FP16)
    _script(bundle, "dump.sh")
    clean = _layerwise(bundle)
    assert clean.first_divergent is None and len(clean.nodes) >= 40
    assert any("FRACTAL_NZ" in n for n in clean.notes)  # the stand-in dumps MatMul outputs in NZ
    matmuls = [n.name for n in _graph(bundle).graph.node if n.op_type == "MatMul"]
    _script(bundle, "dump.sh", STANDIN_CORRUPT_OP=matmuls[len(matmuls) // 2])
    _assert_named_first(_layerwise(bundle), matmuls[len(matmuls) // 2])


def test_unconverted_dumps_say_what_to_run(mlp_bundle, tmp_path):
    from vlc.targets.ascend.bundle import import_results

    _script(mlp_bundle, "dump.sh", MSACCUCMP=str(tmp_path / "absent.py"))
    results = import_results(mlp_bundle)
    assert not results.dumps
    assert any("msaccucmp.py convert" in m and "results/dump/bs2/npy" in m for m in results.missing)


# ---- layouts and names, against independently built arrays ------------------------------------

def test_device_layouts_are_undone():
    from vlc.targets.ascend.dumps import to_reference_layout

    rng = np.random.default_rng(0)
    nchw = rng.standard_normal((2, 20, 3, 5)).astype(np.float32)
    fivehd = np.zeros((2, 2, 3, 5, 16), np.float32)  # channel c lives at [:, c // 16, :, :, c % 16]
    for c in range(20):
        fivehd[:, c // 16, :, :, c % 16] = nchw[:, c]
    back, how = to_reference_layout(fivehd, nchw.shape)
    assert how == "NC1HWC0" and np.array_equal(back, nchw)
    nd = rng.standard_normal((3, 20, 40)).astype(np.float32)
    nz = np.zeros((3, 3, 2, 16, 16), np.float32)  # (..., N1, M1, M0, N0): element (m, n) at [n//16, m//16, m%16, n%16]
    for m in range(20):
        for n in range(40):
            nz[:, n // 16, m // 16, m % 16, n % 16] = nd[:, m, n]
    back, how = to_reference_layout(nz, nd.shape)
    assert how == "FRACTAL_NZ" and np.array_equal(back, nd)
    assert to_reference_layout(nchw.reshape(2, 20, 15), nchw.shape)[0] is None  # no known layout
    assert to_reference_layout(nchw[:, :16].reshape(2, 16, 15), (2, 16, 3, 5))[0] is None


def test_op_names_map_through_their_file_form_and_concatenation():
    from vlc.debug.graph import Node
    from vlc.targets.ascend.dumps import DumpedOutput, map_dumps, sanitized

    nodes = [Node(0, "/blocks.0/conv/Conv", "Conv", ("x",), ("a",)),
             Node(1, "/blocks.0/act/Relu", "Relu", ("a",), ("b",)),
             Node(2, "head", "Gemm", ("b",), ("y",))]
    assert sanitized(nodes[0].name) == "_blocks_0_conv_Conv"
    fused = sanitized(nodes[0].name + nodes[1].name)
    dumped = {name: {0: DumpedOutput("T", name, 0, Path(f"{name}.npy"))} for name in (fused, "head", "TransData_7")}
    mapped, unmapped = map_dumps(dumped, nodes)
    assert mapped["b"].covers == (nodes[0].name, nodes[1].name) and mapped["y"].covers == ("head",)
    assert "a" not in mapped and unmapped == ["TransData_7"]


# ---- bisection of a built .om through the stand-ins ---------------------------------------------

def test_bisection_rebuilds_the_om_with_marked_outputs(standins, tmp_path, monkeypatch):
    from vlc.debug import debug_accuracy
    from vlc.frontend.pipeline import prepare
    from vlc.plugin_manager import get_target

    source = prepare(model_ref("cnn"))
    artifact = get_target("ascend310p").compile(source, TargetSpec("ascend310p", Precision.FP16, batch=(1, 1, 1)),
                                                 tmp_path / "art")
    convs = [n.name for n in onnx.load(str(source.onnx_path)).graph.node if n.op_type == "Conv"]
    clean = debug_accuracy(model_ref("cnn"), str(artifact.path), bisect=True, window=3)
    assert clean.first_divergent is None and any("1 rebuild(s)" in n for n in clean.notes)
    monkeypatch.setenv("STANDIN_CORRUPT_OP", convs[1])
    report = debug_accuracy(model_ref("cnn"), str(artifact.path), bisect=True, window=3)
    assert report.mode == "bisect" and report.first_divergent.node == convs[1]
    assert any("bisection on the compiled ascend310p file" in n for n in report.notes)
    assert not any("cannot expose" in n for n in report.notes)  # the .om itself was probed
    shutil.rmtree(artifact.path)


def test_a_bundle_given_to_debug_accuracy_points_at_the_import(mlp_bundle, vlc_cli):
    code, _, err = vlc_cli("debug", "accuracy", model_ref("mlp"), mlp_bundle)
    assert code == 2 and "deploy bundle" in err and "vlc ascend import" in err
    assert len(err.strip().splitlines()) == 1, err

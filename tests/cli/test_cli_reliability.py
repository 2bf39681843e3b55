"""Inputs that used to crash vlc, end it with the wrong status, or lose data: markup in paths,
sys.exit() in model code, output names that are numpy.savez parameters, mathtext and HTML in
machine names, duplicate inputs, Ctrl-C, impossible options, and the user mistakes that got the
generic "report it if it looks like a vlc bug" line. Each gives a correct result or one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.cli.test_cli_errors import nothing_left, one_line_error
from tests.conftest import model_ref

GENERIC = "report it if it looks like a vlc bug"
OUTPUT_NAMES = ("file", "allow_pickle", "y")  # the first two are parameters of numpy.savez


def write_onnx(path: Path) -> Path:
    """x[batch, 4] -> three outputs named after numpy.savez's parameters (and one plain)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["file"]),
             helper.make_node("Relu", ["h"], ["allow_pickle"]), helper.make_node("Neg", ["h"], ["y"])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in OUTPUT_NAMES]
    graph = helper.make_graph(nodes, "outnames", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["batch", 4])], outputs, [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return write_onnx(tmp_path_factory.mktemp("model") / "outnames.onnx")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, onnx_model) -> Path:
    """An onnxruntime artifact for batches 1..4, compiled opt batch 2."""
    from vlc.cli.app import main

    root = tmp_path_factory.mktemp("art")
    out = root / "art"
    assert main(["compile", str(onnx_model), "-t", "onnxruntime", "--batch", "1,2,4", "-o", str(out),
                 "--cache-dir", str(root / "cache")]) == 0
    return out


def no_generic_line(result: tuple[int, str, str], code: int, *phrases: str) -> str:
    line = one_line_error(result, code, *phrases)
    assert GENERIC not in line, line
    return line


# ---- 5: rich markup in paths and messages -------------------------------------------------------

def test_markup_in_a_missing_path_is_printed_as_typed(vlc_cli, tmp_path):
    no_generic_line(vlc_cli("compile", tmp_path / "nope[/]x.onnx", "-t", "onnxruntime", "-o", tmp_path / "a"),
                    2, "nope[/]x.onnx does not exist")
    no_generic_line(vlc_cli("run", tmp_path / "art[/]nope"), 2, "art[/]nope does not exist")
    no_generic_line(vlc_cli("compile", tmp_path / "m.onnx", "--bo[/]gus"), 2, "--bo[/]gus")


@pytest.mark.parametrize("name", ["out[red]y", "out[/]x", "br[bold]ack[red]"])
def test_markup_in_an_output_path_is_printed_as_typed(vlc_cli, tmp_path, onnx_model, name):
    out = tmp_path / name
    code, stdout, stderr = vlc_cli("compile", onnx_model, "-t", "onnxruntime", "-o", out)
    assert code == 0, stderr
    assert f"artifact: {out}" in stdout
    assert (out / "manifest.json").is_file()


# ---- 6: sys.exit() in model code ----------------------------------------------------------------

def test_sys_exit_in_a_factory_or_at_import_is_an_error(vlc_cli, tmp_path):
    (tmp_path / "exits.py").write_text("import sys\n\ndef factory():\n    sys.exit(0)\n")
    (tmp_path / "exitimport.py").write_text("import sys\nsys.exit(0)\n\ndef factory():\n    pass\n")
    no_generic_line(vlc_cli("compile", f"{tmp_path / 'exits.py'}:factory", "-t", "onnxruntime",
                            "-o", tmp_path / "a"), 2, "the model factory called sys.exit(0)")
    no_generic_line(vlc_cli("compile", f"{tmp_path / 'exitimport.py'}:factory", "-t", "onnxruntime",
                            "-o", tmp_path / "a"), 2, "exitimport.py called sys.exit(0)", "__main__")
    nothing_left(tmp_path, "a")


def test_ctrl_c_in_a_factory_still_interrupts(vlc_cli, tmp_path):
    from vlc.frontend.loader import load_model

    (tmp_path / "interrupts.py").write_text("def factory():\n    raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load_model(f"{tmp_path / 'interrupts.py'}:factory")
    code, _, stderr = vlc_cli("compile", f"{tmp_path / 'interrupts.py'}:factory", "-t", "onnxruntime",
                              "-o", tmp_path / "a")
    assert code == 130 and stderr.strip() == "interrupted"


# ---- 7: output names that are numpy.savez parameters ---------------------------------------------

def test_run_saves_outputs_named_like_savez_parameters(vlc_cli, tmp_path, artifact):
    code, _, stderr = vlc_cli("run", artifact, "--batch", "3", "-o", tmp_path / "outs")
    assert code == 0, stderr
    with np.load(tmp_path / "outs" / "outputs.npz") as archive:
        stored = {k: archive[k] for k in archive.files}
    assert sorted(stored) == sorted(OUTPUT_NAMES)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(stored[name], np.load(tmp_path / "outs" / f"{name}.npy"))
        assert stored[name].shape == (3, 4) and stored[name].std() > 0.1
    assert not (stored["file"] == stored["y"]).all()  # each member holds its own output


# ---- 8: machine names with mathtext or HTML -------------------------------------------------------

def _results(tmp_path: Path, *machines: str) -> Path:
    """Records of each machine, all with one device name (so plot labels name the machine)."""
    from tests.report.test_records import ok_record
    from vlc.records import write_record

    results = tmp_path / "results"
    for machine in machines:
        for batch, median in ((1, 0.4), (8, 1.05)):
            write_record(results, ok_record(machine=machine, batch=batch, latency_ms={
                "count": 5, "min": median * .9, "max": median * 1.3, "mean": median, "median": median,
                "p90": median * 1.2, "p95": median * 1.25, "p99": median * 1.29, "std": 0.01, "cv": 0.01}))
    return results


def test_report_with_mathtext_in_a_machine_name(vlc_cli, tmp_path):
    machine = r"$\frac{a}$ box_^"
    code, _, stderr = vlc_cli("report", _results(tmp_path, machine, "box"), "-o", tmp_path / "r.html")
    assert code == 0, stderr
    text = (tmp_path / "r.html").read_text()
    assert f"@ {machine}" in text  # the label the plots draw too
    assert text.count("data:image/png;base64,") >= 2


def test_markdown_report_escapes_html_in_a_machine_name(vlc_cli, tmp_path):
    machine = "<img src=x onerror=alert(1)>"
    code, _, stderr = vlc_cli("report", _results(tmp_path, machine), "-o", tmp_path / "r.md")
    assert code == 0, stderr
    text = (tmp_path / "r.md").read_text()
    assert "<img" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


# ---- 9: the same input twice in one directory -------------------------------------------------------

def test_an_input_directory_with_the_same_input_twice(vlc_cli, tmp_path, artifact):
    folder = tmp_path / "mixed"
    folder.mkdir()
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.save(folder / "x.npy", x)
    np.savez(folder / "more.npz", x=x + 1)
    no_generic_line(vlc_cli("run", artifact, "-i", folder), 2, "input 'x' is given twice in", "more.npz",
                    "x.npy")


# ---- 10: Ctrl-C while vlc starts ------------------------------------------------------------------

def test_ctrl_c_while_the_commands_load(tmp_path):
    # a real SIGINT, delivered while build_app() registers the plugins' commands
    script = ("import os, signal, vlc.cli.app as app, vlc.plugin_manager as pm\n"
              "real = pm.get_plugin_manager\n"
              "def interrupted():\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    return real()\n"
              "pm.get_plugin_manager = interrupted\n"
              "raise SystemExit(app.main(['targets']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "interrupted"


# ---- 13: ordinary mistakes get their own line, not the generic one -----------------------------------

def test_a_file_as_cache_dir_or_record_dir(vlc_cli, tmp_path, onnx_model, artifact):
    (tmp_path / "afile").write_text("x")
    no_generic_line(vlc_cli("compile", onnx_model, "-t", "onnxruntime", "-o", tmp_path / "a",
                            "--cache-dir", tmp_path / "afile"), 2, "afile")
    nothing_left(tmp_path, "a")
    no_generic_line(vlc_cli("profile", artifact, "-n", "2", "--warmup", "1", "--record",
                            tmp_path / "afile" / "sub"), 2, "afile")


def test_output_paths_below_a_file_or_the_current_directory(vlc_cli, tmp_path, onnx_model, monkeypatch):
    (tmp_path / "afile").write_text("x")
    no_generic_line(vlc_cli("export", onnx_model, "-o", tmp_path / "afile" / "x.onnx"), 2, "afile")
    results = _results(tmp_path, "box")
    no_generic_line(vlc_cli("report", results, "-o", tmp_path / "afile" / "r.html"), 2, "afile")
    monkeypatch.chdir(tmp_path)
    no_generic_line(vlc_cli("compile", onnx_model, "-t", "onnxruntime", "-o", "."), 2, "current directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "results"]


def test_model_references_without_a_factory_or_with_numpy_examples(vlc_cli, tmp_path):
    no_generic_line(vlc_cli("compile", ":factory", "-t", "onnxruntime", "-o", tmp_path / "a"), 2,
                    "model reference ':factory' needs a file or module and a factory name")
    (tmp_path / "npex.py").write_text("import numpy as np, torch\n\ndef factory():\n"
                                      "    return torch.nn.Linear(4, 2), np.ones((2, 4), np.float32)\n")
    no_generic_line(vlc_cli("compile", f"{tmp_path / 'npex.py'}:factory", "-t", "onnxruntime",
                            "-o", tmp_path / "a"), 2, "example inputs must be torch tensors, got ndarray",
                    "torch.from_numpy")
    nothing_left(tmp_path, "a")


def test_a_truncated_npy_with_a_huge_header_shape(vlc_cli, tmp_path, artifact):
    path = tmp_path / "x.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (1_000_000, 1_000_000, 4)})
        f.write(np.ones(16, np.float32).tobytes())
    no_generic_line(vlc_cli("run", artifact, "-i", path), 2, "x.npy is truncated", "64 bytes")


def _bundle(tmp_path: Path, text: str) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "bundle.json").write_text(text)
    return bundle


def test_ascend_import_of_a_malformed_bundle_description(vlc_cli, tmp_path):
    from vlc.targets.ascend.bundle import BUNDLE_SCHEMA

    no_generic_line(vlc_cli("ascend", "import", _bundle(tmp_path / "a", "{not json")), 2,
                    "bundle.json is not valid JSON")
    no_generic_line(vlc_cli("ascend", "import", _bundle(tmp_path / "b", "[1]")), 2, "not an object")
    meta = json.dumps({"schema": BUNDLE_SCHEMA, "target": "ascend310p"})
    no_generic_line(vlc_cli("ascend", "import", _bundle(tmp_path / "c", meta)), 2, "lacks 'soc_version'")


# ---- 14/15: impossible options -----------------------------------------------------------------------

@pytest.mark.parametrize("option", [["--batch", "0"], ["--batch", "-1"], ["--batch", "0,1,2"],
                                    ["--shapes", "x:-1x4"], ["--shapes", "x:0x4,2x4,4x4"]])
def test_non_positive_batch_sizes_and_dimensions(vlc_cli, tmp_path, onnx_model, option):
    line = no_generic_line(vlc_cli("compile", onnx_model, "-t", "onnxruntime", *option, "-o", tmp_path / "a"),
                           2, "must be >= 1")
    assert "not ordered" not in line and "MIN<=OPT<=MAX" not in line.split(" — ")[0]
    nothing_left(tmp_path, "a")


def test_empty_batch_is_refused_not_ignored(vlc_cli, tmp_path, onnx_model, artifact):
    no_generic_line(vlc_cli("compile", onnx_model, "-t", "onnxruntime", "--batch", "", "-o", tmp_path / "a"),
                    2, "--batch is empty")
    nothing_left(tmp_path, "a")
    no_generic_line(vlc_cli("profile", artifact, "--batch", "", "-n", "2"), 2, "--batch")


def test_batch_that_is_not_a_number_is_one_line(vlc_cli, artifact):
    line = no_generic_line(vlc_cli("run", artifact, "--batch", "abc"), 2, "--batch", "vlc run --help")
    assert "╭" not in line


def test_batch_outside_the_range_keeps_the_compiled_opt_batch(vlc_cli, tmp_path, artifact):
    no_generic_line(vlc_cli("run", artifact, "--batch", "6"), 2, "recompile with --batch 1,2,6")
    np.save(tmp_path / "x.npy", np.ones((6, 4), np.float32))
    no_generic_line(vlc_cli("run", artifact, "-i", tmp_path / "x.npy"), 2, "recompile with --batch 1,2,6")


def test_a_batch_0_input_file_is_refused_like_batch_0(vlc_cli, tmp_path, artifact):
    np.save(tmp_path / "x.npy", np.ones((0, 4), np.float32))
    no_generic_line(vlc_cli("run", artifact, "-i", tmp_path / "x.npy"), 2, "input 'x' has batch 0",
                    "must be >= 1")
    no_generic_line(vlc_cli("run", artifact, "--batch", "0"), 2, "must be >= 1")


def test_opset_on_an_onnx_input_is_refused(vlc_cli, tmp_path, onnx_model):
    no_generic_line(vlc_cli("compile", onnx_model, "-t", "onnxruntime", "--opset", "99999", "-o", tmp_path / "a"),
                    2, "--opset 99999 applies to PyTorch exports only")
    nothing_left(tmp_path, "a")
    for opset in ("0", "99999"):  # a PyTorch model: only opsets the installed onnx defines
        no_generic_line(vlc_cli("export", model_ref("mlp"), "--opset", opset, "-o", tmp_path / "e" / "m.onnx"),
                        2, f"--opset {opset} is not an ONNX opset")
    assert not (tmp_path / "e" / "m.onnx").exists()


@pytest.mark.parametrize("option, phrase", [(["--atol", "-1"], "--atol -1.0 must be >= 0"),
                                            (["--rtol", "-1"], "--rtol -1.0 must be >= 0"),
                                            (["--min-cosine", "2"], "--min-cosine 2.0 is outside -1..1")])
def test_compare_tolerances_that_can_only_fail(vlc_cli, artifact, option, phrase):
    no_generic_line(vlc_cli("compare", artifact, *option), 2, phrase)


def test_run_warns_about_nan_inputs(vlc_cli, tmp_path, artifact):
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    x[1, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    code, _, stderr = vlc_cli("run", artifact, "-i", tmp_path / "x.npy")
    assert code == 0, stderr
    assert "warning: input 'x' has 1 NaN or Inf value(s) of 8" in stderr
    np.save(tmp_path / "x.npy", np.nan_to_num(x))
    code, _, stderr = vlc_cli("run", artifact, "-i", tmp_path / "x.npy")
    assert code == 0 and "warning" not in stderr


# ---- 16: records with non-finite latencies ---------------------------------------------------------

@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_a_record_with_a_non_finite_latency_is_refused(vlc_cli, tmp_path, value):
    results = _results(tmp_path, "box")
    path = next(results.rglob("*-b8.result.json"))
    path.write_text(path.read_text().replace('"median": 1.05', f'"median": {value}'))
    assert value in path.read_text()
    no_generic_line(vlc_cli("report", results, "-o", tmp_path / "r.html"), 2, "latency_ms.median",
                    "must be finite")


# ---- tables: a cosine just below its threshold must not print as the threshold --------------------

def test_tables_tell_a_cosine_from_its_threshold():
    from vlc.cli.console import fmt

    assert fmt(0.99998) == "0.99998" and fmt(0.999989) == "0.999989"
    assert fmt(0.999989) != fmt(0.99999)
    assert fmt(0.9999999999) != "1" and fmt(1.0) == "1"
    assert (fmt(123.456), fmt(0.5), fmt(0.9512345)) == ("123.5", "0.5", "0.9512")  # elsewhere: 4 digits


def test_a_dangling_input_is_named_in_the_users_file(vlc_cli, tmp_path):
    """reliability 14 (F7): a node reading a tensor nothing provides is one line about the user's file
    and node, not a checker error about a deleted temporary file with a PyTorch-only fix."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")], "g", [x], [y])
    path = tmp_path / "dangle.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    line = one_line_error(vlc_cli("compile", path, "-t", "onnxruntime", "-o", tmp_path / "out",
                                  "--cache-dir", tmp_path / "cache"),
                          2, str(path), "'add' (Add) reads 'ghost'", "add 'ghost' as a graph input")
    assert "torchscript" not in line and ".vlc" not in line and "cache" not in line
    assert not (tmp_path / "out").exists()

"""The front-end cache reuses a graph only when everything it came from is unchanged and intact."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import save_onnx
from vlc.errors import InputError
from vlc.frontend import pipeline
from vlc.frontend.pipeline import (
    FrontendOptions,
    default_cache_dir,
    model_code_files,
    prepare,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = FrontendOptions(parity=False)

MODEL = '''
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return {body}


def factory():
    return Net(), torch.randn(2, 8)
'''


def write_model(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(MODEL.format(body=body)))
    return path


def ort_run(onnx_path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_editing_forward_exports_again(tmp_path):
    model_file = write_model(tmp_path / "modv2.py", "torch.relu(self.fc(x))")
    ref = f"{model_file}:factory"
    first = prepare(ref, tmp_path / "cache", FAST)
    assert prepare(ref, tmp_path / "cache", FAST).frontend["reused"] is True
    write_model(model_file, "torch.sigmoid(self.fc(x)) * 3.0")  # same weights, other function
    edited = prepare(ref, tmp_path / "cache", FAST)
    assert edited.frontend["reused"] is False
    assert edited.onnx_path != first.onnx_path
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)}
    old, new = ort_run(first.onnx_path, feeds), ort_run(edited.onnx_path, feeds)
    assert old.std() > 1e-2 and new.std() > 1e-2
    assert new.min() >= 0.0 and new.max() <= 3.0 and old.min() == 0.0  # sigmoid * 3 vs relu
    assert not np.allclose(old, new, atol=1e-3)


def test_an_edit_of_the_same_size_within_one_second_runs_the_new_code(tmp_path):
    """The model file is compiled from its source, never from a .pyc that is valid by mtime and size."""
    model_file = write_model(tmp_path / "same.py", "torch.relu(self.fc(x))")
    stat = model_file.stat()
    ref = f"{model_file}:factory"
    first = prepare(ref, tmp_path / "cache", FAST)
    import py_compile

    py_compile.compile(str(model_file))  # a cached .pyc, as any earlier import of the file leaves
    write_model(model_file, "torch.tanh(self.fc(x))")  # same length as relu
    os.utime(model_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same second, same size
    assert model_file.stat().st_size == stat.st_size
    edited = prepare(ref, tmp_path / "cache", FAST)
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)}
    old, new = ort_run(first.onnx_path, feeds), ort_run(edited.onnx_path, feeds)
    assert old.min() == 0.0 and new.min() < 0.0  # relu vs tanh


def test_editing_a_class_in_another_file_exports_again(tmp_path, monkeypatch):
    # the factory's file stays the same: only the rule "the file of every class in the tree" sees this
    (tmp_path / "netlib.py").write_text("import torch\n\nclass Block(torch.nn.Module):\n"
                                        "    def forward(self, x):\n        return x * 2.0\n")
    (tmp_path / "entry.py").write_text("import torch\nfrom netlib import Block\n\n"
                                       "def factory():\n    return Block(), torch.randn(2, 4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = f"{tmp_path / 'entry.py'}:factory"
    first = prepare(ref, tmp_path / "cache", FAST)
    (tmp_path / "netlib.py").write_text("import torch\n\nclass Block(torch.nn.Module):\n"
                                        "    def forward(self, x):\n        return x * 3.0 + 1.0\n")
    sys.modules.pop("netlib", None)  # a new process would import the edited file
    edited = prepare(ref, tmp_path / "cache", FAST)
    assert edited.frontend["reused"] is False
    feeds = {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)}
    np.testing.assert_allclose(ort_run(edited.onnx_path, feeds), feeds["x"] * 3.0 + 1.0, rtol=1e-6)
    np.testing.assert_allclose(ort_run(first.onnx_path, feeds), feeds["x"] * 2.0, rtol=1e-6)


def test_editing_the_factory_file_exports_again(tmp_path):
    # only library classes in the tree and no weights change: the factory's own file tells
    factory = "import torch\n\ndef factory():\n    return torch.nn.Sequential(torch.nn.Linear(8, 4), {}), " \
              "torch.randn(2, 8)\n"
    model_file = tmp_path / "seq.py"
    model_file.write_text(factory.format("torch.nn.ReLU()"))
    ref = f"{model_file}:factory"
    first = prepare(ref, tmp_path / "cache", FAST)
    model_file.write_text(factory.format("torch.nn.Tanh()"))
    edited = prepare(ref, tmp_path / "cache", FAST)
    assert edited.frontend["reused"] is False
    feeds = {"input": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)}
    old, new = ort_run(first.onnx_path, feeds), ort_run(edited.onnx_path, feeds)
    assert old.min() == 0.0 and new.min() < 0.0  # relu vs tanh


def test_editing_a_package_module_factory_exports_again(tmp_path, monkeypatch):
    package = tmp_path / "zoo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    factory = "import torch\n\ndef factory():\n    return torch.nn.Sequential(torch.nn.Linear(8, 4), {}), " \
              "torch.randn(2, 8)\n"
    (package / "nets.py").write_text(factory.format("torch.nn.ReLU()"))
    monkeypatch.syspath_prepend(str(tmp_path))
    first = prepare("zoo_pkg.nets:factory", tmp_path / "cache", FAST)
    (package / "nets.py").write_text(factory.format("torch.nn.Tanh()"))
    sys.modules.pop("zoo_pkg.nets", None)  # a new process would import the edited file
    edited = prepare("zoo_pkg.nets:factory", tmp_path / "cache", FAST)
    assert edited.frontend["reused"] is False and edited.onnx_path != first.onnx_path
    feeds = {"input": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)}
    assert ort_run(edited.onnx_path, feeds).min() < 0.0 <= ort_run(first.onnx_path, feeds).min()


def test_model_code_files_leave_out_installed_libraries(tmp_path):
    import torch

    from vlc.frontend.loader import load_model

    model_file = write_model(tmp_path / "m.py", "torch.relu(self.fc(x))")
    source = load_model(f"{model_file}:factory")
    source.module = torch.nn.Sequential(source.module, torch.nn.ReLU())  # torch classes in the tree
    files = model_code_files(source)
    assert files == [model_file.resolve()]


def test_edited_frontend_code_is_a_new_graph(tmp_path, monkeypatch):
    defaults = pipeline.frontend_code_files()
    names = {p.relative_to(ROOT).as_posix() for p in defaults}
    assert {"compiler/frontend/pipeline.py", "compiler/frontend/builtin_passes.py",
            "compiler/frontend/export.py", "compiler/model.py"} <= names
    pass_file = tmp_path / "a_pass.py"
    pass_file.write_text("RULE = 1\n")
    monkeypatch.setattr(pipeline, "frontend_code_files", lambda: [*defaults, pass_file])
    onnx_path = save_linear(tmp_path / "in" / "lin.onnx")
    assert prepare(str(onnx_path), tmp_path / "cache", FAST).frontend["reused"] is False
    assert prepare(str(onnx_path), tmp_path / "cache", FAST).frontend["reused"] is True
    pass_file.write_text("RULE = 2\n")
    assert prepare(str(onnx_path), tmp_path / "cache", FAST).frontend["reused"] is False


def linear_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])], "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def save_linear(path: Path, *, location: str | None = None, seed: int = 0) -> Path:
    """A small MatMul+Add graph; with `location`, its weights are external data there."""
    return save_onnx(linear_model(seed), path, location=location)


@pytest.mark.parametrize("location", ["ext.bin", "weights/sub/ext.bin"])
def test_onnx_with_external_data_anywhere_is_normalized(tmp_path, location):
    original = save_linear(tmp_path / "ext" / "ext.onnx", location=location)
    source = prepare(str(original), tmp_path / "cache", FAST)
    assert source.frontend["checker"]["onnx_checker"] == "passed"
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)}
    expected = ort_run(original, feeds)
    assert expected.std() > 0.5
    np.testing.assert_allclose(ort_run(source.onnx_path, feeds), expected, rtol=1e-6, atol=1e-6)
    # the cache entry stands on its own: the user's data file may go away
    (original.parent / location).unlink()
    np.testing.assert_allclose(ort_run(source.onnx_path, feeds), expected, rtol=1e-6, atol=1e-6)


def test_changed_external_data_is_a_new_graph(tmp_path):
    original = save_linear(tmp_path / "ext" / "ext.onnx", location="weights/ext.bin")
    first = prepare(str(original), tmp_path / "cache", FAST)
    # same structure, other weights: only ext.bin differs, the .onnx bytes are identical
    scratch = save_linear(tmp_path / "scratch" / "ext.onnx", location="weights/ext.bin", seed=7)
    assert scratch.read_bytes() == original.read_bytes()
    (original.parent / "weights" / "ext.bin").write_bytes((scratch.parent / "weights" / "ext.bin").read_bytes())
    again = prepare(str(original), tmp_path / "cache", FAST)
    assert again.frontend["reused"] is False and again.onnx_path != first.onnx_path
    feeds = {"x": np.ones((1, 16), np.float32) * np.linspace(-1, 1, 16, dtype=np.float32)}
    np.testing.assert_allclose(ort_run(again.onnx_path, feeds), ort_run(scratch, feeds), rtol=1e-6)


def test_missing_external_data_names_the_file(tmp_path):
    original = save_linear(tmp_path / "extmiss" / "ext.onnx", location="weights/ext.bin")
    (original.parent / "weights" / "ext.bin").unlink()
    with pytest.raises(InputError) as info:
        prepare(str(original), tmp_path / "cache", FAST)
    line = info.value.line()
    assert "\n" not in line
    assert str(original.parent / "weights" / "ext.bin") in line
    assert str(tmp_path / "cache") not in line


@pytest.mark.parametrize("damage", ["garbage model", "other graph", "no model", "garbage report",
                                    "report without hash"])
def test_a_damaged_cache_entry_is_rebuilt_with_the_reason(tmp_path, damage):
    original = save_linear(tmp_path / "lin.onnx")
    entry = prepare(str(original), tmp_path / "cache", FAST).onnx_path.parent
    model, report = entry / "model.onnx", entry / "frontend.json"
    if damage == "garbage model":
        model.write_bytes(b"\x08\x07 not a protobuf \xff\xff")
    elif damage == "other graph":  # valid ONNX, wrong bytes: only the recorded hash tells
        onnx.save(linear_model(seed=3), str(model))
    elif damage == "no model":
        model.unlink()
    elif damage == "garbage report":
        report.write_text("{")
    else:
        report.write_text('{"ref": "lin.onnx"}')
    again = prepare(str(original), tmp_path / "cache", FAST)
    assert again.frontend["reused"] is False
    note = again.frontend["cache_note"]
    assert "\n" not in note and str(entry) in note and "rebuilt" in note
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)}
    np.testing.assert_allclose(ort_run(again.onnx_path, feeds), ort_run(original, feeds), rtol=1e-6, atol=1e-6)
    assert prepare(str(original), tmp_path / "cache", FAST).frontend["reused"] is True


def test_cache_entries_record_the_hash_of_their_graph(tmp_path):
    from vlc.artifact import graph_hash

    source = prepare(str(save_linear(tmp_path / "lin.onnx")), tmp_path / "cache", FAST)
    assert source.frontend[pipeline.MODEL_HASH] == graph_hash(source.onnx_path)


def test_the_cache_lives_in_the_user_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("VLC_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("VLC_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "vlc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "vlc"
    # prepare() without a cache_dir never writes into the working directory
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    onnx_path = save_linear(tmp_path / "models" / "lin.onnx")
    source = prepare(str(onnx_path), options=FAST)
    assert source.onnx_path.is_relative_to(tmp_path / "home" / ".cache" / "vlc")
    assert list(work.iterdir()) == []


@pytest.fixture(scope="module")
def cache_seen_by_a_module_fixture() -> str | None:
    return os.environ.get("VLC_CACHE")


def test_the_test_session_cache_is_isolated_for_module_fixtures(cache_seen_by_a_module_fixture):
    cache = cache_seen_by_a_module_fixture
    assert cache, "VLC_CACHE is not set before module-scoped fixtures run"
    assert not Path(cache).resolve().is_relative_to(ROOT)
    assert not Path(cache).resolve().is_relative_to(Path.home() / ".cache")
    assert default_cache_dir() == Path(cache)

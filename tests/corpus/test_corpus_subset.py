"""CI subset of the foreign-model corpus: a few small models, front end + onnxruntime paths.

Each model is built by benchmarks/corpus/build_corpus.py (as the full benchmark builds it),
compiled for onnxruntime with no flags beyond the model file, run, and compared with the
untouched original file in ONNX Runtime on the same inputs. The full matrix (every model, every
target) is benchmarks/corpus/matrix.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "corpus"))

import build_corpus  # noqa: E402 - the corpus scripts are found through sys.path
import matrix  # noqa: E402 - the corpus scripts are found through sys.path

# One per producer family that needs no download: IR 3 zoo classic, IR 3 / opset 6 PyTorch
# converter output, an onnx node case with a scalar bool input and an If, hand-made int32 and
# several-output and Loop graphs, and a TorchScript transformers export.
SUBSET = {
    "onnx-package": ["zoo-squeezenet", "pt-batchnorm2d", "node-if"],
    "handmade": ["hand-multi-io", "hand-loop-recurrence", "hand-int32-scalar-inputs"],
    "pytorch": ["hf-resnet-torchscript"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    names = {n for group in SUBSET.values() for n in group}
    entries = build_corpus.build(out, list(SUBSET), only=names, log=lambda _: None)
    assert {e.name for e in entries} == names
    return out, {e.name: e for e in entries}


def test_manifest_describes_each_model(corpus):
    out, _ = corpus
    models = {m["name"]: m for m in build_corpus.load_manifest(out)}
    assert models["zoo-squeezenet"]["ir_version"] == 3
    assert models["pt-batchnorm2d"]["opset"] == 6
    assert models["node-if"]["control_flow"] == ["If"]
    assert [i["dtype"] for i in models["hand-multi-io"]["inputs"]] == ["int32", "float32"]
    assert models["hf-resnet-torchscript"]["producer"] == "pytorch-torchscript"
    for m in models.values():
        assert m["source"] and m["inputs"] and (out / m["path"]).is_file()


@pytest.mark.parametrize("name", [n for group in SUBSET.values() for n in group])
def test_onnxruntime_matches_the_original(corpus, name, tmp_path, vlc_cli):
    out, entries = corpus
    model = out / entries[name].path
    code, o, e = vlc_cli("export", str(model), "-o", str(tmp_path / "export.onnx"))
    assert code == 0, o + e
    art = tmp_path / "ort"
    code, o, e = vlc_cli("compile", str(model), "--target", "onnxruntime", "-o", str(art))
    assert code == 0, o + e
    code, o, e = vlc_cli("run", str(art))
    assert code == 0, o + e
    feeds = matrix.original_feeds(art)
    want = matrix.reference_outputs(model, feeds, tmp_path)
    assert any(np.asarray(w).dtype.kind != "f" or np.std(w) > 0 for w in want), "no spread"
    names = [v.name for v in onnx.load(str(model), load_external_data=False).graph.output]
    np.savez(tmp_path / "feeds.npz", **feeds)
    np.savez(tmp_path / "expected.npz", **dict(zip(names, want)))
    code, o, e = vlc_cli("compare", str(art), "--input", str(tmp_path / "feeds.npz"),
                         "--expected", str(tmp_path / "expected.npz"))
    assert code == 0, o + e

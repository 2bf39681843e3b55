"""Assemble the foreign-model corpus: ONNX files that nobody wrote for vlc, from what installs here.

Sources (every file is produced by someone else's tool; vlc only collects them):
  onnx-package   the `onnx` wheel's model-zoo and backend-test material (IR 3-7) and node
                 cases from its case generators (IR 4-10), written with the onnx package itself;
  pytorch        PyTorch dynamo and TorchScript exports of transformers vision and vision-language
                 architectures built from tiny random-weight configurations;
  pypi           ONNX files shipped inside PyPI packages by other exporters (paddle2onnx, tf2onnx,
                 spox, PyTorch), fetched with `pip download --no-deps` and unzipped;
  handmade       onnx.helper graphs for what the others lack: If/Loop, int32 and scalar inputs,
                 several inputs and outputs, batched einsum.

Everything lands in the user cache ($VLC_CACHE/corpus, else ~/.cache/vlc/corpus), never in the
repository; manifest.json there lists each model (name, producer, IR version, opset, source,
inputs). Usage:

    python benchmarks/corpus/build_corpus.py [--out DIR] [--sources onnx-package,pytorch,...]
                                             [--only NAME,...] [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SOURCES = ("onnx-package", "pytorch", "pypi", "handmade")


def corpus_dir() -> Path:
    """$VLC_CACHE/corpus, else ~/.cache/vlc/corpus: a user cache, never the checkout."""
    base = os.environ.get("VLC_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "vlc") / "corpus"


@dataclass
class Entry:
    name: str
    producer: str  # the tool that wrote the file (manifest groups the matrix by it)
    source: str  # package@version/path, or the generator that made it
    path: str = ""  # relative to the corpus directory
    ir_version: int = 0
    opset: int = 0
    producer_name: str = ""  # as the file records it
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    control_flow: list[str] = field(default_factory=list)
    external_data: list[str] = field(default_factory=list)  # files beside it the model reads


# --------------------------------------------------------------------------- onnx package

# Model-zoo classics (caffe2-converted, IR 3; the two largest, AlexNet and ResNet-50 at
# 60 and 25 M parameters, are left out to keep the matrix short) and PyTorch-converted backend material (IR 3-7).
ONNX_DATA = [
    ("zoo-squeezenet", "light/light_squeezenet.onnx"),
    ("zoo-densenet121", "light/light_densenet121.onnx"),
    ("zoo-inception-v1", "light/light_inception_v1.onnx"),
    ("zoo-inception-v2", "light/light_inception_v2.onnx"),
    ("zoo-shufflenet", "light/light_shufflenet.onnx"),
    ("pt-conv2d-depthwise-strided", "pytorch-converted/test_Conv2d_depthwise_strided/model.onnx"),
    ("pt-convtranspose2d", "pytorch-converted/test_ConvTranspose2d/model.onnx"),
    ("pt-pixelshuffle", "pytorch-converted/test_PixelShuffle/model.onnx"),
    ("pt-batchnorm2d", "pytorch-converted/test_BatchNorm2d_eval/model.onnx"),
    ("pt-avgpool2d-stride", "pytorch-converted/test_AvgPool2d_stride/model.onnx"),
    ("pt-op-chunk", "pytorch-operator/test_operator_chunk/model.onnx"),
    ("pt-op-addmm", "pytorch-operator/test_operator_addmm/model.onnx"),
    ("simple-expand-shape", "simple/test_expand_shape_model1/model.onnx"),
    ("simple-single-relu", "simple/test_single_relu_model/model.onnx"),
    ("simple-shrink", "simple/test_shrink/model.onnx"),
]

# Node cases from the onnx package's generators, at IR versions 4-10.
NODE_CASES = ["test_if", "test_loop11", "test_scan9_sum", "test_averagepool_2d_ceil",
              "test_gridsample", "test_resize_upsample_scales_linear",
              "test_layer_normalization_4d_axis0", "test_nonzero_example"]


def onnx_package_models(out: Path, only: set[str] | None) -> Iterable[tuple[Entry, Callable[[Path], None]]]:
    import onnx

    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    version = onnx.__version__
    for name, rel in ONNX_DATA:
        src = data / rel
        copy = _revive_light if rel.startswith("light/") else shutil.copyfile
        yield (Entry(name, "onnx-backend-data", f"onnx@{version}/backend/test/data/{rel}"),
               lambda dst, src=src, copy=copy: copy(src, dst))
    if only is not None and not any(f"node-{c[5:]}" in only for c in NODE_CASES):
        return
    for case in _node_cases():
        yield (Entry(f"node-{case.name[5:]}", "onnx-node-case",
                     f"onnx@{version}/backend/test/case/node:{case.name}"),
               lambda dst, case=case: onnx.save(case.model, str(dst)))


def _revive_light(src: Path, dst: Path) -> None:
    """A 'light' model-zoo file with seeded random weights in place of its constant ones.

    The onnx wheel's light files replace every weight by ConstantOfShape(0.02) of a shape
    initializer, so every output is constant and no comparison can tell right from wrong. The
    corpus keeps the graph and its IR 3 form (weights are initializers listed as graph inputs)
    and gives each weight values of its shape with spread: scales near 1, biases near 0,
    variances positive, matrices and kernels ~ N(0, 1 / fan_in) (activations stay within fp16).
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    consumed = {n.input[0] for n in graph.node if n.op_type == "ConstantOfShape"}
    shapes = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name in consumed}
    others = [i for i in graph.initializer if i.name not in consumed]
    rng = np.random.default_rng(3)
    weights, keep = {}, []
    for node in graph.node:
        shape = shapes.get(node.input[0]) if node.op_type == "ConstantOfShape" else None
        if shape is None:
            keep.append(node)
            continue
        weights[node.output[0]] = _weight(node.output[0], tuple(int(d) for d in shape), rng)
    del graph.node[:]
    graph.node.extend(keep)
    types = {v.name: v for v in graph.input}
    del graph.initializer[:]
    graph.initializer.extend(others + [numpy_helper.from_array(w, n) for n, w in weights.items()])
    inputs = [v for v in graph.input if v.name not in shapes]
    inputs += [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, w.shape)
               for n, w in weights.items() if n not in types]
    del graph.input[:]
    graph.input.extend(inputs)
    onnx.save(model, str(dst))


def _weight(name: str, shape: tuple[int, ...], rng: Any) -> Any:
    import numpy as np

    low = name.lower()
    if len(shape) <= 1:
        if "var" in low or low.endswith("_riv_0"):
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        if low.endswith(("_s_0", "_scale_0", "_gamma_0")):
            return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)


def _node_cases() -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import numpy as np
        from onnx.backend.test.case.node import collect_testcases
        with np.errstate(all="ignore"):
            cases = collect_testcases(None)
    chosen = {c.name: c for c in cases if c.name in NODE_CASES}
    return [chosen[n] for n in NODE_CASES if n in chosen]


# --------------------------------------------------------------------------- transformers

def _vit_like(T: Any, cls: str, cfg_cls: str, **extra: Any) -> Any:
    cfg = getattr(T, cfg_cls)(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64, num_labels=10, **extra)
    return getattr(T, cls)(cfg)


def _families(T: Any) -> dict[str, tuple[Callable[[], Any], dict[str, Any], list[str]]]:
    """family -> (model factory, example inputs by keyword, output attributes kept)."""
    import torch

    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, 3, 32, 32, generator=g)
    ids = torch.randint(0, 99, (1, 8), generator=g)
    mask = torch.ones(1, 8, dtype=torch.int64)
    text = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 16}
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 64}
    px = {"pixel_values": img}
    return {
        "vit": (lambda: _vit_like(T, "ViTForImageClassification", "ViTConfig"), px, ["logits"]),
        "deit": (lambda: _vit_like(T, "DeiTForImageClassification", "DeiTConfig"), px, ["logits"]),
        "beit": (lambda: _vit_like(T, "BeitForImageClassification", "BeitConfig",
                                   use_relative_position_bias=True), px, ["logits"]),
        "swin": (lambda: T.SwinForImageClassification(T.SwinConfig(
            image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
            window_size=4, num_labels=10)), px, ["logits"]),
        "convnext": (lambda: T.ConvNextForImageClassification(T.ConvNextConfig(
            num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)), px, ["logits"]),
        "resnet": (lambda: T.ResNetForImageClassification(T.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)), px, ["logits"]),
        "mobilevit": (lambda: T.MobileViTForImageClassification(T.MobileViTConfig(
            image_size=64, hidden_sizes=[32, 32, 32], neck_hidden_sizes=[8, 8, 16, 16, 16, 32, 64],
            num_attention_heads=2, num_labels=10)),
            {"pixel_values": torch.randn(1, 3, 64, 64, generator=g)}, ["logits"]),
        "yolos": (lambda: T.YolosForObjectDetection(T.YolosConfig(
            image_size=[32, 32], patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, num_detection_tokens=5, num_labels=3)),
            px, ["logits", "pred_boxes"]),
        "segformer": (lambda: T.SegformerForSemanticSegmentation(T.SegformerConfig(
            num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
            patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
            decoder_hidden_size=32, num_labels=4)), px, ["logits"]),
        "clip": (lambda: T.CLIPModel(T.CLIPConfig(text_config=text, vision_config=vision,
                                                 projection_dim=16)),
                 {"input_ids": ids, "pixel_values": img, "attention_mask": mask},
                 ["logits_per_image", "text_embeds", "image_embeds"]),
        "siglip": (lambda: T.SiglipModel(T.SiglipConfig(text_config=text, vision_config=vision)),
                   {"input_ids": ids, "pixel_values": img}, ["logits_per_image"]),
        "blip": (lambda: T.BlipForConditionalGeneration(T.BlipConfig(
            text_config=dict(text, max_position_embeddings=32), vision_config=vision)),
            {"pixel_values": img, "input_ids": ids}, ["logits"]),
        # single-stream: text tokens and region features in one transformer
        "visualbert": (lambda: T.VisualBertModel(T.VisualBertConfig(
            vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=16, visual_embedding_dim=16)),
            {"input_ids": ids, "attention_mask": mask,
             "visual_embeds": torch.randn(1, 6, 16, generator=g)}, ["pooler_output"]),
        "lxmert": (lambda: T.LxmertModel(T.LxmertConfig(
            vocab_size=99, hidden_size=32, num_attention_heads=2, intermediate_size=64,
            l_layers=1, x_layers=1, r_layers=1, visual_feat_dim=16, visual_pos_dim=4,
            max_position_embeddings=16)),
            {"input_ids": ids, "visual_feats": torch.randn(1, 6, 16, generator=g),
             "visual_pos": torch.rand(1, 6, 4, generator=g), "attention_mask": mask},
            ["pooled_output"]),
    }


# Both exporters for a few families; the others through dynamo only, to keep the build short.
TORCHSCRIPT_TOO = {"vit", "resnet", "swin", "clip", "segformer", "visualbert"}


class _Wrapped:
    """forward(*tensors) -> the chosen outputs of a transformers model, as a plain tuple."""

    def __new__(cls, model: Any, names: list[str], outputs: list[str]) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> tuple[Any, ...]:
                result = self.model(**dict(zip(names, args)))
                return tuple(getattr(result, o) for o in outputs)

        return Wrapped().eval()


def pytorch_models(out: Path, only: set[str] | None) -> Iterable[tuple[Entry, Callable[[Path], None]]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        import transformers as T
    versions = f"torch@{torch.__version__},transformers@{T.__version__}"
    for family, (factory, inputs, outputs) in _families(T).items():
        for exporter in ("dynamo", "torchscript"):
            if exporter == "torchscript" and family not in TORCHSCRIPT_TOO:
                continue
            name = f"hf-{family}-{exporter}"
            entry = Entry(name, f"pytorch-{exporter}", f"{versions}:{family}")
            yield entry, (lambda dst, f=factory, i=inputs, o=outputs, e=exporter:
                          _export(f, i, o, e, dst))


def _export(factory: Callable[[], Any], inputs: dict[str, Any], outputs: list[str],
            exporter: str, dst: Path) -> None:
    import logging

    import torch

    torch.manual_seed(0)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    model = _Wrapped(factory().eval(), list(inputs), outputs)
    names, args = list(inputs), tuple(inputs.values())
    with _output_to(dst.parent / (dst.name + ".export.log")), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=64)
            dyn = ({0: batch},) * len(args)
            try:
                torch.onnx.export(model, args, str(dst), dynamo=True, input_names=names,
                                  output_names=outputs, dynamic_shapes=(dyn,), verbose=False)
            except Exception:  # noqa: BLE001 - some families only export at a fixed batch
                torch.onnx.export(model, args, str(dst), dynamo=True, input_names=names,
                                  output_names=outputs, verbose=False)
        else:
            axes = {n: {0: "batch"} for n in names + outputs}
            torch.onnx.export(model, args, str(dst), dynamo=False, input_names=names,
                              output_names=outputs, dynamic_axes=axes, opset_version=17)


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send the exporters' own stdout/stderr (guard dumps, graph prints) to a log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# --------------------------------------------------------------------------- PyPI packages

# (package==version, licence, [(name, producer, path inside the wheel)]); each wheel is a few
# MB and is only unpacked in the cache.
PYPI = [
    ("rapidocr-onnxruntime==1.4.4", "Apache-2.0", [
        ("ocr-det-ppocrv4", "paddle2onnx", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
        ("ocr-rec-ppocrv4", "paddle2onnx", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
        ("ocr-cls-mobile-v2", "paddle2onnx",
         "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")]),
    ("silero-vad==6.2.3", "MIT", [
        ("silero-vad-spox", "spox", "silero_vad/data/silero_vad.onnx"),
        ("silero-vad-16k-op15", "pytorch-torchscript", "silero_vad/data/silero_vad_16k_op15.onnx"),
        ("silero-vad-op18-ifless", "pytorch-dynamo", "silero_vad/data/silero_vad_op18_ifless.onnx")]),
    ("magika==1.0.3", "Apache-2.0", [
        ("magika-standard-v3", "tf2onnx", "magika/models/standard_v3_3/model.onnx")]),
]


def pypi_models(out: Path, only: set[str] | None) -> Iterable[tuple[Entry, Callable[[Path], None]]]:
    for requirement, licence, files in PYPI:
        for name, producer, inner in files:
            entry = Entry(name, producer, f"{requirement.replace('==', '@')}/{inner} ({licence})")
            yield entry, (lambda dst, r=requirement, i=inner: _from_wheel(out / "wheels", r, i, dst))


def _from_wheel(wheels: Path, requirement: str, inner: str, dst: Path) -> None:
    wheel = _download(wheels, requirement)
    with zipfile.ZipFile(wheel) as archive, archive.open(inner) as src, open(dst, "wb") as f:
        shutil.copyfileobj(src, f)


def _download(wheels: Path, requirement: str) -> Path:
    """The wheel of one pinned package, downloaded once into the cache (no dependencies)."""
    stem = requirement.split("==")[0].replace("-", "_") + "-" + requirement.split("==")[1]
    found = sorted(wheels.glob(f"{stem}-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "-q", "-d", str(wheels), requirement]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    found = sorted(wheels.glob(f"{stem}-*.whl"))
    if not found:
        raise RuntimeError(f"pip download {requirement} wrote no wheel named {stem}-*.whl")
    return found[0]


# --------------------------------------------------------------------------- handmade

def handmade_models(out: Path, only: set[str] | None) -> Iterable[tuple[Entry, Callable[[Path], None]]]:
    from corpus_handmade import (
        HANDMADE,  # sibling module: build() puts this folder on sys.path
    )

    for name, builder in HANDMADE.items():
        entry = Entry(name, "onnx-helper", f"benchmarks/corpus/corpus_handmade.py:{builder.__name__}")
        yield entry, (lambda dst, b=builder: _save(b(), dst))


def _save(model: Any, dst: Path) -> None:
    import onnx

    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))


# --------------------------------------------------------------------------- manifest

def describe(entry: Entry, path: Path) -> Entry:
    """Fill in what the file itself records: IR version, opset, producer, inputs, outputs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    entry.ir_version = model.ir_version
    entry.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    entry.producer_name = f"{model.producer_name} {model.producer_version}".strip()
    entry.inputs = [_value_info(v) for v in model.graph.input if v.name not in inits]
    entry.outputs = [v.name for v in model.graph.output]
    entry.control_flow = sorted(_control_flow(model.graph))
    entry.external_data = sorted({kv.value for t in model.graph.initializer
                                  for kv in t.external_data if kv.key == "location"})
    return entry


def _value_info(value: Any) -> dict[str, Any]:
    import onnx

    t = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
    return {"name": value.name, "dtype": dtype, "shape": dims if t.HasField("shape") else None}


def _control_flow(graph: Any) -> set[str]:
    found = set()
    for node in graph.node:
        if node.op_type in ("If", "Loop", "Scan"):
            found.add(node.op_type)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found |= _control_flow(sub)
    return found


GENERATORS = {"onnx-package": onnx_package_models, "pytorch": pytorch_models,
              "pypi": pypi_models, "handmade": handmade_models}


def build(out: Path, sources: Iterable[str] = SOURCES, only: set[str] | None = None,
          force: bool = False, log: Callable[[str], None] = print) -> list[Entry]:
    """Write the chosen models under `out` (reusing files already there) and return their entries."""
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    entries, failures = [], {}
    for source in sources:
        for entry, write in GENERATORS[source](out, only):
            if only is not None and entry.name not in only:
                continue
            entry.path = f"{source}/{entry.name}.onnx"
            dst = out / entry.path
            start = time.perf_counter()
            try:
                if force or not dst.exists():
                    _write_atomically(write, dst)
                entries.append(describe(entry, dst))
                log(f"  {entry.name:32s} {entry.producer:20s} IR {entry.ir_version:2d} "
                    f"opset {entry.opset:2d}  {time.perf_counter() - start:5.1f} s")
            except Exception as exc:  # noqa: BLE001 - one failing source never stops the build
                failures[entry.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                log(f"  {entry.name:32s} FAILED {failures[entry.name]}")
    _write_manifest(out, entries, failures, only is None and set(sources) == set(SOURCES))
    return entries


def _write_atomically(write: Callable[[Path], None], dst: Path) -> None:
    """Write into a fresh folder under the file's own name, then move the files into place.

    The file keeps the name it is written under, so external data an exporter writes beside it
    (the dynamo exporter's `<name>.onnx.data`) is named as a user would find it.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.stem}.", dir=dst.parent))
    try:
        write(tmp / dst.name)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == dst.name):  # the .onnx last
            f.replace(dst.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_manifest(out: Path, entries: list[Entry], failures: dict[str, str], full: bool) -> None:
    """manifest.json keeps the entries of earlier partial builds that this one did not touch."""
    path = out / "manifest.json"
    old = {}
    if path.exists() and not full:
        try:
            old = {m["name"]: m for m in json.loads(path.read_text())["models"]}
        except (OSError, ValueError, KeyError, TypeError):
            old = {}
    for entry in entries:
        old[entry.name] = asdict(entry)
    for name in failures:
        old.pop(name, None)
    models = sorted(old.values(), key=lambda m: (m["producer"], m["name"]))
    doc = {"models": models, "build_failures": failures,
           "producers": sorted({m["producer"] for m in models})}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def load_manifest(out: Path | None = None) -> list[dict[str, Any]]:
    out = corpus_dir() if out is None else out
    return json.loads((out / "manifest.json").read_text())["models"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="corpus directory")
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--only", default=None, help="comma-separated model names")
    parser.add_argument("--force", action="store_true", help="rebuild files already there")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = args.out or corpus_dir()
    only = set(args.only.split(",")) if args.only else None
    start = time.perf_counter()
    entries = build(out, [s for s in args.sources.split(",") if s], only, args.force)
    producers = sorted({e.producer for e in entries})
    print(f"{len(entries)} models from {len(producers)} producers in {out} "
          f"({time.perf_counter() - start:.0f} s): {', '.join(producers)}")
    failed = json.loads((out / "manifest.json").read_text())["build_failures"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

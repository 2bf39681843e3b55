"""prepare(ref): model reference -> normalized fp32 ONNX graph (cached) as a CompileSource."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import vlc
from vlc.accuracy import AccuracyReport, compare_outputs, default_tolerance
from vlc.errors import ExportError
from vlc.frontend.builtin_passes import DEFAULT_PASSES
from vlc.frontend.export import export_model, save_model
from vlc.frontend.loader import load_model
from vlc.frontend.onnx_input import normalize_onnx_input
from vlc.frontend.passes import count_nodes, run_passes
from vlc.frontend.simplify import simplify
from vlc.model import InputSpec, ModelSource, named_outputs, specs_from_signature
from vlc.signature import onnx_signature
from vlc.spec import Precision
from vlc.target import CompileSource

META_REF = "vlc.ref"
META_INPUT_SPECS = "vlc.input_specs"


def default_cache_dir() -> Path:
    """Where normalized graphs are cached: $VLC_CACHE, else .vlc/cache under the working directory."""
    return Path(os.environ.get("VLC_CACHE", ".vlc/cache"))


@dataclass(frozen=True)
class FrontendOptions:
    exporter: str = "dynamo"
    opset: int | None = None
    simplify: bool = True
    passes: tuple[str, ...] | None = None  # None: DEFAULT_PASSES
    parity: bool = True
    parity_batch: int = 3  # differs from the trace batch, so the dynamic axis is exercised
    weights: str | None = None

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


def prepare(ref: str, cache_dir: Path | None = None,
            options: FrontendOptions = FrontendOptions()) -> CompileSource:
    """Export, simplify and rewrite a model once; later calls with the same model reuse it."""
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    loaded = load_model(ref, weights=options.weights)
    identity = _identity(loaded, options)
    out_dir = Path(cache_dir) / f"{_safe(ref)}-{identity[:16]}"
    onnx_path = out_dir / "model.onnx"
    report_path = out_dir / "frontend.json"
    if report_path.is_file() and onnx_path.is_file():
        report = json.loads(report_path.read_text())
        report["reused"] = True
    else:
        report = _normalize(loaded, ref, options, out_dir)
    model = loaded if isinstance(loaded, ModelSource) else None
    specs = model.inputs if model else _specs_from_graph(onnx_path)
    return CompileSource(onnx_path=onnx_path, ref=ref, input_specs=list(specs), model=model,
                         frontend=report)


def _normalize(loaded: ModelSource | Path, ref: str, options: FrontendOptions,
               out_dir: Path) -> dict[str, Any]:
    import onnx_ir as ir

    report: dict[str, Any] = {"ref": ref, "options": json.loads(options.key()),
                              "vlc_version": vlc.__version__, "stages": []}
    start = time.perf_counter()
    if isinstance(loaded, ModelSource):
        model = export_model(loaded, exporter=options.exporter, opset=options.opset)
        report["exporter"] = options.exporter
        stage("export", model, start, report)
    else:
        model = ir.load(str(loaded))
        model, report["onnx_input"] = normalize_onnx_input(model)  # IR 3, opset < 7, -1 dims
        report["exporter"] = None
        stage("load", model, start, report)
    if options.simplify:
        start = time.perf_counter()
        model, report["simplifier"] = simplify(model)
        stage("simplify", model, start, report)
    model, pass_reports = run_passes(model, _pass_names(options))
    report["passes"] = [p.to_json() for p in pass_reports]
    if isinstance(loaded, ModelSource):
        model.metadata_props[META_REF] = ref
        model.metadata_props[META_INPUT_SPECS] = json.dumps([s.to_json() for s in loaded.inputs])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        onnx_path = save_model(model, tmp / "model.onnx")
        report["checker"] = check_and_infer(onnx_path)
        if options.parity and isinstance(loaded, ModelSource):
            parity = parity_check(loaded, onnx_path, options.parity_batch)
            report["parity"] = parity.to_json()
            if not parity.passed:
                failing = "; ".join(f"{o.name}: {o.reason}" for o in parity.outputs if not o.passed)
                raise ExportError(f"the exported graph of {ref} disagrees with PyTorch: {failing}",
                                  fix="rerun with --exporter torchscript, or --no-parity to inspect it")
        (tmp / "frontend.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["reused"] = False
    return report


def stage(name: str, model: Any, start: float, report: dict[str, Any]) -> None:
    report["stages"].append({"name": name, "nodes": count_nodes(model),
                             "seconds": round(time.perf_counter() - start, 3)})


def check_and_infer(onnx_path: Path) -> dict[str, Any]:
    """onnx.checker plus strict-free shape inference written back into the file."""
    import onnx

    external = any(onnx_path.parent.glob(onnx_path.name + ".data*"))
    try:
        if external:
            onnx.checker.check_model(str(onnx_path), full_check=False)
            onnx.shape_inference.infer_shapes_path(str(onnx_path), str(onnx_path))
        else:
            proto = onnx.load(str(onnx_path))
            onnx.checker.check_model(proto, full_check=True)
            inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
            onnx.save(inferred, str(onnx_path))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ExportError(f"the normalized graph fails onnx.checker: {first}", where=str(onnx_path),
                          fix="report the model; try --exporter torchscript or fewer --passes") from None
    return {"onnx_checker": "passed", "shape_inference": "done"}


def parity_check(source: ModelSource, onnx_path: Path, batch: int) -> AccuracyReport:
    """The exported graph in ONNX Runtime (CPU, fp32) against the PyTorch model on the same inputs."""
    import onnxruntime as ort

    feeds = source.generate_inputs(batch, seed=1)
    reference = torch_outputs(source, feeds)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    actual = dict(zip(names, session.run(names, feeds)))
    return compare_outputs(actual, reference, default_tolerance(Precision.FP32))


def torch_outputs(source: ModelSource, feeds: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """The PyTorch model's outputs in fp32 (on `device`; TF32 off so CUDA stays a true fp32 reference)."""
    import numpy as np
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])).to(device) for s in source.inputs]
    module = source.module.eval().to(device)
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            out = module(*args)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
        source.module.to("cpu")
    return {name: v.detach().float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
            for name, v in named_outputs(out, source.output_names).items()}


def _pass_names(options: FrontendOptions) -> tuple[str, ...]:
    return DEFAULT_PASSES if options.passes is None else options.passes


def _identity(loaded: ModelSource | Path, options: FrontendOptions) -> str:
    digest = hashlib.sha256(options.key().encode())
    digest.update(vlc.__version__.encode())
    digest.update(",".join(_pass_names(options)).encode())  # a changed default set is a new graph
    if isinstance(loaded, Path):
        from vlc.artifact import graph_hash

        digest.update(graph_hash(loaded).encode())
    else:
        import torch

        digest.update(type(loaded.module).__qualname__.encode())
        digest.update(json.dumps([s.to_json() for s in loaded.inputs] + loaded.output_names).encode())
        for name, tensor in loaded.module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _specs_from_graph(onnx_path: Path) -> list[InputSpec]:
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_INPUT_SPECS in meta:
        return [InputSpec.from_json(s) for s in json.loads(meta[META_INPUT_SPECS])]
    return specs_from_signature(onnx_signature(proto).inputs)


def _safe(ref: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", Path(ref).name if ref.endswith(".onnx") else ref)[-60:]

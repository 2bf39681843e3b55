"""prepare(ref): model reference -> normalized fp32 ONNX graph (cached) as a CompileSource."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import vlc
import vlc.frontend
import vlc.model
from vlc import measure
from vlc.accuracy import AccuracyReport
from vlc.artifact import graph_hash
from vlc.errors import ExportError, InputError
from vlc.frontend.builtin_passes import DEFAULT_PASSES
from vlc.frontend.export import export_model, save_model
from vlc.frontend.graph_inputs import derive_input_specs
from vlc.frontend.loader import load_model
from vlc.frontend.onnx_input import normalize_onnx_input
from vlc.frontend.onnx_parity import onnx_parity
from vlc.frontend.passes import count_nodes, run_passes
from vlc.frontend.simplify import simplify
from vlc.model import InputSpec, ModelSource, specs_from_signature
from vlc.onnx_files import external_data_locations, file_sha256
from vlc.outdir import clean_orphans, make_dir, make_temp_dir
from vlc.signature import onnx_signature
from vlc.target import CompileSource

META_REF = "vlc.ref"
META_INPUT_SPECS = "vlc.input_specs"
MODEL_HASH = "model_sha256"  # frontend.json: the hash of model.onnx and its data


def default_cache_dir() -> Path:
    """Where normalized graphs are cached: $VLC_CACHE, else $XDG_CACHE_HOME/vlc, else ~/.cache/vlc.

    A user cache, never the working directory: a checkout or a project folder stays clean.
    """
    if os.environ.get("VLC_CACHE"):
        return Path(os.environ["VLC_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vlc"
    return Path.home() / ".cache" / "vlc"


@dataclass(frozen=True)
class FrontendOptions:
    exporter: str = "auto"  # dynamo, falling back to TorchScript (vlc.frontend.export.EXPORTERS)
    opset: int | None = None
    simplify: bool = True
    passes: tuple[str, ...] | None = None  # None: DEFAULT_PASSES
    parity: bool = True
    parity_batch: int = 3  # differs from the trace batch, so the dynamic axis is exercised
    weights: str | None = None

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


def _check_opset(opset: int, ref: str, *, exported: bool) -> None:
    """--opset steers the PyTorch exporter; it must be an opset the installed onnx defines."""
    import onnx

    if not exported:
        raise InputError(f"--opset {opset} applies to PyTorch exports only", where=ref,
                         fix="drop --opset; an ONNX file keeps its own opset")
    newest = onnx.defs.onnx_opset_version()
    if not 7 <= opset <= newest:
        raise InputError(f"--opset {opset} is not an ONNX opset (onnx {onnx.__version__} defines 7..{newest})",
                         where=ref, fix=f"give --opset between 7 and {newest}, or leave it out")


def prepare(ref: str, cache_dir: Path | None = None,
            options: FrontendOptions = FrontendOptions()) -> CompileSource:
    """Export, simplify and rewrite a model once; later calls with the same model reuse it."""
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    make_dir(Path(cache_dir))  # a file given as --cache-dir: one line, before any export
    loaded = load_model(ref, weights=options.weights)
    if options.opset is not None:
        _check_opset(options.opset, ref, exported=isinstance(loaded, ModelSource))
    identity = _identity(loaded, options)
    out_dir = Path(cache_dir) / f"{_safe(ref)}-{identity[:16]}"
    onnx_path = out_dir / "model.onnx"
    report, note = _cached_report(out_dir)
    if report is None:
        report = _normalize(loaded, ref, options, out_dir)
        if note:
            report["cache_note"] = note
    model = loaded if isinstance(loaded, ModelSource) else None
    specs = model.inputs if model else _specs_from_graph(onnx_path)
    return CompileSource(onnx_path=onnx_path, ref=ref, input_specs=list(specs), model=model,
                         frontend=report)


def _cached_report(out_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The report of a cache entry that is intact, else (None, why it is not reused; None if absent)."""
    import onnx

    onnx_path, report_path = out_dir / "model.onnx", out_dir / "frontend.json"
    if not out_dir.exists():
        return None, None
    where = f"the cached graph in {out_dir} is rebuilt"
    if missing := [p.name for p in (report_path, onnx_path) if not p.is_file()]:
        verb = "is" if len(missing) == 1 else "are"  # an interrupted or pruned entry
        return None, f"{where}: {' and '.join(missing)} {verb} missing"
    try:
        report = json.loads(report_path.read_text())
        recorded = report.get(MODEL_HASH) if isinstance(report, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{where}: frontend.json is unreadable ({type(exc).__name__})"
    if not recorded:
        return None, f"{where}: frontend.json records no hash of model.onnx"
    try:
        onnx.load(str(onnx_path), load_external_data=False)
        intact = graph_hash(onnx_path) == recorded
    except InputError as exc:
        return None, f"{where}: {exc.what}"
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a corrupt file
        return None, f"{where}: model.onnx is unreadable ({type(exc).__name__})"
    if not intact:
        return None, f"{where}: model.onnx does not match its recorded hash"
    report["reused"] = True
    return report, None


def _normalize(loaded: ModelSource | Path, ref: str, options: FrontendOptions,
               out_dir: Path) -> dict[str, Any]:
    import onnx_ir as ir

    report: dict[str, Any] = {"ref": ref, "options": json.loads(options.key()),
                              "vlc_version": vlc.__version__, "stages": []}
    start = time.perf_counter()
    if isinstance(loaded, ModelSource):
        log_path = Path(out_dir.parent) / "logs" / f"{out_dir.name}.export.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        exported = export_model(loaded, exporter=options.exporter, opset=options.opset, log_path=log_path)
        model = exported.model
        report["exporter"] = exported.exporter
        report["export_log"] = log_path.name
        if exported.fallback:
            report["exporter_fallback"] = {"from": "dynamo", "error": exported.fallback}
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

    clean_orphans(out_dir.parent, out_dir.name)  # temporaries of killed runs; a live run's stay
    # named with this process's pid, so a later run knows whether its owner is still alive
    tmp = make_temp_dir(out_dir.parent, f".{out_dir.name}.building-")
    try:
        onnx_path = save_model(model, tmp / "model.onnx")
        report["checker"] = check_and_infer(onnx_path, ref, from_onnx=isinstance(loaded, Path))
        if isinstance(loaded, Path):
            _onnx_inputs_and_parity(loaded, onnx_path, ref, options, report)
        if options.parity and isinstance(loaded, ModelSource):
            parity = parity_check(loaded, onnx_path, options.parity_batch)
            report["parity"] = parity.to_json()
            if not parity.passed:
                failing = "; ".join(f"{o.name}: {o.reason}" for o in parity.outputs if not o.passed)
                raise ExportError(f"the exported graph of {ref} disagrees with PyTorch: {failing}",
                                  fix="rerun with --exporter torchscript, or --no-parity to inspect it")
        report[MODEL_HASH] = graph_hash(onnx_path)  # checked before the entry is reused
        (tmp / "frontend.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["reused"] = False
    return report


def _onnx_inputs_and_parity(original: Path, onnx_path: Path, ref: str, options: FrontendOptions,
                            report: dict[str, Any]) -> None:
    """For an ONNX file: input specs derived from its graph (kept in the graph's metadata, so every
    later step generates the same inputs), then the normalized graph against the original."""
    import onnx

    derived = derive_input_specs(onnx_path, onnx_signature(onnx_path))
    report["inputs"] = derived.to_json()
    proto = onnx.load(str(onnx_path), load_external_data=False)  # the data files stay as they are
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_INPUT_SPECS, json.dumps([s.to_json() for s in derived.specs])
    onnx.save(proto, str(onnx_path))
    if not options.parity:
        return
    parity = onnx_parity(original, onnx_path, derived.specs)
    report["parity"] = parity.to_json()
    if parity.report is not None and not parity.report.passed:
        failing = "; ".join(f"{o.name}: {o.reason}" for o in parity.report.outputs if not o.passed)
        raise ExportError(f"the normalized graph of {ref} disagrees with the original file in ONNX Runtime: "
                          f"{failing}", fix="rerun with --no-simplify or --passes '' (and report the model), "
                                            "or --no-parity to inspect it")


def stage(name: str, model: Any, start: float, report: dict[str, Any]) -> None:
    report["stages"].append({"name": name, "nodes": count_nodes(model),
                             "seconds": round(time.perf_counter() - start, 3)})


def check_and_infer(onnx_path: Path, ref: str, *, from_onnx: bool) -> dict[str, Any]:
    """onnx.checker plus strict-free shape inference written back into the file.

    A failure names the model the user gave (the file checked is a temporary one) and the
    options that change what the front end writes for that kind of model."""
    import onnx

    external = bool(external_data_locations(onnx_path))
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
        fix = ("try --no-simplify or --passes '' to keep the file closer to the original" if from_onnx
               else "try --exporter torchscript, --no-simplify or fewer --passes")
        raise ExportError(f"the normalized graph of {ref} fails onnx.checker: {first}",
                          fix=f"{fix}; report the model if it still fails") from None
    return {"onnx_checker": "passed", "shape_inference": "done"}


def parity_check(source: ModelSource, onnx_path: Path, batch: int) -> AccuracyReport:
    """The exported graph against the PyTorch model: vlc.measure.parity_check (the one reference)."""

    return measure.parity_check(source, onnx_path, batch)


def torch_outputs(source: ModelSource, feeds: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """The PyTorch model's outputs in true fp32: vlc.measure.torch_outputs (the one reference)."""

    return measure.torch_outputs(source, feeds, device)


def _pass_names(options: FrontendOptions) -> tuple[str, ...]:
    return DEFAULT_PASSES if options.passes is None else options.passes


def _identity(loaded: ModelSource | Path, options: FrontendOptions) -> str:
    """Everything the normalized graph depends on: a change in any of it is a new cache entry."""
    digest = hashlib.sha256(options.key().encode())
    digest.update(vlc.__version__.encode())
    digest.update(",".join(_pass_names(options)).encode())  # a changed default set is a new graph
    _hash_files(digest, frontend_code_files())  # an edited pass or exporter step is a new graph
    if isinstance(loaded, Path):
        digest.update(graph_hash(loaded).encode())
    else:
        import torch

        digest.update(json.dumps(library_versions(), sort_keys=True).encode())
        digest.update(type(loaded.module).__qualname__.encode())
        _hash_files(digest, model_code_files(loaded))  # editing forward() must not reuse the old graph
        digest.update(json.dumps([s.to_json() for s in loaded.inputs] + loaded.output_names).encode())
        digest.update(json.dumps(loaded.metadata.get("config"), sort_keys=True, default=str).encode())
        for name, tensor in loaded.module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _hash_files(digest: Any, files: list[Path]) -> None:
    for path in files:  # by name and content: a moved checkout keeps its cache
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())


def frontend_code_files() -> list[Path]:
    """vlc's own front-end code (vlc.frontend and vlc.model)."""
    package = Path(vlc.frontend.__file__).resolve().parent
    return sorted({*package.rglob("*.py"), Path(vlc.model.__file__).resolve()})


def library_versions() -> dict[str, str | None]:
    """Installed libraries that shape an exported graph; their code is covered by their version."""
    from importlib import metadata

    import torch

    versions: dict[str, str | None] = {"torch": torch.__version__}
    for name in ("transformers", "onnx", "onnxscript", "onnx-ir", "onnxsim"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def model_code_files(source: ModelSource) -> list[Path]:
    """The model's own source files: the factory's file and the file of every class in the module tree.

    Classes from the standard library and installed packages are left out: their version is hashed.
    """
    files = set()
    if factory_file := _factory_file(source.ref):
        files.add(factory_file)
    for module in source.module.modules():
        try:
            path = inspect.getsourcefile(type(module))
        except (TypeError, OSError):  # a builtin or a class made at run time: its qualname is hashed
            continue
        if path and not _installed(Path(path)) and Path(path).is_file():
            files.add(Path(path).resolve())
    return sorted(files)


def _factory_file(ref: str) -> Path | None:
    """The file of `file.py:factory`, or the module file of `package.module:factory`."""
    target, sep, _ = ref.rpartition(":")
    if not sep or not target:
        return None
    path: Path | None = None
    if target.endswith(".py"):
        path = Path(target)
    else:
        module = sys.modules.get(target)
        path = Path(module.__file__) if module is not None and module.__file__ else None
    return path.resolve() if path is not None and path.is_file() else None


def _installed(path: Path) -> bool:
    """Part of the standard library or an installed package (site-packages / dist-packages)."""
    resolved = path.resolve()
    if {"site-packages", "dist-packages"} & set(resolved.parts):
        return True
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")}
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots)


def _specs_from_graph(onnx_path: Path) -> list[InputSpec]:
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_INPUT_SPECS in meta:
        return [InputSpec.from_json(s) for s in json.loads(meta[META_INPUT_SPECS])]
    return specs_from_signature(onnx_signature(proto).inputs)


def _safe(ref: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", Path(ref).name if ref.endswith(".onnx") else ref)[-60:]

"""Engine building over TensorRT's Python API: parse, profiles, config, build, describe.

Only called with a loaded Backend (the SDK module imported lazily by backend.py).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlc.artifact import BuildDir
from vlc.errors import CompileError, InputError
from vlc.signature import Signature
from vlc.spec import ShapeRange, TargetSpec
from vlc.targets.trt.backend import Backend

_SEVERITY = {0: "F", 1: "E", 2: "W", 3: "I", 4: "V"}


def make_logger(backend: Backend, build: BuildDir, min_severity: int = 4) -> Any:
    """A TensorRT ILogger that appends every message to build.log and keeps errors in memory."""
    trt = backend.module

    class CaptureLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.layers_text: str | None = None
            self._file = open(build.log_path, "a")  # noqa: SIM115 - closed in close()

        def log(self, severity, msg):  # noqa: ANN001, ANN202 - TensorRT's interface
            level = int(severity)
            if level <= 1:
                self.errors.append(msg)
            if msg.startswith("Layers:\n"):
                self.layers_text = msg
            if level <= min_severity:
                self._file.write(f"[{_SEVERITY.get(level, '?')}] {msg}\n")

        def close(self) -> None:
            self._file.close()

    return CaptureLogger()


def load_plugin_libraries(paths: list[str], build: BuildDir) -> list[str]:
    """Load legacy plugin .so files (RTLD_GLOBAL) before parsing, so their creators register."""
    loaded = []
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"plugin library {path} does not exist",
                             fix="pass existing .so files in -O plugin_libraries=a.so,b.so")
        try:
            ctypes.CDLL(str(Path(path).resolve()), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise InputError(f"cannot load plugin library {path}: {exc}",
                             fix="build it against this TensorRT and its CUDA version") from None
        build.log(f"[vlc] loaded plugin library {path}")
        loaded.append(str(Path(path).resolve()))
    return loaded


_EXTERNAL_DATA_BYTES = 1 << 30  # keep the rewritten graph's weights beside it above 1 GiB (protobuf's 2 GiB cap)


def apply_vlc_plugins(backend: Backend, graph: Path, target: str, enabled: list[str] | None,
                      capability: tuple[int, int], build: BuildDir) -> Path:
    """Rewrite the graph about to be parsed with vlc's custom-operator plugins; return the graph to parse.

    `enabled`: plugin names whose kernels to use; None means those on by default for trt
    (plugins/decisions.json), [] none. Fused patterns whose kernel is off are lowered to TensorRT's
    native form (e.g. LayerNormalization), so the graph changes even with every kernel off; the
    rewritten graph is saved in the build directory so the artifact holds what was parsed. Graphs
    with vlc plugin nodes get their Python plugins registered here, before parsing.
    """
    import onnx_ir as ir
    from vlc.plugins import apply_plugins
    from vlc.plugins import trt as trt_plugins

    model = ir.load(str(graph))
    model, report = apply_plugins(model, target, enabled)
    data: dict[str, Any] = report.to_json()
    build.extra["plugins"] = data
    data["graph"] = None
    if not any(report.fused.values()):
        build.log(f"[vlc] plugins ({'default' if enabled is None else ','.join(enabled) or 'none'}): "
                  "no pattern matched, graph unchanged")
        return graph
    out = build.path / f"{graph.stem}.plugins.onnx"
    weights = sum(t.const_value.nbytes for t in model.graph.initializers.values() if t.const_value is not None)
    if weights > _EXTERNAL_DATA_BYTES:
        ir.save(model, out, external_data=out.name + ".data")
        build.files["graph_data"] = out.name + ".data"
    else:
        ir.save(model, out)
        build.files.pop("graph_data", None)
    build.files["graph"] = data["graph"] = out.name
    build.log(f"[vlc] plugins: fused {report.fused}, kernels {report.plugin}, native {report.native}, "
              f"expanded {report.expanded} -> {out.name}")
    if any(report.plugin.values()):
        data["registered"] = trt_plugins.prepare(backend.module, model, capability=capability)
        build.log(f"[vlc] registered TensorRT plugins {', '.join(data['registered'])}")
    return out


def optimization_profile(signature: Signature, spec: TargetSpec,
                         default_batches: tuple[int, ...] | None) -> dict[str, ShapeRange]:
    """One shape range per input: --shapes, else --batch, else the model's batch sizes.

    Dynamic dims without a range are an error (never a silent fallback to 1); so is --batch on
    a graph whose batch axis is fixed.
    """
    ranges: dict[str, ShapeRange] = {}
    for sig in signature.inputs:
        if sig.name in spec.shapes:
            ranges[sig.name] = spec.shapes[sig.name]
            continue
        dynamic = [axis for axis, dim in enumerate(sig.shape) if not isinstance(dim, int)]
        if not dynamic:
            if spec.batch and sig.shape and spec.batch != (sig.shape[0],) * 3:
                raise InputError(f"--batch {','.join(map(str, spec.batch))} but input '{sig.name}' has a "
                                 f"fixed shape {list(sig.shape)}",
                                 fix="re-export the model with a dynamic batch axis, or drop --batch")
            shape = tuple(int(d) for d in sig.shape)
            ranges[sig.name] = ShapeRange(shape, shape, shape)
            continue
        if dynamic != [0]:
            named = ", ".join(f"axis {a} ('{sig.shape[a]}')" for a in dynamic if a != 0)
            raise InputError(f"input '{sig.name}' {list(sig.shape)} has dynamic {named} with no range",
                             fix=f"give --shapes {sig.name}:MIN,OPT,MAX with shapes like "
                                 f"{'x'.join('1' if isinstance(d, str) else str(d) for d in sig.shape)}")
        if spec.batch:
            lo, opt, hi = spec.batch
        elif default_batches:
            lo, opt, hi = min(default_batches), max(default_batches), max(default_batches)
        else:
            raise InputError(f"input '{sig.name}' {list(sig.shape)} has a dynamic batch axis with no range",
                             fix="pass --batch MIN,OPT,MAX or --shapes NAME:MIN,OPT,MAX")
        rest = tuple(int(d) for d in sig.shape[1:])
        ranges[sig.name] = ShapeRange((lo, *rest), (opt, *rest), (hi, *rest))
    return ranges


@dataclass
class ParserFailure:
    node: int
    name: str
    op: str
    description: str
    code: str

    def line(self) -> str:
        where = f"node {self.node}" + (f" '{self.name}'" if self.name else "") + (f" ({self.op})" if self.op else "")
        return f"{where}: {self.description}"


def parser_failures(parser: Any) -> list[ParserFailure]:
    failures = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        failures.append(ParserFailure(int(err.node()), _call(err, "node_name"), _call(err, "node_operator"),
                                      _call(err, "desc"), str(_call(err, "code"))))
    return failures


def _call(obj: Any, name: str) -> str:
    fn = getattr(obj, name, None)
    try:
        return str(fn()) if fn is not None else ""
    except Exception:  # noqa: BLE001 - older bindings lack some accessors
        return ""


def failed_log_path(build: BuildDir) -> Path:
    """Where a failed build's log is kept (the build directory itself is removed on failure)."""
    match = re.match(r"^\.(.+)\.building-", build.path.name)
    return build.path.parent / f"{match.group(1) if match else 'vlc'}.failed-build.log"


def keep_failed_log(build: BuildDir) -> Path:
    target = failed_log_path(build)
    if build.log_path.exists():
        target.write_bytes(build.log_path.read_bytes())
    return target


_LAYER_LINE = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<type>[^,]*), .*?"
                         r"TacticName: (?P<tactic>[^,]*), StreamId: (?P<stream>\d+), Metadata: (?P<meta>.*)$")


def layers_from_log(text: str) -> list[dict[str, Any]]:
    """Per-layer description from the builder's verbose "Layers:" report (no GPU needed)."""
    layers = []
    for line in text.splitlines():
        m = _LAYER_LINE.match(line)
        if not m:
            continue
        onnx_layers = re.findall(r"\[ONNX Layer: ([^\]]*)\]", m["meta"])
        layers.append({"name": m["name"], "type": m["type"], "tactic": m["tactic"],
                       "stream": int(m["stream"]), "onnx_layers": onnx_layers})
    return layers


@dataclass
class BuildSettings:
    workspace_mib: int | None = None
    optimization_level: int | None = None
    tf32: bool = False
    timing_cache: Path | None = None
    plugin_libraries: list[str] = field(default_factory=list)
    legacy_flags: tuple[str, ...] = ()  # FP16 / BF16 / INT8 builder flags (TensorRT < 11 only)
    compute_capability: tuple[int, int] | None = None  # TensorRT-RTX ahead-of-time target


def build_engine(backend: Backend, graph: Path, signature: Signature, profile: dict[str, ShapeRange],
                 settings: BuildSettings, build: BuildDir, *, inspect: bool) -> dict[str, Any]:
    """Parse `graph`, build, write model.engine (+ layers.json); return manifest facts."""
    trt = backend.module
    logger = make_logger(backend, build)
    info: dict[str, Any] = {}
    try:
        if settings.plugin_libraries:
            info["plugin_libraries"] = load_plugin_libraries(settings.plugin_libraries, build)
        if hasattr(trt, "init_libnvinfer_plugins") and not backend.is_rtx:
            trt.init_libnvinfer_plugins(logger, "")
        builder = trt.Builder(logger)
        flags = 0
        strongly_typed = not settings.legacy_flags and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        if strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        info["strongly_typed"] = strongly_typed
        parser = trt.OnnxParser(network, logger)
        build.log(f"[vlc] parsing {graph}")
        if not parser.parse_from_file(str(graph)):
            failures = parser_failures(parser)
            for f in failures:
                build.log(f"[vlc] parser error {f.code}: {f.line()}")
            kept = keep_failed_log(build)
            first = failures[0] if failures else ParserFailure(-1, "", "", "unknown parser error", "")
            more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
            raise CompileError(f"TensorRT's ONNX parser rejected {first.line()}{more}", where=str(graph),
                               fix=f"every parser error is listed in {kept}; fix or replace the op "
                                   "(a vlc pass or plugin), or load its plugin with -O plugin_libraries=")
        names = {network.get_input(i).name for i in range(network.num_inputs)}
        if unknown := sorted(set(profile) - names):
            raise InputError(f"shape range for unknown input(s) {', '.join(unknown)}",
                             fix=f"the network's inputs are: {', '.join(sorted(names))}")
        config = builder.create_builder_config()
        opt_profile = builder.create_optimization_profile()
        for name, rng in profile.items():
            opt_profile.set_shape(name, rng.min, rng.opt, rng.max)
        config.add_optimization_profile(opt_profile)
        if settings.workspace_mib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
        if settings.optimization_level is not None:
            config.builder_optimization_level = settings.optimization_level
        info["builder_optimization_level"] = config.builder_optimization_level
        if settings.tf32:
            config.set_flag(trt.BuilderFlag.TF32)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)
        for flag in settings.legacy_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if settings.compute_capability is not None:
            targets = backend.rtx_targets()
            config.num_compute_capabilities = 1
            config.set_compute_capability(targets[settings.compute_capability], 0)
        cache = None
        if settings.timing_cache is not None:
            if backend.is_rtx:
                info["timing_cache"] = "ignored: timing cache operations are no-ops in TensorRT-RTX"
            else:
                blob = settings.timing_cache.read_bytes() if settings.timing_cache.is_file() else b""
                cache = config.create_timing_cache(blob)
                config.set_timing_cache(cache, False)
                info["timing_cache"] = {"path": str(settings.timing_cache), "loaded_bytes": len(blob)}
        build.log(f"[vlc] building for {profile_text(profile)}")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            kept = keep_failed_log(build)
            last = logger.errors[-1] if logger.errors else "no error message"
            raise CompileError(f"TensorRT could not build the engine: {last.splitlines()[0]}",
                               where=str(graph), fix=f"the builder's log is in {kept}")
        engine_path = build.path / "model.engine"
        engine_path.write_bytes(memoryview(serialized))
        build.files["main"] = engine_path.name
        info["engine_bytes"] = engine_path.stat().st_size
        if cache is not None:
            _write_atomic(settings.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
            info["timing_cache"]["saved_bytes"] = settings.timing_cache.stat().st_size
        info["io"] = _network_io(network)
        layers = _describe_layers(backend, logger, serialized, inspect)
        (build.path / "layers.json").write_text(json.dumps(layers, indent=1) + "\n")
        build.files["layers"] = "layers.json"
        info["layers"] = {"source": layers["source"], "count": len(layers["layers"])}
        return info
    finally:
        logger.close()


def _describe_layers(backend: Backend, logger: Any, serialized: Any, inspect: bool) -> dict[str, Any]:
    """Engine inspector JSON when the engine deserializes here (a GPU it targets); otherwise the
    builder's verbose layer report, which needs no GPU."""
    trt = backend.module
    if inspect:
        try:
            engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
            if engine is not None:
                inspector = engine.create_engine_inspector()
                data = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
                return {"source": "engine inspector (LayerInformationFormat.JSON)",
                        "layers": data.get("Layers", []), "bindings": data.get("Bindings", [])}
        except Exception as exc:  # noqa: BLE001 - fall back to the build log's report
            logger.errors.append(f"engine inspector failed: {exc}")
    text = logger.layers_text or ""
    return {"source": "builder verbose log (no GPU to deserialize the engine)" if text else "unavailable",
            "layers": layers_from_log(text)}


def _network_io(network: Any) -> dict[str, list[dict[str, Any]]]:
    def describe(t: Any) -> dict[str, Any]:
        return {"name": t.name, "dtype": str(t.dtype).split(".")[-1], "shape": list(t.shape)}

    return {"inputs": [describe(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [describe(network.get_output(i)) for i in range(network.num_outputs)]}


def profile_text(profile: dict[str, ShapeRange]) -> str:
    return " ".join(f"{name}:{rng.text()}" for name, rng in profile.items())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

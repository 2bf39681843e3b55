"""Engine building through Polygraphy's loaders: ONNX parser, config, engine; then describe.

Polygraphy (NVIDIA's own loaders, bound to tensorrt or tensorrt_rtx by pg.py) parses the graph
(network_from_onnx_path), makes the builder config (CreateConfig, or CreateConfigRTX with the
preset's compute capability) and builds (engine_bytes_from_network). vlc adds what Polygraphy
does not: its plugin rewrites and registrations, optimization profiles by TensorRT's own network
input names, one-line parser errors naming the node and operator, the failed build's log,
layers.json, an atomic engine write and the manifest facts.

Only called with a loaded Backend (the SDK module imported lazily by backend.py).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlc.artifact import BuildDir, keep_failed_log
from vlc.errors import CompileError, InputError
from vlc.plugins import apply_plugins
from vlc.plugins import trt as trt_plugins
from vlc.signature import Signature
from vlc.spec import ShapeRange, TargetSpec
from vlc.targets.trt.backend import Backend
from vlc.targets.trt.pg import Polygraphy, polygraphy_for
from vlc.targets.trt.pglog import captured


def load_plugin_libraries(pg: Polygraphy, paths: list[str], build: BuildDir) -> list[str]:
    """Load plugin .so files before parsing (Polygraphy's load_plugins), so their creators register;
    a missing or unloadable file is one line naming it."""
    loaded = []
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"plugin library {path} does not exist",
                             fix="pass existing .so files in -O plugin_libraries=a.so,b.so")
        resolved = str(Path(path).resolve())
        try:
            pg.trt.load_plugins(plugins=[resolved])
        except OSError as exc:
            raise InputError(f"cannot load plugin library {path}: {exc}",
                             fix="build it against this TensorRT and its CUDA version") from None
        build.log(f"[vlc] loaded plugin library {path}")
        loaded.append(resolved)
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


# How TensorRT's IParserError prints (what Polygraphy's check_onnx_parser_errors logs, one per error)
_PARSER_ERROR = re.compile(r"^In node (?P<node>-?\d+) with name: (?P<name>.*?) and operator: (?P<op>.*?) "
                           r"\((?P<func>[^)]*)\): (?P<code>[A-Z_]+): (?P<desc>.*)$", re.S)


def parser_failures(errors: Sequence[str]) -> list[ParserFailure]:
    """The parser's errors among the messages logged while parsing (other lines are skipped)."""
    failures = []
    for text in errors:
        m = _PARSER_ERROR.match(text.strip())
        if m:
            failures.append(ParserFailure(int(m["node"]), m["name"].strip(), m["op"].strip(),
                                          " ".join(m["desc"].split()), m["code"]))
    return failures


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
    # values of shape-tensor inputs: (min, opt, max) per ONNX input name, given by the user
    shape_values: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)


def build_engine(backend: Backend, graph: Path, signature: Signature, profile: dict[str, ShapeRange],
                 settings: BuildSettings, build: BuildDir, *, inspect: bool,
                 default_values: Callable[[str], tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Parse `graph`, build, write model.engine (+ layers.json); return manifest facts.

    `profile` is keyed by the graph's ONNX input names; `default_values(name)` gives a
    shape-tensor input's value when the user gave none (it is then fixed, warned and recorded).
    """
    pg = polygraphy_for(backend)
    trt = backend.module
    info: dict[str, Any] = {"polygraphy": pg.version}
    with captured(pg.logger, build.log_path) as log:
        if settings.plugin_libraries:
            info["plugin_libraries"] = load_plugin_libraries(pg, settings.plugin_libraries, build)
        strongly_typed = not settings.legacy_flags and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        info["strongly_typed"] = strongly_typed
        build.log(f"[vlc] parsing {graph} (Polygraphy network_from_onnx_path)")
        try:
            builder, network, parser = pg.trt.network_from_onnx_path(str(graph), strongly_typed=strongly_typed)
        except pg.error as exc:
            raise _parser_error(log.errors, exc, graph, build) from None
        names = network_names(graph, network)
        info["network_names"] = {kind: {k: v for k, v in m.items() if k != v} for kind, m in names.items()}
        trt_profile, values = network_profile(pg, network, profile, names["inputs"], settings.shape_values,
                                              default_values, build)
        if values:
            info["shape_tensor_values"] = values
        with warnings.catch_warnings():
            # Polygraphy gives every config an empty timing cache; TensorRT-RTX deprecates the call
            # (its timing cache operations are no-ops), which is not the user's concern
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                config = pg.trt.PostprocessConfig(_config_loader(pg, backend, settings, trt_profile, info),
                                                  _set_tf32(trt, settings.tf32))(builder, network)
            except (pg.error, RuntimeError) as exc:  # TensorRT's own checks of profiles and settings
                kept = keep_failed_log(build)
                raise CompileError(f"TensorRT rejected the build configuration: {str(exc).strip().splitlines()[0]}",
                                   where=str(graph), fix=f"check the shape ranges and -O options; the log is "
                                                         f"in {kept}") from None
        info["builder_optimization_level"] = config.builder_optimization_level
        if settings.compute_capability is not None:
            build.log(f"[vlc] compute capability {settings.compute_capability[0]}.{settings.compute_capability[1]}"
                      " (CreateConfigRTX)")
        build.log(f"[vlc] building for {profile_text(profile)}")
        save_cache = str(settings.timing_cache) if "timing_cache" in info and not backend.is_rtx else None
        try:
            serialized = pg.trt.engine_bytes_from_network((builder, network, parser), config=config,
                                                          save_timing_cache=save_cache)
        except pg.error:
            kept = keep_failed_log(build)
            last = next((e for e in reversed(log.errors) if "Invalid Engine" not in e), None) or \
                (log.errors[-1] if log.errors else "no error message")
            raise CompileError(f"TensorRT could not build the engine: {last.splitlines()[0]}",
                               where=str(graph), fix=f"the builder's log is in {kept}") from None
        engine_path = build.path / "model.engine"
        _write_atomic(engine_path, memoryview(serialized))
        build.files["main"] = engine_path.name
        info["engine_bytes"] = engine_path.stat().st_size
        if save_cache is not None:
            info["timing_cache"]["saved_bytes"] = settings.timing_cache.stat().st_size  # type: ignore[union-attr]
        info["io"] = _network_io(network)
        layers = _describe_layers(pg, trt, log, serialized, inspect)
    (build.path / "layers.json").write_text(json.dumps(layers, indent=1) + "\n")
    build.files["layers"] = "layers.json"
    info["layers"] = {"source": layers["source"], "count": len(layers["layers"])}
    return info


def _parser_error(errors: Sequence[str], exc: Exception, graph: Path, build: BuildDir) -> CompileError:
    failures = parser_failures(errors)
    for f in failures:
        build.log(f"[vlc] parser error {f.code}: {f.line()}")
    kept = keep_failed_log(build)
    if not failures:  # not the parser's own report (a missing or unreadable file): Polygraphy's line
        return CompileError(f"TensorRT's ONNX parser failed: {str(exc).strip().splitlines()[0]}",
                            where=str(graph), fix=f"the parser's log is in {kept}")
    first = failures[0]
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return CompileError(f"TensorRT's ONNX parser rejected {first.line()}{more}", where=str(graph),
                        fix=f"every parser error is listed in {kept}; fix or replace the op "
                            "(a vlc pass or plugin), or load its plugin with -O plugin_libraries=")


def _config_loader(pg: Polygraphy, backend: Backend, settings: BuildSettings, profile: Any,
                   info: dict[str, Any]) -> Any:
    """Polygraphy's CreateConfig (TensorRT) or CreateConfigRTX (TensorRT-RTX, with the preset's
    compute capability), with vlc's settings."""
    trt = backend.module
    common: dict[str, Any] = {"profiles": [profile], "profiling_verbosity": trt.ProfilingVerbosity.DETAILED,
                              "builder_optimization_level": settings.optimization_level}
    if settings.workspace_mib is not None:
        common["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: settings.workspace_mib << 20}
    if settings.timing_cache is not None:
        if backend.is_rtx:
            info["timing_cache"] = "ignored: timing cache operations are no-ops in TensorRT-RTX"
        else:
            path = settings.timing_cache
            path.parent.mkdir(parents=True, exist_ok=True)
            info["timing_cache"] = {"path": str(path), "loaded_bytes": path.stat().st_size if path.is_file() else 0}
            common["load_timing_cache"] = str(path)
    if backend.is_rtx:
        capabilities = [settings.compute_capability] if settings.compute_capability is not None else None
        assert pg.rtx is not None  # bound whenever the backend is TensorRT-RTX (pg.py)
        return pg.rtx.CreateConfigRTX(compute_capabilities=capabilities, **common)
    flags = set(settings.legacy_flags)
    # TF32 is left to _set_tf32 (CreateConfig would fail where TensorRT has no such flag)
    return pg.trt.CreateConfig(fp16="FP16" in flags, bf16="BF16" in flags, int8="INT8" in flags, **common)


def _set_tf32(trt: Any, on: bool) -> Callable[[Any, Any, Any], None]:
    """TF32 set or cleared as vlc decided, for both configs (CreateConfigRTX has no tf32 argument;
    TensorRT-RTX has the flag, on by default). A TensorRT without the flag keeps its default."""
    def apply(builder: Any, network: Any, config: Any) -> None:
        flag = getattr(trt.BuilderFlag, "TF32", None)
        if flag is None:
            return
        if on:
            config.set_flag(flag)
        else:
            config.clear_flag(flag)

    return apply


def network_names(graph: Path, network: Any) -> dict[str, dict[str, str]]:
    """ONNX graph input / output name -> TensorRT network tensor name.

    TensorRT's parser can rename a graph input: one that feeds a Loop is named after the loop
    body's input (`cond` becomes `cond_in`). Names that match map to themselves; the rest are
    paired in graph order, which the parser keeps.
    """
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    weights = {t.name for t in proto.graph.initializer}
    onnx_inputs = [v.name for v in proto.graph.input if v.name not in weights]
    onnx_outputs = [v.name for v in proto.graph.output]
    trt_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    trt_outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    return {"inputs": pair_names(onnx_inputs, trt_inputs, "input"),
            "outputs": pair_names(onnx_outputs, trt_outputs, "output")}


def pair_names(onnx_names: Sequence[str], trt_names: Sequence[str], kind: str) -> dict[str, str]:
    """Pair ONNX and TensorRT tensor names: equal names, then the rest in order."""
    common = set(onnx_names) & set(trt_names)
    rest_onnx = [n for n in onnx_names if n not in common]
    rest_trt = [n for n in trt_names if n not in common]
    if len(rest_onnx) != len(rest_trt):
        raise CompileError(f"TensorRT's network has {kind}s {', '.join(trt_names)} and the graph "
                           f"{', '.join(onnx_names)}; vlc cannot pair {', '.join(rest_onnx or rest_trt)}",
                           fix="give every graph input and output a use and a unique name")
    return {**{n: n for n in onnx_names if n in common}, **dict(zip(rest_onnx, rest_trt))}


def network_profile(pg: Polygraphy, network: Any, profile: Mapping[str, ShapeRange], names: Mapping[str, str],
                    shape_values: Mapping[str, tuple[tuple[int, ...], ...]],
                    default_values: Callable[[str], tuple[int, ...]] | None,
                    build: BuildDir) -> tuple[Any, dict[str, Any]]:
    """Polygraphy's Profile keyed by TensorRT's network input names, covering every input (never
    Polygraphy's silent size-1 default). A shape-tensor input (its value sets a shape, e.g. a
    Loop's trip count) takes a value range: the user's, else the value vlc feeds, fixed."""
    result = pg.trt.Profile()
    values: dict[str, Any] = {}
    by_trt = {trt_name: onnx_name for onnx_name, trt_name in names.items()}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        onnx_name = by_trt.get(tensor.name, tensor.name)
        if tensor.is_shape_tensor:
            if onnx_name in shape_values:
                lo, opt, hi = shape_values[onnx_name]
                chosen_by = "user"
            elif default_values is not None:
                lo = opt = hi = tuple(default_values(onnx_name))
                chosen_by = "vlc"
                build.log(f"[vlc] WARNING input '{onnx_name}' is a shape tensor for TensorRT (its value "
                          f"sets shapes); built for its value {list(lo)} only — give -O "
                          f"shape_values={onnx_name}:MIN,OPT,MAX to build for a range")
            else:
                raise InputError(f"input '{onnx_name}' is a shape tensor for TensorRT (its value sets shapes) "
                                 "and has no value range",
                                 fix=f"give -O shape_values={onnx_name}:MIN,OPT,MAX")
            result.add(tensor.name, lo, opt, hi)
            values[onnx_name] = {"min": list(lo), "opt": list(opt), "max": list(hi), "chosen_by": chosen_by}
            continue
        if onnx_name not in profile:
            raise InputError(f"TensorRT's network input '{tensor.name}' has no shape range",
                             fix=f"give --shapes {onnx_name}:MIN,OPT,MAX")
        rng = profile[onnx_name]
        result.add(tensor.name, rng.min, rng.opt, rng.max)
    if unknown := sorted(set(profile) - set(names)):
        raise InputError(f"shape range for unknown input(s) {', '.join(unknown)}",
                         fix=f"the graph's inputs are: {', '.join(sorted(names))}")
    return result, values


def _describe_layers(pg: Polygraphy, trt: Any, log: Any, serialized: Any, inspect: bool) -> dict[str, Any]:
    """Engine inspector JSON when the engine deserializes here (a GPU it targets); otherwise the
    builder's verbose layer report, which needs no GPU."""
    if inspect:
        try:
            engine = pg.trt.engine_from_bytes(serialized)
            inspector = engine.create_engine_inspector()
            data = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
            return {"source": "engine inspector (LayerInformationFormat.JSON)",
                    "layers": data.get("Layers", []), "bindings": data.get("Bindings", [])}
        except Exception as exc:  # noqa: BLE001 - fall back to the build log's report
            log.errors.append(f"engine inspector failed: {exc}")
    text = log.layers_text or ""
    return {"source": "builder verbose log (no GPU to deserialize the engine)" if text else "unavailable",
            "layers": layers_from_log(text)}


def _network_io(network: Any) -> dict[str, list[dict[str, Any]]]:
    def describe(t: Any) -> dict[str, Any]:
        return {"name": t.name, "dtype": str(t.dtype).split(".")[-1], "shape": list(t.shape)}

    return {"inputs": [describe(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [describe(network.get_output(i)) for i in range(network.num_outputs)]}


def profile_text(profile: dict[str, ShapeRange]) -> str:
    return " ".join(f"{name}:{rng.text() if rng.min else 'scalar'}" for name, rng in profile.items())


def _write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write to a temporary name beside `path`, then rename: a reader never sees half an engine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

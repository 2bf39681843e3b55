"""The `trt` and `trt-rtx` targets, built and run through Polygraphy.

`trt` builds with TensorRT 10.x / 11.x (`tensorrt`) only; where only TensorRT-RTX is installed it
refuses and points at `trt-rtx` (TensorRT cannot load an RTX engine). `trt-rtx` uses
`tensorrt_rtx`, which builds ahead of time for a preset's compute capability without a GPU.
Precision lives in the graph (vlc.frontend.precision.convert); the legacy FP16/INT8/BF16 builder
flags are only used on TensorRT < 11 when asked for with -O legacy_precision_flags=true.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from vlc import shape_choice
from vlc.artifact import Artifact, BuildDir
from vlc.errors import InputError, TargetUnavailable
from vlc.options import cosine, integer, lower_text, words
from vlc.signature import Signature
from vlc.spec import Precision, ShapeRange, TargetSpec
from vlc.target import Availability, Capabilities, CompileSource, OptionInfo, Session, Target, batch_range
from vlc.targets.trt.backend import TENSORRT, TENSORRT_RTX, Backend, load_backend
from vlc.targets.trt.cuda import gpus
from vlc.targets.trt.parser_rewrites import rewrite_for_parser
from vlc.targets.trt.presets import DEFAULT_PRESET, GpuPreset, gpu_presets, preset_for_capability
from vlc.targets.trt.runtime import TrtSession

# vlc.frontend.precision's calibration methods (quantize.METHODS), named here so that listing the
# targets does not import the precision pass; tests/test_options.py checks that the two agree
CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "mse")
ISLAND_MODES = ("static", "auto")
ENGINE_FILES = ((".engine", "TensorRT engine"), (".plan", "TensorRT engine"))


def optimization_level(value: Any) -> int:
    level = integer(value)
    if not 0 <= level <= 5:  # TensorRT clamps silently
        raise ValueError("is outside TensorRT's levels 0-5")
    return level


def parse_plugins(value: Any) -> list[str] | None:
    """-O plugins: default (None: those on by default), none ([]) or names (comma list or JSON list)."""
    if isinstance(value, str) and value.strip().lower() == "default":
        return None
    if isinstance(value, str) and value.strip().lower() == "none":
        return []
    return words(value)


def parse_shape_values(text: str | Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """`-O shape_values=trip_count:1,5,10;shape:1x8,2x8,4x8` -> {name: (min, opt, max)}; the parsed
    form (as a stored spec holds it, lists for tuples) parses to itself."""
    if isinstance(text, Mapping):
        text = ";".join(f"{name}:" + ",".join("x".join(map(str, v)) for v in ranges)
                        for name, ranges in text.items())
    found: dict[str, tuple[tuple[int, ...], ...]] = {}
    fix = "give -O shape_values=NAME:MIN,OPT,MAX (values joined by x for a 1-D shape tensor; ';' between inputs)"
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, ranges = item.rpartition(":")
        parts = ranges.split(",")
        try:
            values = tuple(tuple(int(v) for v in part.split("x")) for part in parts)
        except ValueError:
            values = ()
        if not sep or not name or len(values) != 3 or len({len(v) for v in values}) != 1:
            raise InputError(f"option shape_values: '{item}' is not NAME:MIN,OPT,MAX", fix=fix)
        if any(not lo <= opt <= hi for lo, opt, hi in zip(*values)):
            raise InputError(f"option shape_values: '{item}' is not ordered MIN <= OPT <= MAX in every value",
                             fix=fix)
        found[name] = values
    return found


OPTIONS: dict[str, OptionInfo] = {
    "workspace": OptionInfo("workspace memory pool limit, MiB", int, None),
    "builder_optimization_level": OptionInfo("TensorRT builder optimization level 0-5 (default 3)", int, None,
                                             parse=optimization_level),
    "tf32": OptionInfo("TF32 for fp32 math: on/off (default: on for tf32/fp16/bf16/int8, off for fp32)",
                       bool, None),
    "timing_cache": OptionInfo("timing cache file, loaded if present and written back (TensorRT only)",
                               str, None),
    "plugin_libraries": OptionInfo("plugin .so files loaded with ctypes before parsing (comma-separated)",
                                   list, None),
    "plugins": OptionInfo("vlc custom-operator kernels: default (those on by default for trt in "
                          "plugins/decisions.json), none, or names from `vlc plugins` (comma-separated)",
                          str, "default", parse=parse_plugins),
    "calibration": OptionInfo("int8: directory of .npz feeds (or .npy for single-input models)", str, None),
    "calibration_method": OptionInfo("int8: minmax, entropy or percentile", str, "minmax",
                                     choices=CALIBRATION_METHODS, parse=lower_text),
    "calibration_batches": OptionInfo("int8 without a directory: generated batches", int, 8),
    "strict_precision": OptionInfo("fail the build when the converted graph misses its tolerance", bool, True),
    "islands": OptionInfo("fp16/bf16 nodes kept in fp32: static (the shared op set and LayerNorm "
                          "patterns) or auto (the fewest of them that meet -O accuracy)", str, "static",
                          choices=ISLAND_MODES, parse=lower_text),
    "accuracy": OptionInfo("the worst output cosine against fp32 the converted graph must meet "
                           "(default: the precision's tolerance); islands=auto's goal", float, None, parse=cosine),
    "legacy_precision_flags": OptionInfo("TensorRT < 11 only: FP16/BF16/INT8 builder flags instead of a "
                                         "typed graph", bool, False),
    "shape_values": OptionInfo("value ranges of shape-tensor inputs (a Loop's trip count, a Reshape's "
                               "target): NAME:MIN,OPT,MAX with values joined by x, ';' between inputs "
                               "(default: the value vlc feeds, fixed)", str, None,
                               parse=parse_shape_values),
}


class TrtTarget(Target):
    name: ClassVar[str] = "trt"
    summary: ClassVar[str] = "TensorRT 10/11 engines (falls back to TensorRT-RTX when only it is installed)"
    precisions = (Precision.FP32, Precision.TF32, Precision.FP16, Precision.BF16, Precision.INT8)
    devices = ("cuda",)
    options = OPTIONS
    presets = {name: p.to_json() for name, p in gpu_presets().items()}
    default_preset = DEFAULT_PRESET
    prefer: ClassVar[str] = TENSORRT
    capabilities: ClassVar[Capabilities] = Capabilities(compiled_files=ENGINE_FILES)

    def backend(self) -> Backend:
        return load_backend(self.prefer)

    # ---- availability ----------------------------------------------------------------------
    def available(self) -> Availability:
        try:
            backend = self.backend()
        except TargetUnavailable as exc:
            return Availability(False, exc.line())
        if importlib.util.find_spec("polygraphy") is None:
            return Availability(False, "polygraphy is not installed (vlc builds and runs TensorRT engines "
                                       "through it); pip install polygraphy", {backend.name: backend.version})
        found, why = gpus()
        notes: list[str] = []
        if not found:
            if not backend.is_rtx:
                return Availability(False, f"TensorRT {backend.version} builds and runs on a CUDA GPU and "
                                           f"there is none ({why}); --target trt-rtx builds without one",
                                    {backend.name: backend.version})
            notes.append(f"{why}; engines build ahead of time for the preset's compute "
                         "capability, running them needs a GPU")
        notes += [g.describe() for g in found]
        return Availability(True, "; ".join(notes), {backend.name: backend.version},
                            ["cuda"] if found else [])

    def require_available(self) -> Availability:
        self.backend()  # the backend's own line: `trt` where only TensorRT-RTX is says to use trt-rtx
        return super().require_available()

    # ---- compile ---------------------------------------------------------------------------
    def validate_spec(self, spec: TargetSpec, signature: Signature) -> TargetSpec:
        if spec.device == "cpu":  # the CLI's default device; TensorRT engines always run on cuda
            spec = replace(spec, device="cuda")
        spec = super().validate_spec(spec, signature)  # options typed and checked one by one
        preset = gpu_presets()[spec.preset or DEFAULT_PRESET]
        enabled = spec.options["plugins"]
        if enabled:  # unknown names fail here, before any conversion or build work
            from vlc.plugins.apply import (  # local: loads onnx, onnx_ir and onnxscript
                _resolve_enabled,
                registered_plugins,
            )

            _resolve_enabled(registered_plugins(), self.name, enabled)
        tf32 = spec.options["tf32"]
        if spec.precision is Precision.FP32 and tf32:
            raise InputError("precision fp32 with tf32=on is TF32 math", fix="use --precision tf32")
        if spec.precision is Precision.TF32 and tf32 is False:
            raise InputError("precision tf32 with tf32=off is fp32 math", fix="use --precision fp32")
        try:
            backend = self.backend()
        except TargetUnavailable:
            return spec  # compile() reports the missing SDK next
        if backend.is_rtx:
            self._check_rtx_preset(backend, preset)
        if spec.options["legacy_precision_flags"] and not backend.has_precision_flags:
            raise InputError(f"legacy_precision_flags needs TensorRT < 11; this is {backend.name} "
                             f"{backend.version}, which is strongly typed",
                             fix="drop the option: precision comes from the converted graph")
        return spec

    def _check_rtx_preset(self, backend: Backend, preset: GpuPreset) -> None:
        targets = backend.rtx_targets()
        if preset.compute_capability not in targets:
            usable = sorted(name for name, p in gpu_presets().items() if p.compute_capability in targets)
            ccs = ", ".join(f"{a}.{b}" for a, b in sorted(targets))
            raise InputError(f"TensorRT-RTX {backend.version} cannot target preset '{preset.name}' "
                             f"({preset.gpu}, compute capability {preset.cc}); it targets {ccs}",
                             fix=f"choose one of the presets {', '.join(usable)}, or --target trt with "
                                 f"TensorRT 10/11 on a {preset.gpu}")

    def _compile(self, source: CompileSource, spec: TargetSpec, build: BuildDir) -> None:
        from vlc.targets.trt.builder import (  # local: loads onnx, onnx_ir and onnxscript
            BuildSettings,
            apply_vlc_plugins,
            build_engine,
            optimization_profile,
        )

        backend = self.backend()
        preset = gpu_presets()[spec.preset or DEFAULT_PRESET]
        signature = source.signature
        found, _ = gpus()
        settings = BuildSettings(workspace_mib=spec.options["workspace"],
                                 optimization_level=spec.options["builder_optimization_level"],
                                 plugin_libraries=spec.options["plugin_libraries"] or [])
        tf32 = spec.options["tf32"]
        settings.tf32 = tf32 if tf32 is not None else spec.precision is not Precision.FP32
        if (cache := spec.options["timing_cache"]) is not None:
            settings.timing_cache = Path(cache).expanduser().resolve()
        gpu = None
        if backend.is_rtx:
            settings.compute_capability = preset.compute_capability
        else:
            gpu = found[0]
            if gpu.compute_capability != preset.compute_capability:
                matches = preset_for_capability(gpu.compute_capability)
                raise InputError(f"TensorRT builds for the GPU it runs on: {gpu.describe()}, but preset "
                                 f"'{preset.name}' is compute capability {preset.cc}",
                                 fix=f"use --preset {matches[0]}" if matches else
                                 "add a preset for this GPU, or build with --target trt-rtx")
        settings.shape_values = spec.options["shape_values"] or {}
        spec, check_feeds = self._choose_shapes(source, spec, build)
        graph, precision_report = self._graph_for_precision(source, spec, backend, build, settings,
                                                            check_feeds)
        if precision_report is not None:
            build.extra["precision"] = precision_report
        graph = apply_vlc_plugins(backend, graph, self.name, spec.options["plugins"],
                                  preset.compute_capability, build)
        profile = optimization_profile(signature, spec,
                                       source.model.batch_sizes if source.model is not None else None)
        graph = self._rewrite_for_parser(graph, profile, backend, build)
        inspect = bool(found) and (gpu is not None or any(
            g.compute_capability == preset.compute_capability for g in found))
        build.log(f"[vlc] {backend.name} {backend.version}; preset {preset.name} (compute capability "
                  f"{preset.cc}); precision {spec.precision.value}; TF32 {'on' if settings.tf32 else 'off'}")
        info = build_engine(backend, graph, signature, profile, settings, build, inspect=inspect,
                            default_values=self._fed_values(source, profile))
        build.extra["trt"] = {
            "backend": backend.name, "version": backend.version,
            "preset": preset.to_json(),
            "compute_capabilities": [preset.cc] if backend.is_rtx else [gpu.cc],  # type: ignore[union-attr]
            "build_gpu": gpu.describe() if gpu is not None else None,
            "profiles": [{name: rng.to_json() for name, rng in profile.items()}],
            "tf32": settings.tf32, "legacy_precision_flags": list(settings.legacy_flags),
            "workspace_mib": settings.workspace_mib,
            "graph": graph.name if graph.parent == build.path else str(graph), **info}

    def _rewrite_for_parser(self, graph: Path, profile: dict[str, Any], backend: Backend,
                            build: BuildDir) -> Path:
        """The graph with the forms TensorRT's parser rejects replaced (parser_rewrites.py); the
        rewritten graph is kept in the artifact as what was parsed."""
        rewritten, report = rewrite_for_parser(graph, build.path, profile, rtx=backend.is_rtx)
        build.extra["parser_rewrites"] = report.to_json()
        if report.changed:
            build.files["graph"] = rewritten.name
            data = rewritten.with_name(rewritten.name + ".data")
            if data.is_file():
                build.files["graph_data"] = data.name
            else:
                build.files.pop("graph_data", None)
            build.log(f"[vlc] parser rewrites: {report.summary()} -> {rewritten.name}")
        return rewritten

    @staticmethod
    def _fed_values(source: CompileSource, profile: dict[str, Any]) -> Any:
        """name -> the flattened value vlc feeds that input at the profile's opt batch (for a
        shape-tensor input nobody gave a value range)."""
        cache: dict[str, Any] = {}

        def value(name: str) -> tuple[int, ...]:
            import numpy as np

            if not cache:
                batch = next((r.opt[0] for r in profile.values() if r.opt), 1)
                try:
                    cache.update(source.generate_inputs(batch, seed=0))
                except Exception as exc:  # noqa: BLE001 - the generator's own failure, as the reason
                    raise InputError(f"input '{name}' is a shape tensor for TensorRT and vlc could not "
                                     f"generate a value for it ({type(exc).__name__}: {exc})",
                                     fix=f"give -O shape_values={name}:MIN,OPT,MAX") from None
            return tuple(int(v) for v in np.asarray(cache[name]).reshape(-1))

        return value

    def _batch_range(self, spec: TargetSpec, signature: Signature, build: BuildDir) -> list[int] | None:
        """Counting the sizes vlc chose for dynamic dims (vlc.shape_choice): an artifact built for
        batch 1 because nobody gave one accepts batch 1 only."""
        chosen = (build.extra.get("shape_choice") or {}).get("shapes") or {}
        shapes = {name: ShapeRange.from_json(rng) for name, rng in chosen.items()}
        return batch_range(replace(spec, shapes={**shapes, **spec.shapes}), signature)

    def _choose_shapes(self, source: CompileSource, spec: TargetSpec,
                       build: BuildDir) -> tuple[TargetSpec, dict[str, Any] | None]:
        """The spec with sizes for dynamic dims nobody gave a range for (warned and recorded in the
        manifest), and inputs at those sizes for the precision check; (spec, None) when none were chosen."""
        chosen, notes = shape_choice.choose_shapes(
            source.onnx_path, source.signature, spec, input_specs=list(source.input_specs),
            default_batches=source.model.batch_sizes if source.model is not None else None)
        if not shape_choice.record(chosen, notes, build.extra, build.log):
            return spec, None
        feeds = None
        if source.model is None:  # a model's own generator knows its shapes; generated specs do not
            feeds = shape_choice.generate_feeds(source.signature, {k: r.opt for k, r in chosen.items()},
                                                list(source.input_specs))
        return replace(spec, shapes={**spec.shapes, **chosen}), feeds

    def _graph_for_precision(self, source: CompileSource, spec: TargetSpec, backend: Backend,
                             build: BuildDir, settings: Any,
                             check_feeds: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any] | None]:
        """The graph to parse: the fp32 source, or its fp16/bf16/int8 conversion (in the artifact)."""
        precision = spec.precision
        if precision in (Precision.FP32, Precision.TF32):
            return source.onnx_path, None
        legacy = spec.options["legacy_precision_flags"]
        if legacy:
            settings.legacy_flags = {Precision.FP16: ("FP16",), Precision.BF16: ("BF16",),
                                     Precision.INT8: ("INT8",)}[precision]
            if precision is not Precision.INT8:  # TensorRT < 11 picks fp16/bf16 kernels itself
                return source.onnx_path, {"precision": precision.value, "tool": "TensorRT builder flags",
                                          "flags": list(settings.legacy_flags)}
        from vlc.frontend.precision import CalibrationData, convert, parse_goal  # local: loads onnx

        islands, goal = parse_goal(spec.options["islands"], spec.options["accuracy"], precision.value)
        calibration = None
        if precision is Precision.INT8:
            if (folder := spec.options["calibration"]) is not None:
                calibration = CalibrationData.from_dir(folder)
            else:
                calibration = CalibrationData.generate(
                    source.model if source.model is not None else list(source.input_specs),
                    batches=spec.options["calibration_batches"])
        out = build.path / f"model.{precision.value}.onnx"
        check_note = "given feeds"
        if source.user_inputs:
            check_feeds, check_note = source.user_inputs, "the inputs given with --input"
        elif source.model is not None:
            check_feeds = source.model.generate_inputs(2, seed=0)
            check_note = f"{source.model.name}'s input generator (batch 2, seed 0)"
        elif check_feeds is not None:
            check_note = "inputs at the shapes vlc chose"
        report = convert(source.onnx_path, precision, out, calibration=calibration,
                         method=spec.options["calibration_method"], input_specs=list(source.input_specs),
                         check_feeds=check_feeds, check_note=check_note, strict=spec.options["strict_precision"],
                         islands=islands, tolerance=goal)
        build.files["graph"] = out.name
        for sidecar in build.path.glob(out.name + ".data"):
            build.files["graph_data"] = sidecar.name
        build.log(f"[vlc] precision: {report.summary()}")
        data = report.to_json()
        data["output"] = out.name  # relative to the artifact (the build directory is renamed)
        return out, data

    # ---- run / profile ---------------------------------------------------------------------
    def _gpu_for(self, artifact: Artifact) -> Any:
        found, why = gpus()
        if not found:
            raise TargetUnavailable(f"running a TensorRT engine needs a CUDA GPU: {why}",
                                    fix="run on a machine with a GPU the engine targets")
        targets = artifact.manifest.extra.get("trt", {}).get("compute_capabilities", [])
        for gpu in found:
            if not targets or gpu.cc in targets:
                return gpu
        raise TargetUnavailable(f"the engine targets compute capability {', '.join(targets)}; this machine "
                                f"has {'; '.join(g.describe() for g in found)}",
                                fix="rebuild with a --preset for this GPU (TensorRT-RTX cannot run on 9.0)")

    def _artifact_backend(self, artifact: Artifact) -> Backend:
        built_with = artifact.manifest.extra.get("trt", {}).get("backend", TENSORRT)
        backend = load_backend(built_with if built_with == TENSORRT_RTX else self.prefer)
        if backend.name != built_with:
            raise TargetUnavailable(f"the engine was built with {built_with}; only {backend.name} imports here",
                                    fix=f"install {built_with}, or rebuild the artifact")
        return backend

    def _open(self, artifact: Artifact) -> Session:
        backend = self._artifact_backend(artifact)
        return TrtSession(artifact, backend, self._gpu_for(artifact))


class TrtRtxTarget(TrtTarget):
    name: ClassVar[str] = "trt-rtx"
    summary: ClassVar[str] = ("TensorRT-RTX engines, built ahead of time for a preset's compute "
                              "capability (no GPU needed to build)")
    prefer: ClassVar[str] = TENSORRT_RTX
    capabilities: ClassVar[Capabilities] = Capabilities(builds_without_device=True, compiled_files=ENGINE_FILES)

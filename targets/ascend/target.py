"""The ascend310 and ascend310p targets: ATC builds, ais_bench runs and NPU timings."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vlc.artifact import Artifact, BuildDir, keep_failed_log
from vlc.errors import CompileError, InputError, TargetUnavailable
from vlc.shape_choice import sized_spec
from vlc.signature import Signature
from vlc.spec import Precision, TargetSpec
from vlc.target import GEARS, PER_BATCH, Availability, Capabilities, CompileSource, OptionInfo, Target
from vlc.targets.ascend import atc as atc_mod
from vlc.targets.ascend.ais_bench import AisBench, find_ais_bench
from vlc.targets.ascend.builds import prepare_builds
from vlc.targets.ascend.cann import soc_presets, soc_table
from vlc.targets.ascend.options import OPTIONS, AscendOptions, parse_options
from vlc.targets.ascend.precision import AUTO_ISLANDS_FILE
from vlc.targets.ascend.preflight import CheckReport, check
from vlc.timing import ProfileResult, ProfileSettings

DEVICE = "npu"


class AscendTarget(Target):
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP16, Precision.FP32)
    devices: ClassVar[tuple[str, ...]] = (DEVICE,)
    options: ClassVar[dict[str, OptionInfo]] = OPTIONS
    # ATC builds one static .om per batch size (-O batches) or one with gears (-O gears); `vlc check`
    # knows ATC's operator tables; a bundle builds on a machine with the toolkit
    capabilities: ClassVar[Capabilities] = Capabilities(preflight=True, bundles=True,
                                                        batch_layouts=(PER_BATCH, GEARS),
                                                        compiled_files=((".om", "Ascend offline model"),))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = soc_table(cls.name)
        cls.summary = f"{table['summary']} via ATC (.om) and ais_bench — never run on real hardware by vlc"
        cls.presets = {name: {"soc_version": p.soc_version, "fp32_precision_mode": p.fp32_precision_mode}
                       for name, p in soc_presets(cls.name).items()}
        cls.default_preset = table["default"]

    # ---- availability ----------------------------------------------------------------------
    def available(self) -> Availability:
        atc, atc_why = atc_mod.find_atc()
        runner, ais_why = find_ais_bench()
        versions = {}
        # tool names, not this machine's directories: versions go into every manifest, and an
        # artifact is copied between machines
        if atc is not None:
            versions["atc"] = _names_only(f"{atc.path} ({atc.how})")
            versions["cann_toolkit"] = atc_mod.toolkit_version()
        if runner is not None:
            versions["ais_bench"] = _names_only(runner.describe())
        if atc is None and runner is None:
            return Availability(False, f"{atc_why}; {ais_why}", versions)
        reason = "; ".join(w for w in (atc_why and f"compile: {atc_why}", ais_why and f"run: {ais_why}") if w)
        return Availability(True, reason, versions, [DEVICE] if runner is not None else [])

    # ---- spec ------------------------------------------------------------------------------
    def validate_spec(self, spec: TargetSpec, signature: Signature) -> TargetSpec:
        if spec.device in ("cpu", ""):  # the CLI's default device; an Ascend build runs on the NPU
            spec = replace(spec, device=DEVICE)
        spec = super().validate_spec(spec, signature)
        parse_options(self.name, spec, signature)  # every option error before any work
        return spec

    def ascend_options(self, spec: TargetSpec, signature: Signature) -> AscendOptions:
        return parse_options(self.name, spec, signature)

    def preflight(self, source: CompileSource, spec: TargetSpec, *, patch: bool = True) -> CheckReport:
        """`vlc check`: findings on the source graph, and on it patched when `patch`."""
        import onnx

        signature = source.signature
        spec = self.validate_spec(spec, signature)
        opts = self.ascend_options(spec, signature)
        # the sizes a build would choose for unsized dynamic dims, so the check sees that build
        spec, _, line = sized_spec(source.onnx_path, signature, spec, input_specs=list(source.input_specs),
                                   batches=opts.batches or opts.gears)
        report = check(onnx.load(str(source.onnx_path)), opts, spec, signature, patch=patch)
        if line:
            report.notes.append(line)
        return report

    # ---- compile ---------------------------------------------------------------------------
    def emit_bundle(self, source: CompileSource, spec: TargetSpec, out_dir: str | Path) -> Path:
        """A self-contained bundle (ONNX, atc/ais_bench scripts, inputs, references) for a machine
        with the CANN toolkit; `vlc bench --emit` and `vlc compile --emit` call this."""
        from vlc.targets.ascend.bundle import emit_bundle  # local: startup (`vlc targets` loads this module)

        return emit_bundle(source, spec, out_dir, target=self)

    def sweep_options(self, batches: list[int], options: Mapping[str, Any]) -> dict[str, Any]:
        """One .om per batch size of the sweep, unless the entry chose its own layout (batches, or
        gears: one .om for several sizes)."""
        if set(options) & {"batches", "gears"}:
            return dict(options)
        return {**options, "batches": sorted(batches)}

    def _compile(self, source: CompileSource, spec: TargetSpec, build: BuildDir) -> None:
        tool, why = atc_mod.find_atc()
        if tool is None:
            raise TargetUnavailable(f"cannot compile for {self.name}: {why}",
                                    fix="run on a machine with the CANN toolkit, or write a bundle "
                                        "for one with `vlc compile --emit DIR`")
        signature = source.signature
        opts = self.ascend_options(spec, signature)
        report, builds = prepare_builds(source, spec, opts, signature, build.path, log=build.log)
        files = atc_mod.write_side_files(opts, build.path)
        if opts.islands == "auto":
            build.extra["precision"] = json.loads((build.path / AUTO_ISLANDS_FILE).read_text())
            build.files["islands"] = AUTO_ISLANDS_FILE
        build.extra.update({"soc_version": opts.soc_version, "cann": opts.cann,
                            "precision_flag": list(opts.precision_flag), "input_format": opts.input_format,
                            "gears": list(opts.gears), "check": report.to_json(), "builds": []})
        for note in opts.notes:
            build.log(f"note: {note}")
        for prepared in builds:
            stem = build.path / f"model_{prepared.name}"
            args = prepared.args(str(prepared.onnx_path), str(stem), opts, files)
            build.log(f"[{prepared.name}] {tool.path} " + " ".join(args))
            result = atc_mod.run_atc(tool, args, stem, timeout=opts.timeout)
            log_path = build.path / f"atc_{prepared.name}.log"
            log_path.write_text(result.output)
            if not result.success:
                kept = keep_failed_log(build, f"--- {log_path.name} ---\n{result.output}")
                raise atc_mod.failure_message(result, kept)
            if not result.om_files:
                raise CompileError("atc reported success but wrote no .om file",
                                           where=str(stem) + "*.om",
                                           fix="check the output path and disk space; see the build log")
            om = result.om_files[0]
            build.files[f"om_{prepared.name}"] = om.name
            build.files[f"onnx_{prepared.name}"] = prepared.onnx_path.name
            build.files[f"log_{prepared.name}"] = log_path.name
            recorded = [a.replace(str(build.path), "<artifact>") for a in args]
            build.extra["builds"].append({**prepared.to_json(), "om": om.name, "atc_args": recorded})
            build.log(f"[{prepared.name}] wrote {om.name}")
        build.files["main"] = build.files[f"om_{builds[0].name}"]

    # ---- run and profile -------------------------------------------------------------------
    def _open(self, artifact: Artifact) -> AscendSession:
        if artifact.manifest.is_bundle:
            raise InputError(f"{artifact.path} is an emitted bundle, not a built model",
                             fix="run its compile.sh/run.sh/profile.sh on an Ascend machine, then "
                                 f"`vlc ascend import {artifact.path}`")
        runner, why = find_ais_bench()
        if runner is None:
            raise TargetUnavailable(f"cannot run {self.name} models here: {why}",
                                    fix="run on a machine with an Ascend NPU and ais_bench")
        device_id = self.artifact_spec(artifact).options["device_id"]
        return AscendSession(artifact, AisBench(runner, device_id))


def _names_only(text: str) -> str:
    """`text` with every absolute path cut to its file name ("/opt/x/atc (PATH)" -> "atc (PATH)")."""
    return re.sub(r"/(?:[^\s()/]+/)*([^\s()/]+)", r"\1", text)


class AscendSession:
    def __init__(self, artifact: Artifact, ais: AisBench):
        self.artifact = artifact
        self.ais = ais
        self.signature = artifact.signature
        extra = artifact.manifest.extra
        self.gears = tuple(extra.get("gears") or ())
        self.builds = extra.get("builds", [])
        self.soc = extra.get("soc_version", artifact.target)

    def _om_for(self, batch: int) -> tuple[Path, int | None]:
        for b in self.builds:
            if b["batch"] == batch:
                return self.artifact.path / b["om"], None
            if b["batch"] is None and batch in self.gears:
                return self.artifact.path / b["om"], batch
        built = sorted(self.gears) or [b["batch"] for b in self.builds]
        raise InputError(f"batch {batch} was not built; this artifact has batch sizes {built}",
                         where=str(self.artifact.path),
                         fix=f"use one of {built}, or recompile with -O batches=[...] or -O gears=[...]")

    def _arrays(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(feeds[t.name], dtype=np.dtype(t.dtype)) for t in self.signature.inputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = self.signature.validate_inputs(feeds)
        om, dym = self._om_for(batch)
        outputs = self.ais.infer(om, self._arrays(feeds), dym, len(self.signature.outputs))
        return map_outputs(outputs, self.signature, batch, self.gears)

    def profile(self, feeds: Mapping[str, np.ndarray], settings: ProfileSettings, batch: int) -> ProfileResult:
        om, dym = self._om_for(batch)
        result = self.ais.profile(om, self._arrays(feeds), dym, batch, iterations=settings.iterations,
                                  warmup=settings.warmup, device_label=f"{self.soc} npu:{self.ais.device}",
                                  log_dir=None)
        # ais_bench times on the device; no host clock reaches inside its loop
        result.extra["timing"] = "ais_bench NPU compute time (device timer; model execution, no copies)"
        return result

    def close(self) -> None:
        self.ais.close()


def map_outputs(outputs: list[np.ndarray], signature: Signature, batch: int,
                gears: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """ais_bench outputs by index -> the signature's names and dtypes (fp16 builds may hand back
    float16; a gear build may hand back the largest gear's rows)."""
    if len(outputs) != len(signature.outputs):
        raise InputError(f"ais_bench returned {len(outputs)} outputs, the model has "
                         f"{len(signature.outputs)}", fix="check the .om against its manifest")
    mapped = {}
    for sig, array in zip(signature.outputs, outputs):
        array = np.asarray(array)
        want = sig.concrete(batch)
        if array.shape != want and array.size == int(np.prod(want)):
            array = array.reshape(want)
        elif gears and array.ndim and array.shape[0] == max(gears) and array.shape[1:] == want[1:]:
            array = array[:batch]
        if array.dtype != np.dtype(sig.dtype) and array.dtype.kind == np.dtype(sig.dtype).kind:
            array = array.astype(sig.dtype)
        mapped[sig.name] = array
    return mapped


class Ascend310(AscendTarget):
    name = "ascend310"


class Ascend310P(AscendTarget):
    name = "ascend310p"

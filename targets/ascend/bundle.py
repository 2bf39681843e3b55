"""Self-contained Ascend bundles for machines vlc cannot drive, and importing their results.

`emit_bundle` writes, per build (one static batch or one gear set): the patched ONNX graph,
compile.sh (atc), run.sh and profile.sh (ais_bench), the inputs as .npy files with the
model's dtypes, reference outputs from ONNX Runtime on the patched and the original graph,
a README and bundle.json. After the scripts ran on an Ascend machine, `import_results`
(or `vlc ascend import DIR`) reads the outputs and timings back for compare and report.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import vlc
from vlc.accuracy import AccuracyReport, Tolerance, compare_outputs, default_tolerance
from vlc.artifact import MANIFEST, MANIFEST_SCHEMA, SOURCE_GRAPH, graph_hash
from vlc.errors import InputError
from vlc.onnx_files import copy_onnx
from vlc.outdir import claim_output_dir, clean_orphans, make_dir, make_temp_dir, output_lock, replace_dir, write_marker
from vlc.spec import TargetSpec
from vlc.target import CompileSource, Target
from vlc.targets.ascend.ais_bench import ENV_COMMAND, AisSummary, parse_console, parse_summary_json
from vlc.targets.ascend.atc import SUCCESS_LINE, AtcFiles, write_side_files
from vlc.targets.ascend.builds import ort_outputs, prepare_builds
from vlc.timing import ProfileResult

BUNDLE = "bundle.json"
BUNDLE_KEYS = ("target", "soc_version", "precision", "signature.outputs", "builds", "source.ref",
               "source.hash", "profile.loop", "profile.warmup")  # what import reads
HOST_FILE = "host.txt"  # under results/profile: `uname -n` of the machine that ran profile.sh
OS_FILE = "os.txt"  # its `uname -sr`
BUNDLE_SCHEMA = 1
PROFILE_LOOP = 100
PROFILE_WARMUP = 10


def _q(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _save_outputs(outputs: dict[str, np.ndarray], directory: Path, names: list[str]) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for k, name in enumerate(names):
        path = directory / f"out{k}.npy"
        np.save(path, outputs[name])
        files.append(path.name)
    return files


def emit_bundle(source: CompileSource, spec: TargetSpec, out_dir: str | Path, *,
                target: Target | None = None) -> Path:
    """Write the bundle for `spec` into out_dir (replaced if it is an earlier bundle)."""
    from vlc.targets.ascend.options import parse_options

    if target is None:
        from vlc.plugin_manager import get_target

        target = get_target(spec.target)
    signature = source.signature
    spec = target.validate_spec(spec, signature)
    opts = parse_options(target.name, spec, signature)
    out = Path(out_dir)
    # an earlier bundle is replaced (atomically); anything else, or one holding the target
    # machine's results, is refused
    real = claim_output_dir(out, "bundle", option="directory")
    make_dir(real.parent)
    with output_lock(real):
        clean_orphans(real.parent, real.name, locked=True, mkdtemp_names=False)
        tmp = make_temp_dir(real.parent, f".{real.name}.emitting-")
        try:
            _write(source, spec, opts, signature, tmp)
            write_marker(tmp, "bundle")
            replace_dir(tmp, claim_output_dir(out, "bundle", option="directory"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write(source: CompileSource, spec: TargetSpec, opts: Any, signature: Any, root: Path) -> None:
    notes: list[str] = []
    report, builds = prepare_builds(source, spec, opts, signature, root, log=notes.append)
    side = write_side_files(opts, root)
    files = AtcFiles(Path(side.keep_dtype).name if side.keep_dtype else None,
                     Path(side.mixlist).name if side.mixlist else None)
    out_names = [t.name for t in signature.outputs]
    compile_lines, run_lines, profile_lines = [], [], []
    entries = []
    for b in builds:
        args = b.args(b.onnx_path.name, f"om/model_{b.name}", opts, files)
        compile_lines += [
            f"echo '== atc {b.name}'",
            f"atc {_q(args)} 2>&1 | tee logs/atc_{b.name}.log",
            f"grep -qF {shlex.quote(SUCCESS_LINE)} logs/atc_{b.name}.log",
        ]
        run_batches = [b.batch] if b.batch is not None else list(opts.gears)
        batches = []
        for batch in run_batches:
            feeds = b.feeds if batch == b.parity_batch else source.generate_inputs(batch, seed=0)
            original = b.original_outputs if batch == b.parity_batch else ort_outputs(source.onnx_path, feeds)
            patched = b.patched_outputs if batch == b.parity_batch else ort_outputs(b.onnx_path, feeds)
            in_dir = root / "inputs" / f"bs{batch}"
            in_dir.mkdir(parents=True, exist_ok=True)
            inputs = []
            for i, t in enumerate(signature.inputs):
                np.save(in_dir / f"in{i}.npy", np.ascontiguousarray(feeds[t.name], dtype=np.dtype(t.dtype)))
                inputs.append(f"inputs/bs{batch}/in{i}.npy")
            _save_outputs(original, root / "reference" / f"bs{batch}" / "original", out_names)
            _save_outputs(patched, root / "reference" / f"bs{batch}" / "patched", out_names)
            dym = [] if b.batch is not None else ["--dymBatch", str(batch)]
            common = ["--model", "$OM", "--input", ",".join(inputs), "--outfmt", "NPY",
                      "--device", "$DEVICE"] + dym
            run_lines += _ais_lines(b.name, batch, common + ["--output", "results/run",
                                                            "--output_dirname", f"bs{batch}",
                                                            "--loop", "1", "--warmup_count", "0"], "run")
            profile_lines += _ais_lines(b.name, batch, common + [
                "--output", "results/profile", "--output_dirname", f"bs{batch}", "--loop",
                str(PROFILE_LOOP), "--warmup_count", str(PROFILE_WARMUP), "--display_all_summary",
                "True"], "profile")
            batches.append(batch)
        entries.append({**b.to_json(), "atc_args": args, "om_stem": f"om/model_{b.name}",
                        "batches": batches})
    _script(root / "compile.sh", "Build the .om model(s) with ATC (needs the CANN toolkit).", [
        'if ! command -v atc >/dev/null 2>&1; then',
        '  set +u; source "${ASCEND_SET_ENV:-/usr/local/Ascend/ascend-toolkit/set_env.sh}"; set -u',
        'fi',
        "mkdir -p om logs", *compile_lines, "echo 'all .om models built under om/'"])
    ais_setup = [f'read -r -a AIS <<< "${{{ENV_COMMAND}:-python3 -m ais_bench}}"',
                 'DEVICE="${DEVICE:-0}"']
    _script(root / "run.sh", "Run each input set once with ais_bench (needs an Ascend NPU).",
            ais_setup + ["mkdir -p results/run", *run_lines])
    # the machine's name and OS go beside the timings, so imported records say where they ran
    _script(root / "profile.sh", f"Time each batch with ais_bench ({PROFILE_LOOP} loops after "
            f"{PROFILE_WARMUP} warm-up runs).", ais_setup + [
                "mkdir -p results/profile", f"uname -n > results/profile/{HOST_FILE}",
                f"uname -sr > results/profile/{OS_FILE}", *profile_lines])
    # The fp32 source graph travels with the bundle (never a path into this machine's cache), so
    # `vlc compare --reference onnx` and `vlc ascend import` work wherever the bundle is copied.
    copy_onnx(source.onnx_path, root / SOURCE_GRAPH)
    meta = {
        "schema": BUNDLE_SCHEMA, "vlc_version": vlc.__version__, "target": opts.target, "model": source.name,
        "soc_version": opts.soc_version, "cann": opts.cann, "precision": spec.precision.value,
        "precision_flag": list(opts.precision_flag), "spec": spec.to_json(),
        "signature": signature.to_json(), "source": {"ref": source.ref, "onnx": SOURCE_GRAPH,
                                                     "hash": graph_hash(source.onnx_path)},
        "builds": entries, "gears": list(opts.gears), "check": report.to_json(), "notes": notes,
        "profile": {"loop": PROFILE_LOOP, "warmup": PROFILE_WARMUP},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hardware_note": "generated by vlc without an Ascend toolkit or device; vlc has never "
                         "run these scripts on real hardware",
    }
    (root / BUNDLE).write_text(json.dumps(meta, indent=2) + "\n")
    # A manifest makes the bundle loadable as an artifact (vlc run explains what to do with it).
    manifest = {"schema": MANIFEST_SCHEMA, "target": opts.target, "preset": spec.preset,
                "precision": spec.precision.value, "spec": spec.to_json(), "signature": signature.to_json(),
                "batch_range": [min(min(e["batches"]) for e in entries), max(max(e["batches"]) for e in entries)],
                "source": {"ref": source.ref, "onnx": SOURCE_GRAPH}, "files": {"main": BUNDLE},
                "tool_versions": {}, "extra": {"bundle": True, "soc_version": opts.soc_version},
                "vlc_version": vlc.__version__, "created": meta["created"]}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (root / "README.md").write_text(_readme(meta, source.ref))


def _ais_lines(build: str, batch: int, args: list[str], what: str) -> list[str]:
    quoted = " ".join('"$OM"' if a == "$OM" else '"$DEVICE"' if a == "$DEVICE" else shlex.quote(a)
                      for a in args)
    return [f"echo '== {what} batch {batch}'",
            f"OM=$(ls om/model_{build}*.om | head -n 1)",
            f'"${{AIS[@]}}" {quoted} 2>&1 | tee results/{what}/bs{batch}.log']


def _script(path: Path, purpose: str, lines: list[str]) -> None:
    text = "\n".join(["#!/usr/bin/env bash", f"# {purpose}", "# Generated by vlc; run from anywhere.",
                      "set -euo pipefail", 'cd "$(dirname "$0")"', *lines]) + "\n"
    path.write_text(text)
    path.chmod(0o755)


def _readme(meta: dict[str, Any], ref: str) -> str:
    builds = "\n".join(f"- `{b['name']}`: batch sizes {b['batches']}, patches "
                       f"{', '.join(p['name'] for p in b['patches']) or 'none'}" for b in meta["builds"])
    return f"""# vlc Ascend bundle: {ref} for {meta['soc_version']} (CANN {meta['cann']})

Written by vlc {meta['vlc_version']} on a machine without the Ascend toolkit. **vlc has never run
these scripts on real Ascend hardware**: they follow the documented ATC and ais_bench contracts.

Builds:
{builds}

On a machine with the CANN toolkit and an Ascend NPU (`npu-smi info` should show the chip):

1. `./compile.sh` — runs `atc` per build (set `ASCEND_SET_ENV` if set_env.sh is elsewhere);
   the full ATC logs land in `logs/`.
2. `./run.sh` — runs every input set once with ais_bench (`python3 -m ais_bench`, or the
   command in `${ENV_COMMAND}`; `DEVICE=N` picks the NPU); outputs land in `results/run/`.
3. `./profile.sh` — times every batch ({meta['profile']['loop']} loops after
   {meta['profile']['warmup']} warm-up runs); summaries land in `results/profile/`.
4. Copy the whole directory back and import it:
   `vlc ascend import THIS_DIR` (accuracy against `reference/*/original`, the ONNX Runtime outputs
   of the graph before patching, and NPU compute times), or `--json` for a record per batch;
   `--results DIR` writes bench records there, which `vlc report DIR` merges with other machines'.

Inputs are in `inputs/bs<N>/in<i>.npy` in the model's input order and dtypes; reference outputs
in `reference/bs<N>/{{original,patched}}/out<k>.npy` in output order; `bundle.json` says which is
which.
"""


# ---- import --------------------------------------------------------------------------------
@dataclass
class BundleResults:
    path: Path
    meta: dict[str, Any]
    outputs: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    profiles: dict[int, ProfileResult] = field(default_factory=dict)
    reference: dict[int, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def compare(self, tolerance: Tolerance | None = None, against: str = "original"
                ) -> dict[int, AccuracyReport]:
        tol = tolerance or default_tolerance(self.meta["precision"])
        return {batch: compare_outputs(out, self.reference[batch][against], tol)
                for batch, out in sorted(self.outputs.items())}


def import_results(bundle_dir: str | Path) -> BundleResults:
    """Read outputs (results/run) and timings (results/profile) of a bundle's scripts."""
    root = Path(bundle_dir)
    meta_path = root / BUNDLE
    if not meta_path.is_file():
        raise InputError(f"{root} is not a vlc Ascend bundle (no {BUNDLE})",
                         fix="pass the directory written by -O emit=DIR / vlc ascend emit")
    from vlc.inputs import read_json_object, require_keys
    meta = read_json_object(meta_path, what="bundle description", fix="emit the bundle again with vlc")
    if meta.get("schema") != BUNDLE_SCHEMA:
        raise InputError(f"{meta_path} has bundle schema {meta.get('schema')}, this vlc reads {BUNDLE_SCHEMA}",
                         fix="emit the bundle again with this vlc")
    require_keys(meta, BUNDLE_KEYS, what=f"bundle description {meta_path}", fix="emit the bundle again with vlc")
    results = BundleResults(root, meta)
    names = [t["name"] for t in meta["signature"]["outputs"]]
    dtypes = [t["dtype"] for t in meta["signature"]["outputs"]]
    for build in meta["builds"]:
        for batch in build["batches"]:
            results.reference[batch] = {
                which: {n: np.load(root / "reference" / f"bs{batch}" / which / f"out{k}.npy")
                        for k, n in enumerate(names)} for which in ("original", "patched")}
            run_dir = root / "results" / "run" / f"bs{batch}"
            if not run_dir.is_dir():
                results.missing.append(f"results/run/bs{batch} (run.sh not run?)")
            else:
                outs = {}
                for k, (n, dtype) in enumerate(zip(names, dtypes)):
                    path = run_dir / f"in0_{k}.npy"
                    if not path.is_file():
                        results.missing.append(str(path.relative_to(root)))
                        break
                    array = np.load(path)
                    ref = results.reference[batch]["original"][n]
                    if array.shape != ref.shape and array.size == ref.size:
                        array = array.reshape(ref.shape)
                    if array.dtype != np.dtype(dtype) and array.dtype.kind == np.dtype(dtype).kind:
                        array = array.astype(dtype)
                    outs[n] = array
                else:
                    results.outputs[batch] = outs
            summary = _profile_summary(root, batch)
            if summary is None:
                results.missing.append(f"results/profile/bs{batch}_summary.json (profile.sh not run?)")
            else:
                profile = summary.to_profile(batch, f"{meta['soc_version']} (imported bundle)")
                profile.extra["bundle"] = str(root)
                results.profiles[batch] = profile
    return results


def _profile_summary(root: Path, batch: int) -> AisSummary | None:
    base = root / "results" / "profile"
    path = base / f"bs{batch}_summary.json"
    log = base / f"bs{batch}.log"
    console = parse_console(log.read_text(errors="replace")) if log.is_file() else None
    if path.is_file():
        summary = parse_summary_json(json.loads(path.read_text()))
        if console is not None:
            for key, block in console.blocks.items():
                summary.blocks.setdefault(key, block)
        return summary
    if console is not None and console.blocks:
        return console
    return None

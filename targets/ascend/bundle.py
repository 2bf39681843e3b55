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
from vlc.artifact import MANIFEST, SOURCE_GRAPH, Manifest, SourceInfo, graph_hash
from vlc.errors import InputError
from vlc.inputs import read_json_object, require_keys
from vlc.onnx_files import copy_onnx
from vlc.outdir import claim_output_dir, clean_orphans, make_dir, make_temp_dir, output_lock, replace_dir, write_marker
from vlc.plugin_manager import get_target
from vlc.spec import TargetSpec
from vlc.target import CompileSource, Target
from vlc.targets.ascend.ais_bench import ENV_COMMAND, AisSummary, parse_console, parse_summary_json
from vlc.targets.ascend.atc import SUCCESS_LINE, AtcFiles, write_side_files
from vlc.targets.ascend.builds import ort_outputs, prepare_builds
from vlc.targets.ascend.dumps import bundle_dumps, compare_dump
from vlc.targets.ascend.options import parse_options
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
    if target is None:
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
    compile_lines, run_lines, profile_lines, dump_lines = [], [], [], []
    entries = []
    for b in builds:
        args = b.args(b.onnx_path.name, f"om/model_{b.name}", opts, files)
        compile_lines += [
            f"echo '== atc {b.name}'",
            f"atc {_q(args)} 2>&1 | tee logs/atc_{b.name}.log",
            f"grep -qF {shlex.quote(SUCCESS_LINE)} logs/atc_{b.name}.log",
            *_model_json_lines(b.name),
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
        dump_batch = batches[0]  # one dump per build: its smallest batch (dumps are large)
        dump_lines += dump_commands(b.name, dump_batch, [f"inputs/bs{dump_batch}/in{i}.npy"
                                                         for i in range(len(signature.inputs))],
                                    None if b.batch is not None else dump_batch)
        entries.append({**b.to_json(), "atc_args": args, "om_stem": f"om/model_{b.name}",
                        "model_json": model_json_path(b.name), "batches": batches, "dump_batch": dump_batch})
    _script(root / "compile.sh", "Build the .om model(s) with ATC (needs the CANN toolkit).", [
        'if ! command -v atc >/dev/null 2>&1; then',
        '  set +u; source "${ASCEND_SET_ENV:-/usr/local/Ascend/ascend-toolkit/set_env.sh}"; set -u',
        'fi',
        "mkdir -p om logs", *compile_lines, "echo 'all .om models built under om/'"])
    ais_setup = [f'read -r -a AIS <<< "${{{ENV_COMMAND}:-python3 -m ais_bench}}"',
                 'DEVICE="${DEVICE:-0}"']
    _script(root / "run.sh", "Run each input set once with ais_bench (needs an Ascend NPU).",
            ais_setup + ["mkdir -p results/run", *run_lines])
    _script(root / "dump.sh", "Dump every op's output once per build with ais_bench (needs an Ascend NPU) and "
            "convert the dumps to .npy with the toolkit's msaccucmp.py.", ais_setup + [
                f'MSACCUCMP="${{MSACCUCMP:-${{ASCEND_TOOLKIT_HOME:-{TOOLKIT_HOME}}}/{MSACCUCMP_IN_TOOLKIT}}}"',
                "mkdir -p results/dump", *dump_lines])
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
    manifest = Manifest(target=opts.target, preset=spec.preset, precision=spec.precision.value, spec=spec,
                        signature=signature,
                        batch_range=[min(min(e["batches"]) for e in entries), max(max(e["batches"]) for e in entries)],
                        source=SourceInfo(ref=source.ref, onnx=SOURCE_GRAPH, hash=meta["source"]["hash"],
                                          input_specs=tuple(source.input_specs)),
                        files={"main": BUNDLE}, extra={"bundle": True, "soc_version": opts.soc_version},
                        vlc_version=vlc.__version__, created=meta["created"])
    (root / MANIFEST).write_text(manifest.dumps())
    (root / "README.md").write_text(_readme(meta, source.ref))


TOOLKIT_HOME = "/usr/local/Ascend/ascend-toolkit/latest"
MSACCUCMP_IN_TOOLKIT = "tools/operator_cmp/compare/msaccucmp.py"
DUMP_DIR = "results/dump"


def model_json_path(build: str) -> str:
    """Where compile.sh has ATC describe the .om it built (op names, the ONNX nodes each covers)."""
    return f"om/model_{build}.json"


def _model_json_lines(build: str) -> list[str]:
    """`atc --mode=1` turns the .om into JSON: each op's _datadump_original_op_names and, per
    output, _datadump_origin_name/_datadump_origin_output_index, which map dumped ops to ONNX
    tensors. Optional: without it `vlc ascend import` maps dumps by op name alone."""
    return [f"OM=$(ls om/model_{build}*.om | head -n 1)",
            f'atc --mode=1 --om="$OM" --json={model_json_path(build)} >> logs/atc_{build}.log 2>&1 '
            f"|| echo 'note: atc --mode=1 wrote no {model_json_path(build)}; dumped ops will be mapped by name'"]


def dump_commands(build: str, batch: int, inputs: list[str], dym_batch: int | None) -> list[str]:
    """One dumping run of a build at `batch`: an acl.json naming the model and the dump folder
    (dump_mode output), ais_bench with --acl_json_path for one execution and no warm-up (every
    execution is dumped), then msaccucmp.py convert of the dump folder into .npy files named
    <op_type>.<op_name>.<task_id>.<stream_id>.<timestamp>.output.<k>.<shape>.npy."""
    here = f"{DUMP_DIR}/bs{batch}"
    dym = ["--dymBatch", str(dym_batch)] if dym_batch is not None else []
    ais = ["--model", "$OM", "--input", ",".join(inputs), "--device", "$DEVICE", "--loop", "1",
           "--warmup_count", "0", "--acl_json_path", f"{here}/acl.json", *dym]
    quoted = " ".join('"$OM"' if a == "$OM" else '"$DEVICE"' if a == "$DEVICE" else shlex.quote(a) for a in ais)
    acl = ('import json, os, sys; json.dump({"dump": {"dump_path": os.path.abspath(sys.argv[2]), '
           '"dump_mode": "output", "dump_list": [{"model_name": sys.argv[3]}]}}, open(sys.argv[1], "w"), indent=2)')
    return [
        f"echo '== dump batch {batch}'",
        f"OM=$(ls om/model_{build}*.om | head -n 1)",
        # only what this script wrote before is replaced, so two runs' dumps never mix
        f"rm -rf {here}/dump {here}/npy {here}/acl.json",
        f"mkdir -p {here}/dump",
        f'python3 -c {shlex.quote(acl)} {here}/acl.json {here}/dump "$(basename "$OM" .om)"',
        f'"${{AIS[@]}}" {quoted} 2>&1 | tee {here}.log',
        # ACL writes dump_path/<time>/<device>/<model>/<model id>/<execution>/<one file per op>
        f"RAW=$(find {here}/dump -type f -printf '%h\\n' | sort -u | tail -n 1)",
        f'if [ -z "$RAW" ]; then echo "ais_bench wrote no dump under {here}/dump" >&2; exit 1; fi',
        'if [ -f "$MSACCUCMP" ]; then',
        f'  python3 "$MSACCUCMP" convert -d "$RAW" -out {here}/npy 2>&1 | tee -a {here}.log',
        "else",
        f'  echo "note: $MSACCUCMP not found (set MSACCUCMP or ASCEND_TOOLKIT_HOME); convert later with: '
        f'python3 msaccucmp.py convert -d $RAW -out {here}/npy"',
        "fi",
    ]


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
    dumps = ", ".join(str(b["dump_batch"]) for b in meta["builds"])
    builds = "\n".join(f"- `{b['name']}`: batch sizes {b['batches']}, patches "
                       f"{', '.join(p['name'] for p in b['patches']) or 'none'}" for b in meta["builds"])
    msaccucmp = MSACCUCMP_IN_TOOLKIT
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
4. Optional, to find where accuracy is lost: `./dump.sh` — dumps every op's output of one
   execution per build (batch sizes {dumps}) and converts the dumps to .npy (see "Dumps" below).
5. Copy the whole directory back and import it:
   `vlc ascend import THIS_DIR` (accuracy against `reference/*/original`, the ONNX Runtime outputs
   of the graph before patching, and NPU compute times), or `--json` for a record per batch;
   `--results DIR` writes bench records there, which `vlc report DIR` merges with other machines'.
   After dump.sh, the import also compares every dumped op with the same tensor of the graph ATC
   compiled, run in fp32 in ONNX Runtime on the same inputs, and names the first divergent node
   (`--html PAGE` for the plot along the graph; `--json` holds the per-node numbers).

## Dumps

compile.sh also runs `atc --mode=1 --om=om/model_<build>*.om --json=om/model_<build>.json`, the
op list of each .om with the ONNX nodes each op computes (`_datadump_original_op_names`, and per
output `_datadump_origin_name` / `_datadump_origin_output_index`); without it the import maps
dumped ops by name (ATC names ops after ONNX nodes, a fused op by concatenating their names).
For each build, dump.sh runs, from this directory:

```
# acl.json: {{"dump": {{"dump_path": "<abs>/results/dump/bs<N>/dump", "dump_mode": "output",
#             "dump_list": [{{"model_name": "<om stem>"}}]}}}}
python3 -c '<writes results/dump/bs<N>/acl.json>'
python3 -m ais_bench --model om/model_<build>*.om --input inputs/bs<N>/in0.npy,... --device $DEVICE \
    --loop 1 --warmup_count 0 --acl_json_path results/dump/bs<N>/acl.json [--dymBatch N]
python3 $MSACCUCMP convert -d <the folder holding the dump files> -out results/dump/bs<N>/npy
```

ACL writes `dump/<time>/<device>/<model>/<model id>/<execution>/<op_type>.<op_name>.<task_id>.<stream_id>.<timestamp>`;
msaccucmp.py (`$MSACCUCMP`, default `$ASCEND_TOOLKIT_HOME/{msaccucmp}`) turns each into
`<that name>.output.<k>.<shape>.npy`. Tensors a device holds in NC1HWC0 (5HD) or FRACTAL_NZ
are converted back to the ONNX layout on import; other layouts are reported as unmatched.

**Never checked on hardware:** that this ais_bench/ACL writes the dump folder as above for an
`--acl_json_path` run, that msaccucmp.py's `convert` without `-f` names its files as above and
keeps the dump's own layout, which ops a real .om dumps in which layout, and that a fused op's
name and `_datadump_*` attributes are as the CANN documentation shows. vlc's tests run dump.sh
against stand-ins of ais_bench and msaccucmp.py that follow those documents.

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
    dumps: list[Any] = field(default_factory=list)  # vlc.targets.ascend.dumps.BuildDump, after dump.sh

    def layerwise(self, tolerance: Tolerance | None = None, window: int = 64) -> dict[int, Any]:
        """Per dumped batch, every dumped op against the graph ATC compiled in fp32 ONNX Runtime
        (a vlc.debug.LayerwiseReport)."""
        return {d.batch: compare_dump(d, self.meta, self.path, window=window, tolerance=tolerance)
                for d in self.dumps}

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
                         fix="pass the directory written by vlc compile --emit DIR / vlc ascend emit")
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

    results.dumps, missing = bundle_dumps(root, meta)
    results.missing += missing
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

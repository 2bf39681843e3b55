"""Running a campaign: every cell on this machine, or each cell as a Ray task on a matching node.

Locally, each run's models go through `vlc bench` itself (run_bench), so the records are the
ones `vlc bench` writes. On a cluster, the front end runs once per model on the driver and its
graph travels to the nodes as bytes (ray.put); each cell is one task scheduled with its run's
`requires` as Ray resources; records come back as tasks finish (a ray.wait loop) and are
written atomically on the driver (vlc.records), keyed and resumed as `vlc bench` keys and
resumes them: the cell's earlier records go with it and the node skips what is still valid.
A cell whose node dies runs again on another matching node (Ray's retries); when none is left
or the retries run out, its records say `failed` and why.

A cell with `build_requires` (TensorRT-RTX by default: `vlc/trt-build-sm86` for an A10 engine)
is compiled on a node offering them; the driver keeps the artifact in the results folder
(`<machine>/<model>/<target>-<precision>.artifact`) and sends it to a node offering the run's
`requires` (the hardware), where it is timed. With no such node the records say `built`: what
was built (engine size, build time, layers, precision check, where it is kept) and why it was
not timed; never `failed`. On one machine without the device, `run_local` does the same.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import vlc
from vlc.bench.runner import Bench, BenchConfig, run_bench, settings_changes, validate_config
from vlc.bench.variants import TargetVariant, resolve
from vlc.campaign import builds
from vlc.campaign.cells import Cell, ShippedModel, build_cell, build_here, device_missing, measure_built, measure_cell
from vlc.campaign.resources import build_resources, describe
from vlc.campaign.spec import Campaign, RunSpec, model_ref
from vlc.errors import InputError, first_line
from vlc.frontend.pipeline import prepare
from vlc.measure import make_record, profile_settings
from vlc.records import BenchRecord, RecordError, read_record, record_path, write_record

Progress = Callable[[str, int, int], None]  # (what happened, records done, records in all)
INSTALL_HINT = "install Ray with: pip install 'vlc[cluster]'"
UNPLACED = "unplaced"  # the machine of records written for cells no node took
POLL_S = 1.0  # how often the driver checks for cells no live node can take
# how long a cell may wait for a node offering its requires after the last one left (a machine
# that restarts, or a replacement joining, takes it up) before it is recorded as failed
STRAND_GRACE_S = 10.0


@dataclass
class CampaignSummary:
    results: Path
    written: list[BenchRecord] = field(default_factory=list)
    skipped: list[BenchRecord] = field(default_factory=list)

    @property
    def failed(self) -> list[BenchRecord]:
        return [r for r in self.written if r.status == "failed"]


def _bench_config(campaign: Campaign, run: RunSpec, model: str) -> BenchConfig:
    return BenchConfig(model=model_ref(campaign, model), targets=run.targets, precisions=run.precisions,
                       batches=run.batches, results=campaign.results, artifacts=campaign.artifacts,
                       settings=run.settings, device=run.device, seed=run.seed)


# ---- on this machine ------------------------------------------------------------------------------

def _build_requires(run: RunSpec, variant: TargetVariant) -> dict[str, float]:
    return dict(run.build_requires) if run.build_requires is not None else build_resources(variant.target)


def kept_artifact_path(results: Path, record: BenchRecord) -> Path:
    """Where the driver keeps a cell's artifact: beside its records, `<target>-<precision>.artifact`."""
    path = record_path(results, record)
    return path.with_name(path.name.rsplit("-b", 1)[0] + builds.KEPT_SUFFIX)


def keep_in_results(results: Path, records: list[BenchRecord], packed: bytes) -> str:
    """A packed artifact kept beside the cell's records; its place relative to the results folder."""
    kept = kept_artifact_path(results, records[0])
    builds.keep(packed, kept)
    return str(kept.relative_to(results))


def not_timed(records: list[BenchRecord], why: str) -> list[BenchRecord]:
    """'built' records with the reason they stay untimed."""
    return [replace(r, reason=f"not timed: {why}") for r in records]


def _built_before(bench: Bench, variant: TargetVariant, precision: Any) -> list[BenchRecord] | None:
    """This machine's 'built' records of the cell when every batch has one with the same settings
    and its artifact is still there (a re-run with the device still missing keeps them)."""
    found = []
    for batch in bench.batches:
        probe = bench._base(variant, precision, batch, bench._device(variant.target, []), "ok")
        path = record_path(bench.config.results, probe)
        try:
            old = read_record(path) if path.is_file() else None
        except RecordError:
            old = None
        if old is None or old.status != "built" or settings_changes(old, probe) \
                or not old.build.get("artifact") or not (bench.config.results / old.build["artifact"]).is_dir():
            return None
        found.append(old)
    return found


def _run_local_model(campaign: Campaign, run: RunSpec, model: str, summary: CampaignSummary,
                     sources: dict[str, Any], progress: Progress) -> None:
    def prepared(ref: str, **kwargs: Any) -> Any:  # the front end once per model, for both paths
        if ref not in sources:
            sources[ref] = prepare(ref, **kwargs)
        return sources[ref]

    config = _bench_config(campaign, run, model)
    variants = validate_config(config)
    progress(f"exporting {config.model}", 0, 0)
    bench = Bench(config, prepared(config.model), variants, progress)
    # built here, timed nowhere here: targets that build for a device this machine lacks
    ahead = {v.entry: why for v in variants if _build_requires(run, v) and (why := device_missing(bench, v))}
    rest = [v.entry for v in variants if v.entry not in ahead]
    done = 0
    if rest:
        result = run_bench(replace(config, targets=rest), progress, prepare=prepared)
        summary.written += result.written
        summary.skipped += result.skipped
        done = len(result.written) + len(result.skipped)
    for variant in (v for v in variants if v.entry in ahead):
        for precision in bench.precisions:
            if (before := _built_before(bench, variant, precision)) is not None:
                summary.skipped += before
                done += len(before)
                progress(f"{variant.label} {precision.value}: built before, skipped ({ahead[variant.entry]})",
                         done, bench.total)
                continue
            built = build_here(bench, variant, precision)
            records = built.records
            if built.artifact is not None:  # kept with the results, as a cluster's driver keeps it
                kept = keep_in_results(campaign.results, records, builds.pack(built.artifact.path))
                records = not_timed([replace(r, build={**r.build, "artifact": kept}) for r in records],
                                    ahead[variant.entry])
            for record in records:
                write_record(campaign.results, record)
                summary.written.append(record)
                done += 1
                progress(f"{record.target} {record.precision} batch {record.batch}: {record.status}: {record.reason}",
                         done, bench.total)


def run_local(campaign: Campaign, progress: Progress = lambda text, done, total: None) -> CampaignSummary:
    """Every run's models through `vlc bench` on this machine, into the campaign's results; a
    target that builds here for a device this machine lacks (TensorRT-RTX without a GPU) is
    built and recorded 'built', not timed."""
    summary = CampaignSummary(campaign.results)
    jobs = [(run, model) for run in campaign.runs for model in run.models]
    sources: dict[str, Any] = {}
    for i, (run, model) in enumerate(jobs, start=1):
        def step(text: str, done: int, total: int, _i: int = i, _model: str = model) -> None:
            progress(f"{_model} ({_i}/{len(jobs)}): {text}", done, total)

        _run_local_model(campaign, run, model, summary, sources, step)
    return summary


# ---- on a Ray cluster -----------------------------------------------------------------------------

def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--cluster needs Ray, which is not installed", fix=INSTALL_HINT) from None
    return ray


def _node_failures(ray: Any) -> list[type]:
    # raised inside a task when what it needs lived on a node that died: worth another node
    e = ray.exceptions
    return [e.NodeDiedError, e.LocalRayletDiedError, e.WorkerCrashedError, e.ObjectLostError]


def _remote_cell(shipped: ShippedModel, cell: Cell, previous: list[dict[str, Any]]) -> dict[str, Any]:
    import ray

    return measure_cell(shipped, cell, previous, ray.get_runtime_context().get_node_id())


def _remote_build(shipped: ShippedModel, cell: Cell) -> dict[str, Any]:
    import ray

    return build_cell(shipped, cell, ray.get_runtime_context().get_node_id())


def _remote_measure(shipped: ShippedModel, cell: Cell, packed: bytes, facts: dict[str, Any]) -> dict[str, Any]:
    import ray

    return measure_built(shipped, cell, packed, facts, ray.get_runtime_context().get_node_id())


def _offers(node: dict[str, Any], requires: dict[str, float]) -> bool:
    have = node.get("Resources", {})
    return all(have.get(name, 0) >= amount for name, amount in requires.items())


def _missing(ray: Any, requires: dict[str, float]) -> str | None:
    """Why no live node can take a cell with these `requires`, or None when one can."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if any(_offers(n, requires) for n in alive):
        return None
    offered = sorted({k for n in alive for k in n.get("Resources", {}) if k.startswith("vlc/")})
    return (f"no live node of the cluster offers {describe(requires)} (offered: "
            f"{', '.join(offered) or 'no vlc/ resources'}); "
            "start one with `vlc worker start --address HEAD --resources ...`")


CELL, BUILD, MEASURE = "cell", "build", "measure"  # built and timed on one node; compiled; timed


@dataclass
class Job:
    """A task in flight: a whole cell, its build, or the timing of what was built."""

    kind: str
    cell: Cell
    shipped: ShippedModel
    shipped_ref: Any
    built: list[BenchRecord] = field(default_factory=list)  # MEASURE: the build's 'built' records
    facts: dict[str, Any] = field(default_factory=dict)  # MEASURE: what was built

    @property
    def resources(self) -> dict[str, float]:
        return self.cell.build_requires if self.kind == BUILD else self.cell.requires


class ClusterCampaign:
    """The driver's side of a campaign on a Ray cluster."""

    def __init__(self, campaign: Campaign, ray: Any, progress: Progress):
        self.campaign, self.ray, self.progress = campaign, ray, progress
        self.summary = CampaignSummary(campaign.results)
        self.total = 0
        self._sources: dict[str, Any] = {}  # model entry -> CompileSource (the front end once per model)
        self._remote = {CELL: ray.remote(_remote_cell), BUILD: ray.remote(_remote_build),
                        MEASURE: ray.remote(_remote_measure)}
        self._stranded: dict[Any, float] = {}  # pending jobs no live node can take, since when
        self.pending: dict[Any, Job] = {}

    @property
    def done(self) -> int:
        return len(self.summary.written) + len(self.summary.skipped)

    def note(self, text: str) -> None:
        self.progress(text, self.done, self.total)

    # ---- preparing ------------------------------------------------------------------------------
    def _source(self, ref: str) -> Any:
        if ref not in self._sources:
            self.note(f"exporting {ref}")
            self._sources[ref] = prepare(ref)
        return self._sources[ref]

    def _cells(self, run: RunSpec) -> list[tuple[Cell, Any, ShippedModel]]:
        cells = []
        for model in run.models:
            config = _bench_config(self.campaign, run, model)
            variants = validate_config(config)
            source = self._source(config.model)
            bench = Bench(config, source, variants)  # batches, inputs and references as `vlc bench` has them
            self.note(f"{source.name}: reference outputs for batches {', '.join(map(str, bench.batches))}")
            shipped = ShippedModel.from_source(source, bench, bench.batches)
            shipped_ref = self.ray.put(shipped)
            for variant in variants:
                for precision in bench.precisions:
                    cell = Cell(run=run.index, model=config.model, entry=variant.entry, label=variant.label,
                                precision=precision.value, batches=tuple(bench.batches), settings=run.settings,
                                requires=dict(run.requires), device=run.device, seed=run.seed,
                                build_requires=_build_requires(run, variant))
                    cells.append((cell, shipped_ref, shipped))
        return cells

    def _previous(self, shipped: ShippedModel, cell: Cell) -> list[dict[str, Any]]:
        """The cell's records already in the results folder, from any machine (the node decides
        which is its own, as `vlc bench` does)."""
        found = []
        for batch in cell.batches:
            probe = self._record(shipped, cell, batch, "failed", machine="m", reason="probe")
            pattern = f"*/{record_path(Path('.'), probe).parent.name}/{record_path(Path('.'), probe).name}"
            for path in sorted(self.campaign.results.glob(pattern)):
                if path.parent.parent.name == UNPLACED:
                    continue
                try:
                    found.append(read_record(path).to_json())
                except RecordError:
                    continue  # unreadable: measured again and replaced
        return found

    # ---- records --------------------------------------------------------------------------------
    def _record(self, shipped: ShippedModel, cell: Cell, batch: int, status: str, *, machine: str = UNPLACED,
                reason: str, build: dict[str, Any] | None = None) -> BenchRecord:
        settings = profile_settings(cell.settings, seed=cell.seed, graph="normalized")
        options = resolve([cell.entry])[0].options
        if options:
            settings["target_options"] = dict(options)
        return make_record(model=shipped.name, target=cell.label, precision=cell.precision, batch=batch,
                           machine=machine, status=status, source_hash=shipped.source_hash,
                           model_ref=shipped.ref, device=cell.device or "", device_name="no node",
                           env={"vlc_version": vlc.__version__}, settings=settings, reason=reason,
                           build=dict(build or {}))

    def _write(self, record: BenchRecord, text: str) -> None:
        write_record(self.campaign.results, record)
        self.summary.written.append(record)
        if record.machine != UNPLACED:  # a cell that found a node: its earlier "no node" record goes
            stale = record_path(self.campaign.results, replace(record, machine=UNPLACED))
            stale.unlink(missing_ok=True)
        built_on = record.build.get("machine")
        if record.status != "built" and built_on and built_on != record.machine:
            self._drop_built(replace(record, machine=built_on))  # timed now: its 'built, not timed' record goes
        self.note(text)

    def _drop_built(self, probe: BenchRecord) -> None:
        path = record_path(self.campaign.results, probe)
        try:
            old = read_record(path) if path.is_file() else None
        except RecordError:
            return
        if old is not None and old.status == "built" and old.source_hash == probe.source_hash:
            path.unlink(missing_ok=True)

    def _failed(self, shipped: ShippedModel, cell: Cell, reason: str, status: str = "failed",
                build: dict[str, Any] | None = None) -> None:
        for batch in cell.batches:
            self._write(self._record(shipped, cell, batch, status, reason=reason, build=build),
                        f"{cell.describe()} batch {batch}: {status}: {reason}")

    def _finished(self, cell: Cell, outcome: dict[str, Any]) -> None:
        where = f"{outcome['machine']} (node {outcome['node'][:8]})"
        for data in outcome.get("skipped", []):
            record = BenchRecord.from_json(data, where=f"a record from {where}")
            self.summary.skipped.append(record)
            self.note(f"{cell.describe()} batch {record.batch} on {where}: done before, skipped")
        for data in outcome["written"]:
            record = BenchRecord.from_json(data, where=f"a record from {where}")
            self._write(record, f"{cell.describe()} batch {record.batch} on {where}: {_detail(record)}")

    def _built(self, records: list[BenchRecord], why: str) -> None:
        for record in not_timed(records, why):
            self._write(record, f"{record.target} {record.precision} batch {record.batch}: built on "
                                f"{record.machine}, {record.reason}")

    def _done_before(self, shipped: ShippedModel, cell: Cell, statuses: tuple[str, ...] = ("ok",),
                     why: str = "no live node offers its requires now") -> bool:
        """Whether every batch of the cell has a record of one of `statuses` with the same settings
        from any machine (its machine may have left since): those records stand, as `vlc bench`
        keeps them; a 'built' one only while its kept artifact is there."""
        finished: dict[int, BenchRecord] = {}
        for data in self._previous(shipped, cell):
            old = BenchRecord.from_json(data)
            probe = self._record(shipped, cell, old.batch, "ok", machine=old.machine, reason="")
            probe.device = old.device  # decided on its node
            kept = old.status != "built" or bool(old.build.get("artifact")) and (
                self.campaign.results / old.build["artifact"]).is_dir()
            if old.status in statuses and kept and not settings_changes(old, probe):
                finished.setdefault(old.batch, old)
        if set(finished) != set(cell.batches):
            return False
        for batch in cell.batches:
            self.summary.skipped.append(finished[batch])
            self.note(f"{cell.describe()} batch {batch}: {finished[batch].status} before on "
                      f"{finished[batch].machine}, skipped ({why})")
        return True

    # ---- scheduling -----------------------------------------------------------------------------
    def _submit(self, job: Job, *args: Any) -> None:
        task = self._remote[job.kind].options(
            resources=job.resources, num_cpus=1, max_retries=self.campaign.retries,
            retry_exceptions=_node_failures(self.ray),
            name=f"vlc {job.kind} {job.shipped.name} {job.cell.describe()}")
        self.pending[task.remote(job.shipped_ref, job.cell, *args)] = job

    def _schedule(self, cell: Cell, shipped_ref: Any, shipped: ShippedModel) -> None:
        """A cell as one task where it is measured, or as a build first when a node offers its
        build_requires; recorded unavailable when no node can take either."""
        untimed = _missing(self.ray, cell.requires)
        if cell.build_requires and _missing(self.ray, cell.build_requires) is None:
            if self._done_before(shipped, cell, why="timed before") or (
                    untimed and self._done_before(shipped, cell, ("built",), why="still no node to time it")):
                return
            self._submit(Job(BUILD, cell, shipped, shipped_ref))
        elif untimed is None:
            self._submit(Job(CELL, cell, shipped, shipped_ref), self._previous(shipped, cell))
        elif not self._done_before(shipped, cell):
            why = untimed if not cell.build_requires else \
                f"{untimed}; nor does any offer {describe(cell.build_requires)} to build it"
            self._failed(shipped, cell, why, status="unavailable")

    def _after_build(self, job: Job, outcome: dict[str, Any]) -> None:
        records = [BenchRecord.from_json(d, where=f"a record from {outcome['machine']}") for d in outcome["records"]]
        if "artifact" not in outcome:  # it could not be built: unavailable or failed, with the reason
            self._finished(job.cell, {**outcome, "written": outcome["records"]})
            return
        kept = keep_in_results(self.campaign.results, records, outcome["artifact"])
        facts = {**outcome["facts"], "artifact": kept}
        records = [replace(r, build=facts) for r in records]
        self.note(f"{job.cell.describe()}: built on {outcome['machine']} in {facts.get('seconds')} s, "
                  f"kept in {self.campaign.results / kept}")
        if (why := _missing(self.ray, job.cell.requires)) is not None:
            self._built(records, why)
            return
        self._submit(Job(MEASURE, job.cell, job.shipped, job.shipped_ref, built=records, facts=facts),
                     self.ray.put(outcome["artifact"]), facts)

    def _after(self, job: Job, outcome: dict[str, Any]) -> None:
        if job.kind == BUILD:
            self._after_build(job, outcome)
        elif job.kind == MEASURE and outcome.get("not_timed"):
            self._built(job.built, f"{outcome['not_timed']} (node {outcome['node'][:8]} of {outcome['machine']})")
        else:
            self._finished(job.cell, outcome)

    def _lost(self, job: Job, exc: Exception) -> None:
        """Its node died and the retries ran out."""
        what = {CELL: "its node", BUILD: "its build node", MEASURE: "the node timing it"}[job.kind]
        built = f"built on {job.facts.get('machine')}; " if job.kind == MEASURE else ""
        self._failed(job.shipped, job.cell, f"{built}{what} failed: {first_line(exc, with_type=True)}",
                     build=job.facts)

    def run(self) -> CampaignSummary:
        cells = [c for run in self.campaign.runs for c in self._cells(run)]
        self.total = sum(len(cell.batches) for cell, _, _ in cells)
        for cell, shipped_ref, shipped in cells:
            self._schedule(cell, shipped_ref, shipped)
        self.note(f"{len(self.pending)} task(s) sent to the cluster")
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                job = self.pending.pop(ref)
                try:
                    outcome = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    self._lost(job, exc)
                else:
                    self._after(job, outcome)
            if not ready:
                self._strand()
        return self.summary

    def _strand(self) -> None:
        """Jobs waiting for resources no live node has offered for STRAND_GRACE_S (their node
        left and none replaced it): failed, or for a build waiting to be timed, 'built'."""
        now = time.monotonic()
        for ref, job in list(self.pending.items()):
            if (why := _missing(self.ray, job.resources)) is None:
                self._stranded.pop(ref, None)
            elif now - self._stranded.setdefault(ref, now) >= STRAND_GRACE_S:
                self._stranded.pop(ref, None)
                self.ray.cancel(ref, force=True)
                self.pending.pop(ref)
                if job.kind == MEASURE:
                    self._built(job.built, f"its node left the cluster: {why}")
                elif not self._done_before(job.shipped, job.cell):  # it had left before this run began
                    self._failed(job.shipped, job.cell, f"its node left the cluster: {why}")


def _detail(record: BenchRecord) -> str:
    if record.status == "ok" and record.median_ms is not None:
        return f"{record.median_ms:.3f} ms"
    return record.status + (f": {record.reason}" if record.reason else "")


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """One line when nothing listens at HOST:PORT (Ray itself would retry for minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray:// client addresses: Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                         fix="start a head with `vlc worker start --head` and pass the address it prints") from None


def run_cluster(campaign: Campaign, address: str, progress: Progress = lambda text, done, total: None
                ) -> CampaignSummary:
    """Each cell as a Ray task on a node offering its run's `requires` (a cluster at `address`)."""
    ray = import_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot connect to the Ray cluster at {address}: {first_line(exc)}",
                             fix="start a head with `vlc worker start --head` and pass its address") from None
    started = time.monotonic()
    # Ray's driver prints what other nodes report (a raylet that died, its last log lines) to
    # sys.stdout from a thread of its own: to stderr while it runs, so stdout stays the
    # command's output (--json)
    with contextlib.redirect_stdout(sys.stderr):
        try:
            summary = ClusterCampaign(campaign, ray, progress).run()
        finally:
            if connected_here:
                ray.shutdown()
    logging.getLogger("vlc").info("campaign took %.1f s", time.monotonic() - started)
    return summary

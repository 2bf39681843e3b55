"""Running a campaign: every cell on this machine, or each cell as a Ray task on a matching node.

Locally, each run's models go through `vlc bench` itself (run_bench), so the records are the
ones `vlc bench` writes. On a cluster, the front end runs once per model on the driver and its
graph travels to the nodes as bytes (ray.put); each cell is one task scheduled with its run's
`requires` as Ray resources; records come back as tasks finish (a ray.wait loop) and are
written atomically on the driver (vlc.records), keyed and resumed as `vlc bench` keys and
resumes them: the cell's earlier records go with it and the node skips what is still valid.
A cell whose node dies runs again on another matching node (Ray's retries); when none is left
or the retries run out, its records say `failed` and why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from vlc.bench.runner import Bench, BenchConfig, run_bench, settings_changes, validate_config
from vlc.bench.variants import resolve
from vlc.campaign.cells import Cell, ShippedModel, measure_cell
from vlc.campaign.spec import Campaign, RunSpec, model_ref
from vlc.errors import InputError, first_line
from vlc.measure import make_record
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

def run_local(campaign: Campaign, progress: Progress = lambda text, done, total: None) -> CampaignSummary:
    """Every run's models through `vlc bench` on this machine, into the campaign's results."""
    summary = CampaignSummary(campaign.results)
    jobs = [(run, model) for run in campaign.runs for model in run.models]
    for i, (run, model) in enumerate(jobs, start=1):
        def step(text: str, done: int, total: int, _i: int = i, _model: str = model) -> None:
            progress(f"{_model} ({_i}/{len(jobs)}): {text}", done, total)

        result = run_bench(_bench_config(campaign, run, model), step)
        summary.written += result.written
        summary.skipped += result.skipped
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


def _offers(node: dict[str, Any], requires: dict[str, float]) -> bool:
    have = node.get("Resources", {})
    return all(have.get(name, 0) >= amount for name, amount in requires.items())


def _missing(ray: Any, requires: dict[str, float]) -> str | None:
    """Why no live node can take a cell with these `requires`, or None when one can."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if any(_offers(n, requires) for n in alive):
        return None
    wanted = ", ".join(f"{k}={v:g}" for k, v in sorted(requires.items()))
    offered = sorted({k for n in alive for k in n.get("Resources", {}) if k.startswith("vlc/")})
    return (f"no live node of the cluster offers {wanted} (offered: {', '.join(offered) or 'no vlc/ resources'}); "
            "start one with `vlc worker start --address HEAD --resources ...`")


class ClusterCampaign:
    """The driver's side of a campaign on a Ray cluster."""

    def __init__(self, campaign: Campaign, ray: Any, progress: Progress):
        self.campaign, self.ray, self.progress = campaign, ray, progress
        self.summary = CampaignSummary(campaign.results)
        self.total = 0
        self._sources: dict[str, Any] = {}  # model entry -> CompileSource (the front end once per model)
        self._remote = ray.remote(_remote_cell)
        self._stranded: dict[Any, float] = {}  # pending cells no live node can take, since when

    @property
    def done(self) -> int:
        return len(self.summary.written) + len(self.summary.skipped)

    def note(self, text: str) -> None:
        self.progress(text, self.done, self.total)

    # ---- preparing ------------------------------------------------------------------------------
    def _source(self, ref: str) -> Any:
        if ref not in self._sources:
            from vlc.frontend.pipeline import prepare

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
                                requires=dict(run.requires), device=run.device, seed=run.seed)
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
                reason: str) -> BenchRecord:
        import vlc
        from vlc.measure import profile_settings

        settings = profile_settings(cell.settings, seed=cell.seed, graph="normalized")
        options = resolve([cell.entry])[0].options
        if options:
            settings["target_options"] = dict(options)
        return make_record(model=shipped.name, target=cell.label, precision=cell.precision, batch=batch,
                           machine=machine, status=status, source_hash=shipped.source_hash,
                           model_ref=shipped.ref, device=cell.device or "", device_name="no node",
                           env={"vlc_version": vlc.__version__}, settings=settings, reason=reason)

    def _write(self, record: BenchRecord, text: str) -> None:
        write_record(self.campaign.results, record)
        self.summary.written.append(record)
        if record.machine != UNPLACED:  # a cell that found a node: its earlier "no node" record goes
            stale = record_path(self.campaign.results, replace(record, machine=UNPLACED))
            stale.unlink(missing_ok=True)
        self.note(text)

    def _failed(self, shipped: ShippedModel, cell: Cell, reason: str, status: str = "failed") -> None:
        for batch in cell.batches:
            self._write(self._record(shipped, cell, batch, status, reason=reason),
                        f"{cell.describe()} batch {batch}: {status}: {reason}")

    def _finished(self, cell: Cell, outcome: dict[str, Any]) -> None:
        where = f"{outcome['machine']} (node {outcome['node'][:8]})"
        for data in outcome["skipped"]:
            record = BenchRecord.from_json(data, where=f"a record from {where}")
            self.summary.skipped.append(record)
            self.note(f"{cell.describe()} batch {record.batch} on {where}: done before, skipped")
        for data in outcome["written"]:
            record = BenchRecord.from_json(data, where=f"a record from {where}")
            detail = (f"{record.median_ms:.3f} ms" if record.status == "ok" and record.median_ms is not None
                      else f"{record.status}" + (f": {record.reason}" if record.reason else ""))
            self._write(record, f"{cell.describe()} batch {record.batch} on {where}: {detail}")

    def _done_before(self, shipped: ShippedModel, cell: Cell, why: str) -> bool:
        """A cell no live node can take now but whose every batch has a finished record with the
        same settings (its machine left since): those records stand, as `vlc bench` keeps them."""
        finished: dict[int, BenchRecord] = {}
        for data in self._previous(shipped, cell):
            old = BenchRecord.from_json(data)
            probe = self._record(shipped, cell, old.batch, "ok", machine=old.machine, reason="")
            probe.device = old.device  # decided on its node
            if old.status == "ok" and not settings_changes(old, probe):
                finished.setdefault(old.batch, old)
        if set(finished) != set(cell.batches):
            return False
        for batch in cell.batches:
            self.summary.skipped.append(finished[batch])
            self.note(f"{cell.describe()} batch {batch}: done before on {finished[batch].machine}, "
                      "skipped (no live node offers its requires now)")
        return True

    # ---- running --------------------------------------------------------------------------------
    def run(self) -> CampaignSummary:
        cells = [c for run in self.campaign.runs for c in self._cells(run)]
        self.total = sum(len(cell.batches) for cell, _, _ in cells)
        pending: dict[Any, tuple[Cell, ShippedModel]] = {}
        for cell, shipped_ref, shipped in cells:
            if (why := _missing(self.ray, cell.requires)) is not None:
                if not self._done_before(shipped, cell, why):
                    self._failed(shipped, cell, why, status="unavailable")
                continue
            task = self._remote.options(
                resources=cell.requires, num_cpus=1, max_retries=self.campaign.retries,
                retry_exceptions=_node_failures(self.ray), name=f"vlc {shipped.name} {cell.describe()}")
            pending[task.remote(shipped_ref, cell, self._previous(shipped, cell))] = (cell, shipped)
        self.note(f"{len(pending)} cell(s) sent to the cluster")
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                cell, shipped = pending.pop(ref)
                try:
                    outcome = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:  # its node died and the retries ran out
                    self._failed(shipped, cell, f"its node failed: {first_line(exc, with_type=True)}")
                else:
                    self._finished(cell, outcome)
            if not ready:
                self._strand(pending)
        return self.summary

    def _strand(self, pending: dict[Any, tuple[Cell, ShippedModel]]) -> None:
        """Cells waiting for resources no live node has offered for STRAND_GRACE_S (their node
        left and none replaced it): failed."""
        now = time.monotonic()
        for ref, (cell, shipped) in list(pending.items()):
            if (why := _missing(self.ray, cell.requires)) is None:
                self._stranded.pop(ref, None)
            elif now - self._stranded.setdefault(ref, now) >= STRAND_GRACE_S:
                self._stranded.pop(ref, None)
                self.ray.cancel(ref, force=True)
                pending.pop(ref)
                if not self._done_before(shipped, cell, why):  # it had left before this run began
                    self._failed(shipped, cell, f"its node left the cluster: {why}")


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
    try:
        summary = ClusterCampaign(campaign, ray, progress).run()
    finally:
        if connected_here:
            ray.shutdown()
    logging.getLogger("vlc").info("campaign took %.1f s", time.monotonic() - started)
    return summary

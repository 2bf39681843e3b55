"""`vlc worker start --address HEAD | --head`: `ray start` with this machine's `vlc/...` resources;
`vlc worker stop`: end the nodes started here.

The node is probed with `vlc targets`' availability checks (vlc.campaign.resources) and joins
the cluster advertising what it can build and run, plus the user's --resources; --machine
names the machine in the records its cells write. `--temp-dir` gives the node its own Ray
folder, so `vlc worker stop --temp-dir DIR` ends that node's processes and no others (plain
`ray stop` ends every Ray process of the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from vlc.cli import console
from vlc.errors import InputError


def ray_executable() -> str:
    """The `ray` command of this environment (beside this interpreter), else on PATH."""
    beside = Path(sys.executable).parent / "ray"
    if beside.is_file():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise InputError("`vlc worker start` needs Ray, which is not installed",
                         fix="install Ray with: pip install 'vlc[cluster]'")
    return found


def ray_start_command(*, head: bool, address: str | None, resources: dict[str, float],
                      port: int | None, node_ip: str | None, num_cpus: int | None,
                      extra: list[str], temp_dir: Path | None = None) -> list[str]:
    from vlc.campaign.ray_start import LOOPBACK  # local: startup

    ray = ray_executable()  # Ray installed, or the hint
    # a loopback node address goes through vlc's launcher: `ray start` would replace it
    command = [sys.executable, "-m", "vlc.campaign.ray_start"] if node_ip in LOOPBACK else [ray]
    command.append("start")
    command += ["--head"] + ([f"--port={port}"] if port is not None else []) if head else [f"--address={address}"]
    command.append(f"--resources={json.dumps(resources, sort_keys=True)}")
    if node_ip:
        command.append(f"--node-ip-address={node_ip}")
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if temp_dir is not None:
        command.append(f"--temp-dir={temp_dir}")
    if head:
        command.append("--include-dashboard=false")
    return command + extra



def node_processes(temp_dir: Path) -> list[int]:
    """Pids of the Ray processes whose command line names `temp_dir` (every daemon of a node
    started with that --temp-dir), and their children (the agents and workers they forked)."""
    proc = Path("/proc")
    if not proc.is_dir():
        raise InputError("`vlc worker stop --temp-dir` reads /proc, which this system lacks",
                         fix="stop the node with `ray stop`")
    marker = re.compile(re.escape(str(temp_dir).rstrip("/").encode()) + rb"(?=/|\x00|$)")  # not /tmp/ray2 for /tmp/ray
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
        if marker.search(cmdline):
            roots.add(int(entry.name))
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def stop_node(temp_dir: Path, grace_s: float) -> list[int]:
    """SIGTERM each process of the node at `temp_dir`, SIGKILL what is left after `grace_s`."""
    pids = node_processes(temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    return pids


def register(app: typer.Typer) -> None:
    worker_app = typer.Typer(help="Cluster nodes for `vlc campaign run --cluster` (a thin wrapper over `ray start`).",
                             no_args_is_help=True)
    app.add_typer(worker_app, name="worker")

    @worker_app.command("start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def start(
        ctx: typer.Context,
        address: str | None = typer.Option(None, "--address", help="The head's address, HOST:PORT."),
        head: bool = typer.Option(False, "--head", help="Start a head node (a campaign's --cluster address)."),
        resources: str | None = typer.Option(None, "--resources", help='More Ray resources, JSON, e.g. '
                                                '\'{"vlc/a10": 1}\' (added to the probed vlc/... ones).'),
        machine: str | None = typer.Option(None, "--machine", help="Machine name in the records of the "
                                              "cells run here (default: the host name)."),
        port: int | None = typer.Option(None, "--port", help="The head's port (default Ray's, 6379)."),
        node_ip: str | None = typer.Option(None, "--node-ip-address", help="The address this node is "
                                              "reached at (default: Ray's guess)."),
        num_cpus: int | None = typer.Option(None, "--num-cpus", help="CPUs offered; each cell takes one, "
                                               "so 1 measures one cell at a time."),
        temp_dir: Path | None = typer.Option(None, "--temp-dir", help="This node's own Ray folder (absolute), "
                                                "so `vlc worker stop --temp-dir` ends it alone."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the probed resources and the `ray start` "
                                     "command, start nothing."),
    ) -> None:
        """Probe this machine's targets and start a Ray node that advertises them as vlc/... resources.
        Arguments after `--` go to `ray start` as they are."""
        if head == (address is not None):
            raise InputError("give one of --head and --address HEAD",
                             fix="e.g. vlc worker start --address 10.0.0.1:6379")
        if port is not None and not head:
            raise InputError("--port is the head's port", fix="pass it with --head")
        if temp_dir is not None and not temp_dir.is_absolute():
            raise InputError(f"--temp-dir {temp_dir} is not an absolute path",
                             fix=f"e.g. --temp-dir {temp_dir.absolute()}")
        from vlc.campaign.cells import MACHINE_ENV  # local: startup
        from vlc.campaign.resources import parse_resources, probe_resources  # local: startup

        offered = {**probe_resources(), **parse_resources(resources)}
        command = ray_start_command(head=head, address=address, resources=offered, port=port, node_ip=node_ip,
                                    num_cpus=num_cpus, extra=list(ctx.args), temp_dir=temp_dir)
        env = dict(os.environ)
        if machine:
            env[MACHINE_ENV] = machine  # inherited by the node's worker processes
        if dry_run:
            console.emit_json({"resources": offered, "machine": machine or "", "command": command})
            return
        console.info(f"starting a Ray {'head' if head else 'worker'} node offering "
                     f"{', '.join(offered) or 'no vlc/ resources'}")
        proc = subprocess.run(command, env=env)
        if proc.returncode != 0:
            raise InputError(f"`ray start` failed with status {proc.returncode}",
                             fix="its output above says why; `ray stop` ends a node left running")
        console.info("stop it with `vlc worker stop" + (f" --temp-dir {temp_dir}`" if temp_dir else "` (ray stop)"))

    @worker_app.command("stop")
    def stop(
        temp_dir: Path | None = typer.Option(None, "--temp-dir", help="Stop only the node(s) started with this "
                                                "--temp-dir; default: every Ray node of this machine (ray stop)."),
        grace: float = typer.Option(10.0, "--grace", min=0.0, help="Seconds to wait after SIGTERM before SIGKILL."),
        json_out: bool = typer.Option(False, "--json", help="Print what was stopped as JSON."),
    ) -> None:
        """Stop the Ray node(s) `vlc worker start` started on this machine."""
        if temp_dir is None:
            proc = subprocess.run([ray_executable(), "stop", f"--grace-period={int(grace)}"])
            if proc.returncode != 0:
                raise InputError(f"`ray stop` failed with status {proc.returncode}", fix="its output above says why")
            return
        temp_dir = temp_dir.absolute()
        pids = node_processes(temp_dir)
        if not pids:
            raise InputError(f"no Ray process of this machine runs from {temp_dir}",
                             fix="pass the --temp-dir the node was started with, or `vlc worker stop` for all")
        left = stop_node(temp_dir, grace)
        if json_out:
            console.emit_json({"temp_dir": str(temp_dir), "stopped": [p for p in pids if p not in left],
                               "left": left})
        else:
            console.info(f"stopped {len(pids) - len(left)} Ray process(es) of the node(s) at {temp_dir}")
        if left:
            raise InputError(f"{len(left)} Ray process(es) at {temp_dir} survived SIGKILL: {left}",
                             fix="check them with `ps`; they may belong to another user")

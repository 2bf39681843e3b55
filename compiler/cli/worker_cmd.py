"""`vlc worker start --address HEAD | --head`: `ray start` with this machine's `vlc/...` resources.

The node is probed with `vlc targets`' availability checks (vlc.campaign.resources) and joins
the cluster advertising what it can build and run, plus the user's --resources; --machine
names the machine in the records its cells write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

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


def ray_start_command(*, head: bool, address: Optional[str], resources: dict[str, float],
                      port: Optional[int], node_ip: Optional[str], num_cpus: Optional[int],
                      extra: list[str]) -> list[str]:
    command = [ray_executable(), "start"]
    command += ["--head"] + ([f"--port={port}"] if port is not None else []) if head else [f"--address={address}"]
    command.append(f"--resources={json.dumps(resources, sort_keys=True)}")
    if node_ip:
        command.append(f"--node-ip-address={node_ip}")
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if head:
        command.append("--include-dashboard=false")
    return command + extra


def register(app: typer.Typer) -> None:
    worker_app = typer.Typer(help="Cluster nodes for `vlc campaign run --cluster` (a thin wrapper over `ray start`).",
                             no_args_is_help=True)
    app.add_typer(worker_app, name="worker")

    @worker_app.command("start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def start(
        ctx: typer.Context,
        address: Optional[str] = typer.Option(None, "--address", help="The head's address, HOST:PORT."),
        head: bool = typer.Option(False, "--head", help="Start a head node (a campaign's --cluster address)."),
        resources: Optional[str] = typer.Option(None, "--resources", help='More Ray resources, JSON, e.g. '
                                                '\'{"vlc/a10": 1}\' (added to the probed vlc/... ones).'),
        machine: Optional[str] = typer.Option(None, "--machine", help="Machine name in the records of the "
                                              "cells run here (default: the host name)."),
        port: Optional[int] = typer.Option(None, "--port", help="The head's port (default Ray's, 6379)."),
        node_ip: Optional[str] = typer.Option(None, "--node-ip-address", help="The address this node is "
                                              "reached at (default: Ray's guess)."),
        num_cpus: Optional[int] = typer.Option(None, "--num-cpus", help="CPUs offered; each cell takes one, "
                                               "so 1 measures one cell at a time."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the probed resources and the `ray start` "
                                     "command, start nothing."),
    ) -> None:
        """Probe this machine's targets and start a Ray node that advertises them as vlc/... resources.
        Arguments after `--` go to `ray start` as they are."""
        from vlc.campaign.cells import MACHINE_ENV
        from vlc.campaign.resources import parse_resources, probe_resources

        if head == (address is not None):
            raise InputError("give one of --head and --address HEAD", fix="e.g. vlc worker start --address 10.0.0.1:6379")
        if port is not None and not head:
            raise InputError("--port is the head's port", fix="pass it with --head")
        offered = {**probe_resources(), **parse_resources(resources)}
        command = ray_start_command(head=head, address=address, resources=offered, port=port, node_ip=node_ip,
                                    num_cpus=num_cpus, extra=list(ctx.args))
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

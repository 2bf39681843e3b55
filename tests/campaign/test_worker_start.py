"""`vlc worker start` for real: a head bound to 127.0.0.1 on free ports, a worker joining it with
the probed vlc/... resources and the user's own, both seen through Ray (resources, address, the
--machine name inside a task on the worker), then `vlc worker stop --temp-dir` ends exactly
the processes of each node. Every node has its own Ray folder, so nothing else is touched."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'vlc[cluster]')")

from vlc.campaign.resources import probe_resources
from vlc.cli.worker_cmd import _alive, node_processes, stop_node

LIMIT_S = 58  # every command's timeout is what is left of this: the test ends within a minute
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
ENV.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # a worker joining by `ray start` needs Ray's multi-node mode
# the checking driver: Ray keeps a loopback address for it (vlc.campaign.ray_start does so for the nodes)
DRIVER_ENV = {**ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def fixed_ports(ports: list[int]) -> list[str]:
    """`ray start` flags for every port Ray would otherwise take at a fixed default (two nodes
    of one host, or another test's cluster, would collide there); the Ray Client server of
    port 10001 starts only with ray[client] installed, and then needs --ray-client-server-port."""
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port")
    return [f"--{name}={port}" for name, port in zip(names, ports)]


def alive(folder: Path) -> list[int]:
    return [p for p in node_processes(folder) if _alive(p)]


def listening_outside_loopback(pids: list[int]) -> list[str]:
    """TCP sockets of `pids` that listen on an address other than 127.0.0.1 (from /proc/net/tcp*)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, also as IPv4-mapped IPv6
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes and address.split(":")[0] not in loopback:  # 0A: LISTEN
                found.append(f"pid {inodes[inode]} listens on {address}")
    return found


@pytest.fixture
def ray_folders():
    # short paths: Ray's unix sockets live below them (about 107 characters at most)
    root = Path(tempfile.mkdtemp(prefix="vlcray-", dir="/tmp"))
    folders = (root / "head", root / "worker")
    try:
        yield folders
    finally:
        for folder in reversed(folders):  # whatever the test left running, by its own folder only
            stop_node(folder, grace_s=0)
        shutil.rmtree(root, ignore_errors=True)


class Clock:
    def __init__(self) -> None:
        import time

        self.deadline = time.monotonic() + LIMIT_S

    def left(self) -> float:
        import time

        return max(1.0, self.deadline - time.monotonic())


def vlc(clock: Clock, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlc", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=clock.left())


CHECK = """
import json, os, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
nodes = [{"address": n["NodeManagerAddress"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]
machine = ray.get(ray.remote(lambda: os.environ.get("VLC_MACHINE")).options(
    resources={"vlc/test-worker": 1}, num_cpus=1).remote(), timeout=30)
print(json.dumps({"nodes": nodes, "machine": machine}))
"""


def test_a_head_and_a_worker_start_advertise_and_stop(ray_folders):
    clock = Clock()
    head_dir, worker_dir = ray_folders
    port, *ports = free_ports(14)
    code = vlc(clock, "worker", "start", "--head", "--port", port, "--node-ip-address", "127.0.0.1", "--num-cpus", 1,
               "--temp-dir", head_dir, "--resources", '{"vlc/test-head": 1}', "--",
               *fixed_ports(ports[:6]), f"--dashboard-port={ports[12]}", "--object-store-memory=80000000",
               "--disable-usage-stats")
    assert code.returncode == 0, code.stderr[-2000:]
    assert f"vlc worker stop --temp-dir {head_dir}" in code.stderr
    assert alive(head_dir) and not alive(worker_dir)
    assert listening_outside_loopback(alive(head_dir)) == []
    address = f"127.0.0.1:{port}"
    code = vlc(clock, "worker", "start", "--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", 1,
               "--temp-dir", worker_dir, "--machine", "lab-2", "--resources", '{"vlc/test-worker": 2}', "--",
               *fixed_ports(ports[6:12]), "--object-store-memory=80000000", "--disable-usage-stats")
    assert code.returncode == 0, code.stderr[-2000:]

    seen = subprocess.run([sys.executable, "-c", CHECK, address], env=DRIVER_ENV, capture_output=True, text=True,
                          timeout=clock.left())
    assert seen.returncode == 0, seen.stderr[-2000:]
    found = json.loads(seen.stdout.strip().splitlines()[-1])
    assert len(found["nodes"]) == 2 and {n["address"] for n in found["nodes"]} == {"127.0.0.1"}
    head, worker = sorted(found["nodes"], key=lambda n: "vlc/test-worker" in n["resources"])
    probed = probe_resources()
    assert probed  # this machine runs onnxruntime and torch at least
    for node, own in ((head, {"vlc/test-head": 1.0}), (worker, {"vlc/test-worker": 2.0})):
        vlc_resources = {k: v for k, v in node["resources"].items() if k.startswith("vlc/")}
        assert vlc_resources == {**probed, **own}
    assert found["machine"] == "lab-2"  # --machine reaches the worker's tasks (the records' machine)
    assert listening_outside_loopback(alive(head_dir) + alive(worker_dir)) == []

    # each node stopped by its own folder: the worker first, the head still up meanwhile
    code = vlc(clock, "worker", "stop", "--temp-dir", worker_dir, "--grace", 1, "--json")
    assert code.returncode == 0, code.stderr[-2000:]
    assert json.loads(code.stdout)["stopped"] and not alive(worker_dir) and alive(head_dir)
    code = vlc(clock, "worker", "stop", "--temp-dir", head_dir, "--grace", 1)
    assert code.returncode == 0, code.stderr[-2000:]
    assert not alive(head_dir)
    code = vlc(clock, "worker", "stop", "--temp-dir", head_dir)  # nothing left: one line, non-zero
    assert code.returncode != 0 and "no Ray process of this machine runs from" in code.stderr


def test_stop_finds_a_node_by_its_folder_and_no_other(tmp_path):
    """Processes are matched by the folder as a whole path (/tmp/x does not match /tmp/x2), and
    their children go with them."""
    ours, other = tmp_path / "node", tmp_path / "node2"
    sleeper = ("import subprocess, sys, time; "
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    procs = [subprocess.Popen([sys.executable, "-c", sleeper, f"--temp-dir={folder}"]) for folder in (ours, other)]
    try:
        import time

        deadline = time.monotonic() + 20
        while len(alive(ours)) < 2 and time.monotonic() < deadline:  # the process and its child
            time.sleep(0.1)
        mine = alive(ours)
        assert len(mine) == 2 and procs[0].pid in mine and procs[1].pid not in mine
        assert stop_node(ours, grace_s=1) == [] and not alive(ours)
        assert procs[1].pid in alive(other)  # the other folder's process runs on
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        stop_node(other, grace_s=0)


def test_the_launcher_keeps_a_loopback_address_and_resolves_the_rest():
    from vlc.campaign.ray_start import keep_loopback

    resolve = keep_loopback(lambda host: "192.0.2.2")
    assert resolve("127.0.0.1") == resolve("localhost") == "127.0.0.1" and resolve("::1") == "::1"
    assert resolve("10.0.0.5") == "192.0.2.2"  # anything else as Ray resolves it

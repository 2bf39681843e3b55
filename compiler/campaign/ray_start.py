"""`ray start` that keeps a loopback address as given: `python -m vlc.campaign.ray_start start ...`.

Ray replaces 127.0.0.1 and localhost, in --node-ip-address and in --address, with the host's
outward address (ray-project/ray#59110), so a node asked to bind to the loopback address binds
to every interface, and a worker cannot join a head that listens on the loopback address
only. Several nodes of one machine (a campaign test, a box with two accelerators run as two
nodes) need exactly that; `vlc worker start --node-ip-address 127.0.0.1` runs `ray start`
through here. Every other address is resolved by Ray as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def keep_loopback(resolve: Callable[[str], Any]) -> Callable[[str], Any]:
    def resolve_ip(host: str) -> Any:
        return "127.0.0.1" if host in ("127.0.0.1", "localhost") else host if host == "::1" else resolve(host)

    return resolve_ip


def main(argv: list[str]) -> int:
    from ray._private import services
    from ray.scripts.scripts import main as ray_main

    services.resolve_ip_for_localhost = keep_loopback(services.resolve_ip_for_localhost)
    sys.argv = ["ray", *argv]
    try:
        ray_main()
    except SystemExit as done:  # click ends with SystemExit; its code is the status
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Start-up time of the vlc command line: wall time of fresh processes, min and median of N runs.

    .venv/bin/python benchmarks/startup.py            # 5 runs of each command
    .venv/bin/python benchmarks/startup.py --runs 10 --json

Each command runs in a new process (as a user types it), output discarded. The minimum is the
cost on an idle machine; the median shows what load adds. The goal is under 1 s for `--help` and
`targets`; tests/cli/test_startup.py checks, without timing, that these import no framework.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_S = 1.0


def vlc_script() -> str:
    """The `vlc` console script of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("vlc")
    found = str(beside) if beside.exists() else shutil.which("vlc")
    if found is None:
        sys.exit("no `vlc` script beside this Python or on PATH: pip install -e . first")
    return found


def commands() -> dict[str, list[str]]:
    vlc = vlc_script()
    return {
        "vlc --help": [vlc, "--help"],
        "vlc targets": [vlc, "targets"],
        "vlc targets --json": [vlc, "targets", "--json"],
        "python -m vlc --version": [sys.executable, "-m", "vlc", "--version"],
    }


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return seconds


def measure(runs: int) -> list[dict[str, object]]:
    rows = []
    for name, argv in commands().items():
        time_once(argv)  # warm the file cache, as every run after a user's first one is
        samples = [time_once(argv) for _ in range(runs)]
        rows.append({"command": name, "runs": runs, "min_s": round(min(samples), 3),
                     "median_s": round(statistics.median(samples), 3),
                     "under_goal": min(samples) < GOAL_S})
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    width = max(len(str(r["command"])) for r in rows)
    print(f"{'command':<{width}}  {'min s':>7}  {'median s':>8}  under {GOAL_S:g} s")
    for r in rows:
        print(f"{r['command']:<{width}}  {r['min_s']:>7.3f}  {r['median_s']:>8.3f}  "
              f"{'yes' if r['under_goal'] else 'no'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    rows = measure(args.runs)
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "goal_s": GOAL_S, "rows": rows}, indent=2))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()

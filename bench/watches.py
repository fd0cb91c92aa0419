"""What a running daemon holds: inotify watches, threads, resident memory, idle CPU.

Generates a store per size with bench/genstore.py (names of 100 versions, 4
files of 4 KiB; sparse files from 20,000 versions), starts ``storewarden
run`` on it as a separate process and reads that process from ``/proc``:
the watches are the ``inotify wd:`` lines of its inotify descriptors'
``fdinfo``. Prints one Markdown table::

    python bench/watches.py                                  # 5,000 and 50,000 versions
    python bench/watches.py --versions 5000 --idle-seconds 20
    python bench/watches.py --observer polling

Generated versions were written seconds ago, so every one of them is still
"settling" (its ctime is fresh) for the default ``protect.settle`` of 10
minutes. The daemon here runs with ``protect.settle`` of ``--settle``
seconds (default 5) and is measured once that has passed: the state of a
store whose versions were saved longer ago than ``settle``, as on a build
agent. Nothing is pruned (the high mark is 99.9 %).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from genstore import generate_store

SPARSE_FROM = 20_000


@dataclass(frozen=True)
class Figures:
    """One daemon measured on one store."""

    versions: int
    observer: str
    ready_seconds: float
    watches: int
    threads: int
    rss_mib: float
    idle_cpu_percent: float


def inotify_watches(pid: int) -> int:
    """Return how many inotify watches process ``pid`` holds, over all its inotify descriptors."""
    count = 0
    for entry in os.scandir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(entry.path) != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{entry.name}") as info:
                count += sum(1 for line in info if line.startswith("inotify wd:"))
        except OSError:
            continue  # closed meanwhile
    return count


def measure(
    store: Path, versions: int, *, observer: str, settle: float, idle_seconds: float
) -> Figures:
    """Run ``storewarden run`` on ``store`` and return its figures once ``settle`` has passed."""
    config = store.parent / f"{store.name}.yaml"
    config.write_text(
        json.dumps(
            {
                "store": str(store),
                "trigger": {"high_percent": 99.9, "low_percent": 99.0},
                "protect": {"settle": f"{settle}s"},
                "schedule": {"observer": observer},
            }
        )
    )
    log = store.parent / f"{store.name}-daemon.log"
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "storewarden", "run", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        ready_line = ""
        while not ready_line:
            if process.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.05)
            ready_line = next(
                (line for line in log.read_text().splitlines() if '"daemon_ready"' in line), ""
            )
        ready = time.monotonic() - started
        time.sleep(settle + 3.0)  # past settle, and past the first checks
        handle = psutil.Process(process.pid)
        before = handle.cpu_times()
        time.sleep(idle_seconds)
        after = handle.cpu_times()
        cpu = 100.0 * ((after.user + after.system) - (before.user + before.system)) / idle_seconds
        return Figures(
            versions=versions,
            observer=str(json.loads(ready_line).get("observer", "?")),
            ready_seconds=ready,
            watches=inotify_watches(process.pid),
            threads=handle.num_threads(),
            rss_mib=handle.memory_info().rss / 2**20,
            idle_cpu_percent=cpu,
        )
    finally:
        process.terminate()
        process.wait(30)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate each store, measure a daemon on it, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default="5000,50000", help="comma-separated store sizes")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--observer", default="auto", choices=("auto", "inotify", "polling"))
    parser.add_argument("--workdir", type=Path, help="where to generate stores (default: temp)")
    arguments = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="storewarden-watches-", dir=arguments.workdir))
    rows: list[Figures] = []
    try:
        for count in (int(text) for text in arguments.versions.split(",")):
            store = work / f"store-{count}"
            names = max(1, count // 100)
            generate_store(
                store,
                names=names,
                versions_per_name=count // names,
                files_per_version=4,
                bytes_per_file=4096,
                sparse=count >= SPARSE_FROM,
            )
            rows.append(
                measure(
                    store,
                    count,
                    observer=arguments.observer,
                    settle=arguments.settle,
                    idle_seconds=arguments.idle_seconds,
                )
            )
            shutil.rmtree(store)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()},"
        f" Python {platform.python_version()}, {datetime.now(tz=UTC):%Y-%m-%d}"
    )
    print("| versions | observer | start to ready | inotify watches | threads | RSS | idle CPU |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.versions:,} | {row.observer} | {row.ready_seconds:.2f} s | {row.watches:,}"
            f" | {row.threads} | {row.rss_mib:.0f} MiB"
            f" | {row.idle_cpu_percent:.2f} % of a core ({arguments.idle_seconds:.0f} s) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

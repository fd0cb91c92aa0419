"""Benchmarks: storewarden against du, rm -rf and `bentoml models list` on the same store.

Prints one table; every figure sits next to its baseline, measured in the
same run on the same generated store. Run as root (the threshold-delay
section mounts a tmpfs)::

    python bench/bench.py                       # everything (about 5 minutes)
    python bench/bench.py --sections census     # just the census figures
    python bench/bench.py --sections prune --prune-rounds 5   # more rounds on a busy machine

Figures and the machine they came from are kept in docs/performance.md.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from genstore import generate_store

from storewarden import logs
from storewarden.config import build_config
from storewarden.daemon import Daemon
from storewarden.engine import Engine
from storewarden.prune import STATE_MARKER

NOW = datetime.now(tz=UTC)
# The checkout whose storewarden this script imported: the commands it times run the same.
PACKAGE = Path(logs.__file__).resolve().parent


@dataclass
class Row:
    """One line of the result table."""

    section: str
    measure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""


def command_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return ``env`` (default: this one) with the measured checkout first on PYTHONPATH.

    Without it ``python -m storewarden`` imports whatever the interpreter has
    installed (an editable install of another checkout), or the working
    directory's.
    """
    env = dict(os.environ if env is None else env)
    paths = [str(PACKAGE.parent), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def compile_package() -> None:
    """Write the measured checkout's bytecode, as an installed wheel has it.

    Under PYTHONDONTWRITEBYTECODE (or in a read-only checkout) every command
    would otherwise compile each of its modules again: 0.1-0.2 s of start-up
    no installed storewarden pays.
    """
    compileall.compile_dir(str(PACKAGE), quiet=1)


def timed(command: Sequence[str], env: Mapping[str, str] | None = None) -> float:
    """Run a command and return its wall time in seconds; raise if it fails."""
    environment = command_environment(env)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=environment)
    return time.perf_counter() - started


def best_of(runs: int, function: Callable[[], float]) -> float:
    """Return the smallest of ``runs`` timings (the least disturbed one)."""
    return min(function() for _ in range(runs))


def storewarden(*arguments: str) -> list[str]:
    """Return the command line that runs storewarden with this interpreter."""
    return [sys.executable, "-m", "storewarden", *arguments]


def bentoml_command(explicit: str | None) -> list[str] | None:
    """Return how to run `bentoml`: --bentoml, or the one installed beside this Python."""
    if explicit:
        return [explicit]
    beside = Path(sys.executable).parent / "bentoml"
    return [str(beside)] if beside.exists() else None


def in_process_census(store: Path) -> float:
    """Return the seconds one Engine.census takes in this process (cache used if present)."""
    engine = Engine(build_config({"store": str(store)}))
    started = time.perf_counter()
    engine.census()
    return time.perf_counter() - started


def python_start() -> float:
    """Return the seconds the interpreter needs to import storewarden's CLI and exit."""
    return timed([sys.executable, "-c", "import storewarden.cli"])


def census_section(work: Path, versions: int, bentoml: list[str] | None) -> list[Row]:
    """Cold and warm census, plan, du -sb and bentoml models list on one generated store.

    Cold: no state directory, so no census cache (each run reads every
    descriptor and walks every file). Warm: a restart with the state kept
    (the cache is filled by a first run, then reused).
    """
    store = work / "census-store"
    names = max(1, versions // 100)
    made = generate_store(
        store,
        names=names,
        versions_per_name=versions // names,
        files_per_version=4,
        bytes_per_file=4096,
        now=NOW,
    )
    env = {**os.environ, "BENTOML_HOME": str(store)}
    label = f"{made.version_count} versions x 4 files"
    logs.configure(store=store, stream=open(os.devnull, "w"))  # noqa: SIM115 - for this run
    subprocess.run(["du", "-sb", str(store)], check=True, stdout=subprocess.DEVNULL)  # warm cache
    du = best_of(5, lambda: timed(["du", "-sb", str(store)]))
    status_command = storewarden("status", "--json", "--store", str(store))
    cold = best_of(3, lambda: timed(status_command, env))
    plan = best_of(3, lambda: timed(storewarden("plan", "--json", "--store", str(store)), env))
    cold_inside = best_of(3, lambda: in_process_census(store))
    # As a daemon or a prune leaves it: the warden's own (marked) state directory with
    # the census cache in it. A read-only status never writes into the store.
    (store / ".storewarden").mkdir()
    (store / ".storewarden" / STATE_MARKER).touch()
    in_process_census(store)  # an Engine that may write: fills the census cache
    warm = best_of(3, lambda: timed(status_command, env))
    warm_inside = best_of(3, lambda: in_process_census(store))
    start = best_of(3, python_start)
    bare = best_of(5, lambda: timed([sys.executable, "-c", "pass"]))
    version = best_of(5, lambda: timed(storewarden("--version"), env))
    # A status's fixed cost: start-up, config and an empty store's census and plan.
    empty = work / "census-empty-store"
    (empty / "models").mkdir(parents=True)
    fixed = best_of(3, lambda: timed(storewarden("status", "--json", "--store", str(empty))))
    rows = [Row("census", f"du -sb ({label})", f"{du:.3f} s")]
    bento = None
    if bentoml is not None:
        bento = best_of(2, lambda: timed([*bentoml, "models", "list", "-o", "json"], env))
        rows.append(Row("census", "bentoml models list -o json", f"{bento:.3f} s"))
    rows.append(Row("census", "python: import storewarden.cli and exit", f"{start:.3f} s"))
    rows.append(
        Row(
            "census",
            "storewarden --version",
            f"{version:.3f} s",
            baseline=f"python -c pass {bare:.3f} s",
            ratio=f"{version / bare:.1f}x python -c pass",
        )
    )
    rows.append(
        Row(
            "census",
            "storewarden status --json on an empty store (its fixed cost)",
            f"{fixed:.3f} s",
            baseline=f"du {du:.3f} s",
            ratio=f"{fixed / du:.1f}x du",
        )
    )
    measures = (
        ("storewarden status --json, cold", cold, "<= 5x du, >= 10x faster than bentoml"),
        ("storewarden plan --json, cold", plan, "well under bentoml (issue 2)"),
        ("storewarden status --json, warm (state kept)", warm, "<= 2x du"),
        ("census in-process, cold", cold_inside, "<= 5x du"),
        ("census in-process, warm (state kept)", warm_inside, "<= 2x du"),
    )
    for measure, seconds, target in measures:
        rows.append(
            Row(
                "census",
                measure,
                f"{seconds:.3f} s",
                baseline=f"du {du:.3f} s" + (f", bentoml {bento:.2f} s" if bento else ""),
                ratio=f"{seconds / du:.1f}x du"
                + (f", {bento / seconds:.0f}x faster than bentoml" if bento else ""),
                target=target,
            )
        )
    return rows


def engine_prune(store: Path, config: Mapping[str, object]) -> float:
    """Run one prune cycle in this process (as the daemon does); return its seconds."""
    logs.configure(store=store, stream=open(os.devnull, "w"))  # noqa: SIM115 - for this run
    engine = Engine(build_config({"store": str(store), **config}))
    started = time.perf_counter()
    engine.cycle(recover=True)
    return time.perf_counter() - started


def prune_section(
    work: Path, gib: float, per_file: int = 1024 * 1024, rounds: int = 3
) -> list[Row]:
    """Throughput of a prune against rm -rf of the same directories.

    All run on identical copies in a tmpfs (this VM's ext4 timings swing by
    4x from one minute to the next), in rotating order; the best round of each
    counts. ``storewarden prune`` is the whole command (Python start-up,
    census, plan, in-use scan, re-check, crash-safe removal); the in-process
    cycle is what the running daemon pays for the same work.
    """
    files = 4
    total_versions = max(2, int(gib * 2**30 / (files * per_file)))
    names = min(16, total_versions)
    mount = work / f"prune-tmpfs-{per_file}"
    mount.mkdir()
    size_mib = int(gib * 1024 * 4 + 256)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)], check=True
    )
    policy = {
        "trigger": {"max_store_size": 0},
        "protect": {"keep_latest": False, "keep_last": 0, "min_age": 0, "settle": 0},
    }
    times: dict[str, list[float]] = {"rm": [], "cli": [], "engine": []}
    count = left = size = 0
    try:
        template = mount / "template"
        generate_store(
            template,
            names=names,
            versions_per_name=max(1, total_versions // names),
            files_per_version=files,
            bytes_per_file=per_file,
            now=NOW,
        )
        config = work / f"prune-{per_file}.yaml"
        config.write_text(json.dumps(policy))
        size = int(
            subprocess.run(
                ["du", "-sb", str(template / "models")], check=True, capture_output=True, text=True
            ).stdout.split()[0]
        )
        # The command's fixed cost: start-up, config, recovery, census and plan of a
        # store with nothing in it. Against rm -rf's whole time, it bounds the ratio.
        empty = mount / "empty-store"
        (empty / "models").mkdir(parents=True)
        fixed = best_of(
            rounds,
            partial(timed, storewarden("prune", "--config", str(config), "--store", str(empty))),
        )
        for round_number in range(rounds):
            copies = {kind: mount / f"by-{kind}" for kind in times}
            for copy in copies.values():
                subprocess.run(["cp", "-a", str(template), str(copy)], check=True)
            versions = [
                str(path) for path in (copies["rm"] / "models").glob("*/*") if path.is_dir()
            ]
            count = len(versions)
            runs: dict[str, Callable[[], float]] = {
                "rm": partial(timed, ["rm", "-rf", *versions]),
                "cli": partial(
                    timed,
                    storewarden("prune", "--config", str(config), "--store", str(copies["cli"])),
                ),
                "engine": partial(engine_prune, copies["engine"], policy),
            }
            order = list(times)
            order = order[round_number % 3 :] + order[: round_number % 3]
            for kind in order:
                times[kind].append(runs[kind]())
            left = len([path for path in (copies["cli"] / "models").glob("*/*") if path.is_dir()])
            for copy in copies.values():
                shutil.rmtree(copy)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    rate = {kind: size / min(values) / 2**20 for kind, values in times.items()}
    shape = f"{count} versions of {files * per_file / 2**20:.0f} MiB ({size / 2**30:.2f} GiB)"
    rm_seconds = min(times["rm"])
    return [
        Row("prune", f"rm -rf, {shape}, tmpfs, best of {rounds}", f"{rate['rm']:.0f} MiB/s"),
        Row(
            "prune",
            "storewarden prune command on an empty store (its fixed cost)",
            f"{fixed:.3f} s",
            baseline=f"rm -rf of all {count}: {rm_seconds:.3f} s",
            ratio=f"best possible {rm_seconds / (rm_seconds + fixed):.2f}x rm -rf",
        ),
        Row(
            "prune",
            f"storewarden prune command, same data ({left} left)",
            f"{rate['cli']:.0f} MiB/s",
            baseline=f"rm -rf {rate['rm']:.0f} MiB/s",
            ratio=f"{rate['cli'] / rate['rm']:.2f}x rm -rf",
            target=">= 0.8x rm -rf",
        ),
        Row(
            "prune",
            "engine prune cycle in-process (the daemon), same data",
            f"{rate['engine']:.0f} MiB/s",
            baseline=f"rm -rf {rate['rm']:.0f} MiB/s",
            ratio=f"{rate['engine'] / rate['rm']:.2f}x rm -rf",
            target=">= 0.8x rm -rf",
        ),
    ]


@contextlib.contextmanager
def running_daemon(store: Path, log: Path | None = None, **config: object) -> Iterator[Daemon]:
    """Run a Daemon in a thread of this process on ``store``; stop it on exit."""
    stream = open(log or os.devnull, "w")  # noqa: SIM115 - lives as long as the run
    logs.configure(store=store, stream=stream)
    daemon = Daemon(build_config({"store": str(store), **config}))
    thread = threading.Thread(target=daemon.run, name="bench-daemon")
    thread.start()
    try:
        if not daemon.ready.wait(600):
            raise RuntimeError("daemon never became ready")
        time.sleep(1.0)  # let the first check run
        yield daemon
    finally:
        daemon.stop()
        thread.join()
        stream.close()


@dataclass(frozen=True)
class DaemonFigures:
    """One ``storewarden run`` process measured on one store."""

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


def idle_cpu_percent(process: psutil.Process, seconds: float) -> float:
    """Return the share of one core ``process`` used over the next ``seconds``."""
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    return 100.0 * ((after.user + after.system) - (before.user + before.system)) / seconds


def daemon_process_figures(
    store: Path, *, observer: str, settle: float, idle_seconds: float
) -> DaemonFigures:
    """Run ``storewarden run`` on ``store``; measure it once ``settle`` has passed.

    Generated versions were written seconds ago, so each is "settling" (its
    ctime is fresh) for the default ``protect.settle`` of 10 minutes; the
    daemon here runs with ``settle`` seconds and is measured after that, in
    the state of a store whose versions were saved longer ago, as on a build
    agent. Nothing is pruned (the high mark is 99.9 %).
    """
    config = store.parent / f"{store.name}-{observer}.yaml"
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
    log = store.parent / f"{store.name}-{observer}-daemon.log"
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(
            storewarden("run", "--config", str(config)),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=command_environment(),
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
        cpu = idle_cpu_percent(handle, idle_seconds)
        return DaemonFigures(
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


WATCHDOG_POLLING = """
import sys, time
from watchdog.events import FileSystemEventHandler
from watchdog.observers.polling import PollingObserver
observer = PollingObserver(timeout=float(sys.argv[2]))
for kind in ("models", "bentos"):
    observer.schedule(FileSystemEventHandler(), f"{sys.argv[1]}/{kind}", recursive=True)
observer.start()
print("ready", flush=True)
time.sleep(3600)
"""


def watchdog_polling_figures(
    store: Path, interval: float, idle_seconds: float
) -> tuple[float, float]:
    """Run watchdog's PollingObserver on ``store`` as storewarden did; return (RSS MiB, CPU %)."""
    process = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG_POLLING, str(store), str(interval)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if process.stdout is None or not process.stdout.readline():
            raise RuntimeError("watchdog's PollingObserver did not start")
        time.sleep(interval + 1.0)  # past the first snapshot
        handle = psutil.Process(process.pid)
        cpu = idle_cpu_percent(handle, idle_seconds)
        return handle.memory_info().rss / 2**20, cpu
    finally:
        process.kill()
        process.wait()


@contextlib.contextmanager
def max_user_watches(limit: int) -> Iterator[int]:
    """Lower ``fs.inotify.max_user_watches`` to ``limit`` (as root); put it back on exit."""
    path = Path("/proc/sys/fs/inotify/max_user_watches")
    before = int(path.read_text())
    path.write_text(str(limit))
    try:
        yield before
    finally:
        path.write_text(str(before))


def daemon_section(
    work: Path, versions: int, big_versions: int, idle_seconds: float, settle: float = 5.0
) -> list[Row]:
    """Daemon start-up, memory and idle CPU by observer; the cost of a check with nothing changed.

    Each store is measured with inotify, with polling (next to watchdog's
    PollingObserver at the interval storewarden gave it before, 15 s by
    default), and with inotify under the ``fs.inotify.max_user_watches`` of
    8,192 that kernels before 5.11 default to (set for the run, restored).
    """
    rows = []
    empty = work / "daemon-store-empty"
    (empty / "models").mkdir(parents=True)
    floor = daemon_process_figures(empty, observer="auto", settle=0, idle_seconds=idle_seconds)
    rows.append(
        Row(
            "daemon",
            "empty store: resident memory, idle CPU (the floor)",
            f"{floor.rss_mib:.0f} MiB, {floor.idle_cpu_percent:.2f} %",
        )
    )
    for count, sparse in ((versions, False), (big_versions, True)):
        store = work / f"daemon-store-{count}"
        names = max(1, count // 100)
        generate_store(
            store,
            names=names,
            versions_per_name=count // names,
            files_per_version=4,
            bytes_per_file=4096,
            now=NOW,
            sparse=sparse,
        )
        time.sleep(settle)  # every version now written longer ago than `settle`
        cpu_target = "< 0.5 %" if count <= 5000 else "< 2 %"
        figures = {
            observer: daemon_process_figures(
                store, observer=observer, settle=settle, idle_seconds=idle_seconds
            )
            for observer in ("inotify", "polling")
        }
        with max_user_watches(8192):
            limited = daemon_process_figures(
                store, observer="auto", settle=settle, idle_seconds=idle_seconds
            )
        old_rss, old_cpu = watchdog_polling_figures(store, 15.0, idle_seconds)
        inotify, polling = figures["inotify"], figures["polling"]
        shape = f"{count:,} versions"
        rows += [
            Row(
                "daemon",
                f"start to ready (cold census), {shape}",
                f"{inotify.ready_seconds:.2f} s",
            ),
            Row(
                "daemon",
                f"inotify: watches, threads, {shape}",
                f"{inotify.watches:,} watches, {inotify.threads} threads",
                baseline=f"{count + names + 3:,} directories",
                ratio=f"{inotify.watches / (count + names + 3):.3f}x",
            ),
            Row(
                "daemon",
                f"inotify: resident memory, {shape}",
                f"{inotify.rss_mib:.0f} MiB",
                baseline=f"empty store {floor.rss_mib:.0f} MiB",
                ratio=f"+{inotify.rss_mib - floor.rss_mib:.0f} MiB",
                target="< 100 MB at 50,000",
            ),
            Row(
                "daemon",
                f"inotify: idle CPU over {idle_seconds:.0f} s, {shape}",
                f"{inotify.idle_cpu_percent:.2f} % of a core",
                baseline=f"empty store {floor.idle_cpu_percent:.2f} %",
                target=cpu_target,
            ),
            Row(
                "daemon",
                f"polling every 2 s: idle CPU over {idle_seconds:.0f} s, {shape}",
                f"{polling.idle_cpu_percent:.2f} % of a core ({polling.observer})",
                baseline=f"watchdog PollingObserver every 15 s {old_cpu:.2f} %",
                ratio=(
                    f"{old_cpu / polling.idle_cpu_percent:.0f}x less"
                    if polling.idle_cpu_percent > 0 and old_cpu > 0
                    else ""
                ),
                target=cpu_target,
            ),
            Row(
                "daemon",
                f"polling: resident memory, {shape}",
                f"{polling.rss_mib:.0f} MiB",
                baseline=f"watchdog PollingObserver alone {old_rss:.0f} MiB",
                target="< 100 MB at 50,000",
            ),
            Row(
                "daemon",
                f"max_user_watches=8192: observer, watches, idle CPU, {shape}",
                f"{limited.observer}, {limited.watches:,} watches,"
                f" {limited.idle_cpu_percent:.2f} %",
                baseline=f"unlimited: {inotify.watches:,} watches",
                target="inotify kept",
            ),
        ]
        with running_daemon(store, protect={"settle": f"{settle}s"}) as daemon:
            time.sleep(settle)
            samples = []
            for _ in range(200):
                started = time.perf_counter()
                daemon.check()
                samples.append(time.perf_counter() - started)
        rows.append(
            Row(
                "daemon",
                f"check, nothing changed, {shape}",
                f"{statistics.median(samples) * 1000:.2f} ms (median of 200)",
                target="< 5 ms at 50,000",
            )
        )
        shutil.rmtree(store)
    return rows


def first_removal_after(log: Path, seen: int, crossed: datetime) -> float:
    """Wait for a new version_removed line in ``log``; return seconds from ``crossed`` to it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if '"version_removed"' in line]
        if len(lines) > seen:
            stamp = datetime.fromisoformat(json.loads(lines[seen])["timestamp"])
            return (stamp - crossed).total_seconds()
        time.sleep(0.01)
    raise RuntimeError("no removal within 120 s")


def delay_section(work: Path, observer: str = "auto") -> list[Row]:
    """Delay from the write that crosses the high mark to the first removal (default schedule)."""
    mount = work / f"delay-tmpfs-{observer}"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(mount)], check=True)
    try:
        store = mount / "bentoml"
        generate_store(
            store,
            names=4,
            versions_per_name=10,
            files_per_version=1,
            bytes_per_file=2 * 2**20,
            now=NOW - timedelta(days=1),
        )
        delays = []
        log = work / f"delay-daemon-{observer}.log"
        # Generated versions were written seconds ago, so their ctime is fresh: settle
        # and min_age are set to 0 here; the schedule (check_interval 60 s, debounce
        # 1 s) stays at its defaults, so only the watcher can explain a fast reaction.
        with running_daemon(
            store, log, protect={"settle": 0, "min_age": 0}, schedule={"observer": observer}
        ):
            block = b"\0" * 2**20
            for attempt in range(3):
                seen = log.read_text().count('"version_removed"')
                filler = store / "models" / "filler" / f"fill{attempt}x"
                filler.mkdir(parents=True)
                crossed = None
                for index in range(200):
                    (filler / f"part{index}").write_bytes(block)
                    if psutil.disk_usage(str(store)).percent >= 85:
                        crossed = datetime.now(tz=UTC)
                        break
                if crossed is None:
                    raise RuntimeError("never crossed the high mark")
                delays.append(first_removal_after(log, seen, crossed))
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    return [
        Row(
            "daemon",
            f"crossing write -> first removal, {observer} (default schedule, 3 runs)",
            f"{statistics.median(delays):.2f} s median, {max(delays):.2f} s max",
            target="< 2 s",
        )
    ]


def print_table(rows: list[Row]) -> None:
    """Print the rows as a Markdown table."""
    header = ("section", "measure", "value", "baseline", "ratio", "target")
    table = [
        header,
        *((r.section, r.measure, r.value, r.baseline, r.ratio, r.target) for r in rows),
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    for number, line in enumerate(table):
        print(
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            + " |"
        )
        if number == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="census,prune,daemon,delay")
    parser.add_argument("--versions", type=int, default=5000)
    parser.add_argument("--big-versions", type=int, default=50000)
    parser.add_argument("--prune-gib", type=float, default=1.0)
    parser.add_argument(
        "--prune-rounds", type=int, default=3, help="rounds of the prune section (the best counts)"
    )
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--bentoml", help="path of a `bentoml` executable (default: beside python)")
    parser.add_argument(
        "--workdir", type=Path, help="where to generate stores (default: a temp dir)"
    )
    arguments = parser.parse_args(argv)
    sections = set(arguments.sections.split(","))
    compile_package()
    work = Path(tempfile.mkdtemp(prefix="storewarden-bench-", dir=arguments.workdir))
    rows: list[Row] = []
    try:
        if "census" in sections:
            rows += census_section(work, arguments.versions, bentoml_command(arguments.bentoml))
        if "prune" in sections:
            rounds = arguments.prune_rounds
            rows += prune_section(work, arguments.prune_gib, rounds=rounds)
            rows += prune_section(work, arguments.prune_gib * 2, per_file=16 * 2**20, rounds=rounds)
        if "daemon" in sections:
            rows += daemon_section(
                work, arguments.versions, arguments.big_versions, arguments.idle_seconds
            )
        if "delay" in sections:
            rows += delay_section(work)
            rows += delay_section(work, "polling")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"storewarden from {PACKAGE}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, "
        f"{datetime.now(tz=UTC):%Y-%m-%d}"
    )
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The daemon's metrics, scraped over HTTP and read from the textfile, against the real store.

Each test runs a :class:`Daemon` in a thread of this process (its own
registry, an ephemeral loopback port) on a store under tmp_path or on a
size-limited tmpfs, and compares what a scraper reads with the census,
psutil and the audit trail.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from storewarden.config import Config, build_config
from storewarden.daemon import Daemon
from storewarden.metrics import write_textfile
from storewarden.notify import SystemdNotifier
from storewarden.store import census
from tests.conftest import Audit
from tests.promtext import Samples, parse, scrape
from tests.storebuilder import make_version, point_latest
from tests.waiting import wait_until

WAIT = 30.0  # upper bound for the daemon to react; it usually needs well under a second
KIB = 1024
MIB = 1024 * KIB


def daemon_config(store: Path, **sections: Any) -> Config:
    """A config for tests: fresh versions prunable at once, checks every second, metrics on."""
    data: dict[str, Any] = {
        "store": str(store),
        "protect": {"min_age": "0s", "settle": "0s", "keep_last": 1},
        "schedule": {"check_interval": "1s", "reconcile_interval": "10s", "debounce": "0.1s"},
        "metrics": {"port": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return build_config(data)


@contextlib.contextmanager
def running(config: Config) -> Iterator[Daemon]:
    """Run a daemon in a thread until the block ends; fail if it is not ready in WAIT seconds."""
    daemon = Daemon(config, notifier=SystemdNotifier(None))
    thread = threading.Thread(target=daemon.run, name="test-daemon")
    thread.start()
    try:
        if not daemon.ready.wait(WAIT):
            pytest.fail("the daemon never got ready")
        yield daemon
    finally:
        daemon.stop()
        thread.join(WAIT)
        assert not thread.is_alive(), "the daemon did not stop"


def endpoint(daemon: Daemon) -> Callable[[], Samples]:
    """Return a function that scrapes the daemon's endpoint."""
    port = daemon.metrics.port
    assert port is not None, "the daemon serves no metrics"
    return lambda: scrape(port)


def checked(samples: Samples) -> bool:
    """Return whether a check has run (and so every gauge holds a measurement)."""
    return samples.value("storewarden_last_check_timestamp_seconds") > 0


def series(store: Path, name: str, count: int, size: int, *, days: int = 30) -> None:
    """Save ``count`` versions of ``name``, oldest first, and point latest at the newest."""
    base = datetime.now(tz=UTC) - timedelta(days=days)
    for index in range(count):
        make_version(store, name, f"v{index}x", created=base + timedelta(hours=index), size=size)
    point_latest(store, name, f"v{count - 1}x")


def store_totals(store: Path) -> dict[str, tuple[int, int]]:
    """Return (bytes, versions) by kind, as a fresh census counts them."""
    snapshot = census(store, ("models", "bentos"))
    return {
        kind: (
            sum(record.bytes for record in snapshot.versions if record.kind == kind),
            sum(1 for record in snapshot.versions if record.kind == kind),
        )
        for kind in ("models", "bentos")
    }


# -- the endpoint -------------------------------------------------------------------------


def test_the_endpoint_reports_the_store_as_a_census_measures_it(store: Path) -> None:
    series(store, "iris", 3, 64 * KIB)
    series(store, "bert", 2, 200 * KIB)
    make_version(store, "svc", "b1x", kind="bentos", size=32 * KIB)

    with running(daemon_config(store)) as daemon:
        samples = wait_until(endpoint(daemon), checked, "a finished check")

    totals = store_totals(store)
    for kind, (expected_bytes, expected_versions) in totals.items():
        assert samples.value("storewarden_store_bytes", kind=kind) == expected_bytes
        assert samples.value("storewarden_store_versions", kind=kind) == expected_versions
    assert totals["models"][1] == 5
    assert samples.value("storewarden_info", version="0.1.0") == 1
    assert samples.stores == {str(store)}


def test_the_endpoint_follows_a_version_saved_while_the_daemon_runs(store: Path) -> None:
    series(store, "iris", 2, 64 * KIB)

    with running(daemon_config(store)) as daemon:
        read = endpoint(daemon)
        wait_until(read, checked, "a finished check")
        make_version(store, "iris", "v9x", size=512 * KIB, created=datetime.now(tz=UTC))
        samples = wait_until(
            read,
            lambda samples: samples.value("storewarden_store_versions", kind="models") == 3,
            "the new version",
        )

    assert (
        samples.value("storewarden_store_bytes", kind="models")
        == (store_totals(store)["models"][0])
    )


def test_a_forced_prune_is_counted_by_reason_with_the_bytes_it_freed(
    store: Path, audit: Audit
) -> None:
    series(store, "iris", 5, 64 * KIB)
    series(store, "bert", 4, 64 * KIB, days=10)
    budget = 6 * 64 * KIB  # room for five versions and their descriptors
    config = daemon_config(
        store,
        trigger={"max_store_size": budget},
        rules=[{"match": "bert", "max_versions": 3}],
    )

    with running(config) as daemon:
        samples = wait_until(
            endpoint(daemon),
            lambda samples: (
                samples.value("storewarden_last_prune_timestamp_seconds") > 0
                and samples.value("storewarden_removals_total", reason="max_store_size") > 0
            ),
            "a prune",
        )

    removed = audit.named("version_removed")
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for event in removed:
        by_reason.setdefault(event["reason"], []).append(event)
    assert set(by_reason) == {"max_store_size", "max_versions"}
    for reason, events in by_reason.items():
        assert samples.value("storewarden_removals_total", reason=reason) == len(events)
        assert samples.value("storewarden_bytes_freed_total", reason=reason) == sum(
            event["bytes"] for event in events
        )
    assert samples.value("storewarden_removals_total", reason="max_versions") == 1  # bert:v0x
    assert samples.value("storewarden_last_prune_target_reached") == 1
    assert samples.value("storewarden_last_prune_shortfall_bytes") == 0
    assert samples.value("storewarden_prune_duration_seconds_count") == 1
    finished = audit.named("prune_finished")[0]
    assert samples.value("storewarden_prune_duration_seconds_sum") == pytest.approx(
        finished["seconds"], abs=0.001
    )
    stamp = samples.value("storewarden_last_prune_timestamp_seconds")
    logged = datetime.fromisoformat(finished["timestamp"]).timestamp()
    assert logged - 5 <= stamp <= time.time()
    assert samples.value("storewarden_protected_versions", reason="latest") == 2
    models_bytes, models_versions = store_totals(store)["models"]
    assert samples.value("storewarden_store_bytes", kind="models") == models_bytes <= budget
    assert samples.value("storewarden_store_versions", kind="models") == models_versions
    assert models_versions == 9 - len(removed)


def test_a_prune_blocked_by_pins_reports_its_target_missed_and_why(store: Path) -> None:
    series(store, "iris", 3, 64 * KIB)
    config = daemon_config(
        store, trigger={"max_store_size": 64 * KIB}, protect={"pins": ["iris:*"]}
    )

    with running(config) as daemon:
        samples = wait_until(
            endpoint(daemon),
            lambda samples: samples.value("storewarden_last_prune_timestamp_seconds") > 0,
            "a prune",
        )

    assert samples.value("storewarden_last_prune_target_reached") == 0
    assert samples.value("storewarden_last_prune_shortfall_bytes") == (
        store_totals(store)["models"][0] - 64 * KIB
    )
    assert samples.value("storewarden_protected_versions", reason="pinned") == 3
    assert samples.value("storewarden_removals_total", reason="max_store_size") == 0


@pytest.mark.tmpfs
def test_the_used_ratio_is_the_filesystems_as_psutil_measures_it(
    tmpfs: Callable[[str], Path],
) -> None:
    store = tmpfs("64m")
    series(store, "iris", 2, 8 * MIB)

    def psutil_ratio() -> float:
        disk = psutil.disk_usage(str(store))
        return disk.used / (disk.used + disk.free)

    def matches_psutil(samples: Samples) -> bool:
        # A check that ran while a file was half written read another ratio; the next
        # check (the write brings one forward) must then agree with psutil.
        ratio = samples.value("storewarden_filesystem_used_ratio")
        return checked(samples) and abs(ratio - psutil_ratio()) < 1e-4

    with running(daemon_config(store)) as daemon:
        read = endpoint(daemon)
        first = wait_until(read, matches_psutil, "the ratio psutil measures")
        assert 0.2 < first.value("storewarden_filesystem_used_ratio") < 0.35
        make_version(store, "iris", "v9x", size=20 * MIB, created=datetime.now(tz=UTC))
        later = wait_until(
            read,
            lambda samples: (
                matches_psutil(samples) and samples.value("storewarden_filesystem_used_ratio") > 0.5
            ),
            "the ratio psutil measures after a 20 MiB save",
        )
    disk = psutil.disk_usage(str(store))
    assert later.value("storewarden_filesystem_size_bytes") == disk.total
    assert later.value("storewarden_filesystem_free_bytes") == disk.free


def test_a_failing_check_is_counted_as_an_error(store: Path, audit: Audit) -> None:
    series(store, "iris", 2, 64 * KIB)

    with running(daemon_config(store)) as daemon:
        read = endpoint(daemon)
        wait_until(read, checked, "a finished check")
        moved = store.with_name("elsewhere")
        store.rename(moved)  # the store vanishes: measuring its filesystem fails
        samples = wait_until(
            read,
            lambda samples: samples.value("storewarden_errors_total", event="check_failed") > 0,
            "a check_failed error",
        )

    assert audit.named("check_failed")
    assert samples.value("storewarden_errors_total", event="check_failed") <= len(
        audit.named("check_failed")
    )


def test_the_endpoint_listens_on_loopback_only_and_closes_when_the_daemon_stops(
    store: Path, audit: Audit
) -> None:
    with running(daemon_config(store)) as daemon:
        port = daemon.metrics.port
        assert port is not None
        scrape(port)
    listening = audit.named("metrics_listening")
    assert [(event["address"], event["port"]) for event in listening] == [("127.0.0.1", port)]
    with pytest.raises(OSError, match="refused"):
        scrape(port)
    # Not on the machine's other addresses: the default binds 127.0.0.1 alone.
    connections = [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port]
    assert all(c.status != psutil.CONN_LISTEN for c in connections)


def test_a_taken_port_is_logged_and_the_daemon_prunes_regardless(store: Path, audit: Audit) -> None:
    series(store, "iris", 3, 64 * KIB)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        config = daemon_config(store, metrics={"port": port}, trigger={"max_store_size": 1})
        with running(config) as daemon:
            assert daemon.metrics.port is None
            deadline = time.monotonic() + WAIT
            while not audit.named("prune_finished") and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        taken.close()

    failed = audit.named("metrics_failed")
    assert [event["target"] for event in failed] == [f"http://127.0.0.1:{port}/metrics"]
    assert "Address already in use" in failed[0]["error"]
    assert audit.named("version_removed"), "the daemon stopped pruning"


# -- the textfile -------------------------------------------------------------------------


@pytest.fixture
def umask_0077() -> Iterator[None]:
    """Run with the umask the systemd unit sets (UMask=0077)."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


def test_the_textfile_holds_what_the_endpoint_serves_and_node_exporter_can_read_it(
    store: Path, tmp_path: Path, umask_0077: None
) -> None:
    series(store, "iris", 3, 64 * KIB)
    collector = tmp_path / "textfile_collector"
    collector.mkdir()
    textfile = collector / "storewarden.prom"

    with running(daemon_config(store, metrics={"textfile": str(textfile)})) as daemon:
        wait_until(endpoint(daemon), checked, "a finished check")
        from_file = wait_until(
            lambda: parse(textfile.read_text()) if textfile.exists() else parse(""),
            lambda samples: bool(samples.values) and checked(samples),
            "a written textfile",
        )

    expected_bytes, expected_versions = store_totals(store)["models"]
    assert from_file.value("storewarden_store_bytes", kind="models") == expected_bytes
    assert from_file.value("storewarden_store_versions", kind="models") == expected_versions
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644  # world-readable despite the umask
    assert [entry.name for entry in collector.iterdir()] == ["storewarden.prom"]


def test_the_textfile_is_replaced_whole_while_checks_run(store: Path, tmp_path: Path) -> None:
    series(store, "iris", 2, 64 * KIB)
    textfile = tmp_path / "storewarden.prom"
    config = daemon_config(
        store, metrics={"port": None, "textfile": str(textfile)}, schedule={"debounce": 0}
    )
    stop_writing = threading.Event()

    def keep_changing_the_store() -> None:
        # Every change brings a check forward, so the file is rewritten many times a second.
        scratch = store / "models" / "iris" / "v0x" / "scratch"
        count = 0
        while not stop_writing.is_set():
            scratch.write_bytes(b"x" * (count % 4096))
            count += 1
            time.sleep(0.005)

    with running(config):
        writer = threading.Thread(target=keep_changing_the_store, name="test-writer")
        writer.start()
        try:
            seen: set[str] = set()
            reads = 0
            deadline = time.monotonic() + WAIT
            while len(seen) < 20 and time.monotonic() < deadline:
                try:
                    text = textfile.read_text()
                except FileNotFoundError:
                    continue  # not written yet
                reads += 1
                assert text.endswith("\n"), f"read {reads} saw a cut-off file:\n{text[-200:]}"
                names = {name for name, _labels in parse(text).values}
                assert "storewarden_last_check_timestamp_seconds" in names, text
                assert "storewarden_errors_total" in names, text
                seen.add(text)
        finally:
            stop_writing.set()
            writer.join()

    assert len(seen) >= 20, f"only {len(seen)} versions of the file in {reads} reads"
    assert [entry.name for entry in tmp_path.iterdir() if "prom" in entry.name] == [
        "storewarden.prom"
    ]


def test_an_unwritable_textfile_is_logged_once_counted_always_and_recovers(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    series(store, "iris", 2, 64 * KIB)
    collector = tmp_path / "not-yet"
    textfile = collector / "storewarden.prom"

    with running(daemon_config(store, metrics={"textfile": str(textfile)})) as daemon:
        read = endpoint(daemon)
        wait_until(
            read,
            lambda samples: samples.value("storewarden_errors_total", event="metrics_failed") >= 2,
            "two failed writes",
        )
        assert len(audit.named("metrics_failed")) == 1
        collector.mkdir()
        deadline = time.monotonic() + WAIT
        while not textfile.exists():
            assert time.monotonic() < deadline, "the textfile was never written"
            time.sleep(0.05)

    failed = audit.named("metrics_failed")[0]
    assert failed["target"] == str(textfile)
    assert "FileNotFoundError" in failed["error"]
    assert (
        parse(textfile.read_text()).value("storewarden_errors_total", event="metrics_failed") >= 2
    )


def test_a_reader_never_sees_half_of_a_textfile_being_replaced(tmp_path: Path) -> None:
    # Large contents make a non-atomic write (truncate, then write) visible to a reader.
    path = tmp_path / "big.prom"
    contents = [bytes([letter]) * (4 * MIB) + b"\n" for letter in b"ab"]
    write_textfile(path, contents[0])
    done = threading.Event()

    def replace_repeatedly() -> None:
        for index in range(40):
            write_textfile(path, contents[index % 2])
        done.set()

    writer = threading.Thread(target=replace_repeatedly, name="test-textfile-writer")
    writer.start()
    reads = 0
    try:
        while not done.is_set():
            assert path.read_bytes() in contents, f"read {reads} saw a partial file"
            reads += 1
    finally:
        writer.join()
    assert reads > 0
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["big.prom"]


def test_a_failed_textfile_write_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    path = tmp_path / "storewarden.prom"
    path.mkdir()  # renaming a file over a directory fails

    with pytest.raises(IsADirectoryError):
        write_textfile(path, b"# metrics\n")

    assert [entry.name for entry in tmp_path.iterdir()] == ["storewarden.prom"]

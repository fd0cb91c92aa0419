"""A flood of events: 10,000 versions appear at once under a running daemon.

The daemon runs in this process (its index is the thing to compare), with the
shortest reconcile interval the config allows. The versions are generated
into a staging directory on the same filesystem (bench/genstore.py), then
renamed into the store one by one, as fast as rename goes. After the next
reconcile the index must match a fresh census exactly, the process must not
have grown without bound, and the checks must have gone on all along.

An observer that cannot be set up degrades with a warning, not a failure:
the polling observer by config, and an inotify watcher whose every watch
fails as at the kernel's watch limit, the root's included (injected: the
limit itself is a system-wide sysctl a test must not touch). A watch
refused below the kinds is no degradation (tests/integration/test_watcher.py).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from storewarden import watcher as watcher_module
from storewarden.config import build_config
from storewarden.daemon import Daemon
from storewarden.engine import Engine
from storewarden.store import Snapshot, VersionRecord, census
from storewarden.watcher import Inotify
from tests.conftest import Audit
from tests.reliability.support import genstore
from tests.storebuilder import make_version, point_latest
from tests.waiting import WAIT, wait_until

pytestmark = pytest.mark.slow

VERSIONS = 10_000
NAMES = 100
MIB = 1024 * 1024
# The daemon's own figure is < 100 MB at 50,000 versions (docs/performance.md); here the
# growth of a whole pytest process that also holds every audit line is allowed twice that.
RSS_GROWTH_LIMIT = 200 * MIB


@pytest.fixture
def run_daemon() -> Iterator[Callable[..., Daemon]]:
    """Start in-process daemons in threads; stop and join them at the end."""
    running: list[tuple[Daemon, threading.Thread]] = []

    def start(config: dict[str, Any], **arguments: Any) -> Daemon:
        daemon = Daemon(build_config(config), **arguments)
        thread = threading.Thread(target=daemon.run, name="daemon-under-test")
        thread.start()
        running.append((daemon, thread))
        if not daemon.ready.wait(WAIT):
            pytest.fail("the daemon never became ready")
        return daemon

    yield start
    for daemon, thread in running:
        daemon.stop()
        thread.join()


def config_for(store: Path, **schedule: Any) -> dict[str, Any]:
    """No pressure (the disk's real usage must not start a prune); fast jobs; debug log."""
    return {
        "store": str(store),
        "trigger": {"high_percent": 99.9, "low_percent": 99.0},
        "schedule": {
            "check_interval": "1s",
            "reconcile_interval": "10s",
            "debounce": "0.2s",
            **schedule,
        },
        "log": {"level": "debug"},
    }


def differences(indexed: VersionRecord, fresh: VersionRecord) -> tuple[str, dict[str, Any]]:
    """Return a version's path and each field the index holds otherwise, with both values."""
    return str(fresh.path), {
        field.name: (getattr(indexed, field.name), getattr(fresh, field.name))
        for field in dataclasses.fields(fresh)
        if getattr(indexed, field.name) != getattr(fresh, field.name)
    }


def stamp(event: dict[str, Any]) -> datetime:
    """Return an event's time."""
    return datetime.fromisoformat(event["timestamp"])


@pytest.mark.parametrize("observer", ["inotify", "polling"])
def test_ten_thousand_versions_at_once_are_indexed_exactly_with_bounded_memory(
    tmp_path: Path, audit: Audit, run_daemon: Callable[[dict[str, Any]], Daemon], observer: str
) -> None:
    store = tmp_path / "bentoml"
    (store / "models").mkdir(parents=True)
    staging = tmp_path / "staging"
    generated = genstore.generate_store(
        staging,
        names=NAMES,
        versions_per_name=VERSIONS // NAMES,
        files_per_version=1,
        bytes_per_file=512,
    )
    assert generated.version_count == VERSIONS
    process = psutil.Process()
    daemon = run_daemon(config_for(store, observer=observer, poll_interval="0.5s"))
    rss_before = process.memory_info().rss

    started = datetime.now(tz=UTC)
    for (kind, name), versions in generated.versions.items():
        (store / kind / name).mkdir(parents=True, exist_ok=True)
        for version in versions:
            os.rename(version.path, store / kind / name / version.version)
        os.rename(staging / kind / name / "latest", store / kind / name / "latest")
    flooded = datetime.now(tz=UTC)

    wait_until(
        lambda: any(stamp(e) > flooded for e in audit.named("reconcile_finished")),
        bool,
        "a reconcile after the flood",
    )
    with daemon._mutex:  # the index as it is between two jobs
        index = daemon.index
        assert index is not None
        fresh = census(store)
        indexed = dict(index.versions)
        pointers = dict(index.pointers)
        store_bytes = index.store_bytes
    rss_after = process.memory_info().rss
    wait_until(
        lambda: sum(stamp(e) > flooded for e in audit.named("check")) >= 3,
        bool,
        "three checks after the flood",
    )

    expected = {record.path: record for record in fresh.versions}
    assert len(expected) == VERSIONS
    differing = [path for path in expected if indexed.get(path) != expected[path]]
    assert set(indexed) == set(expected)
    assert [differences(indexed[path], expected[path]) for path in differing] == []
    assert pointers == dict(fresh.pointers)
    assert store_bytes == fresh.store_bytes
    assert rss_after - rss_before < RSS_GROWTH_LIMIT, (
        f"grew {(rss_after - rss_before) / MIB:.0f} MiB"
    )
    assert audit.named("check_failed") == []
    assert (flooded - started).total_seconds() < 30, "not a flood: the renames were slow"


class CountingEngine(Engine):
    """The real engine, counting its full censuses."""

    censuses = 0

    def census(self) -> Snapshot:
        CountingEngine.censuses += 1
        return super().census()


def test_the_daemon_indexes_the_census_its_recovery_took(
    tmp_path: Path, run_daemon: Callable[..., Daemon]
) -> None:
    # A second census at start doubled the start's time and peak memory (issue 13).
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1")
    make_version(store, "iris", "v2", set_latest=True)
    CountingEngine.censuses = 0

    daemon = run_daemon(config_for(store), engine_factory=CountingEngine)

    with daemon._mutex:
        assert daemon.index is not None
        assert sorted(record.version for record in daemon.index.versions.values()) == ["v1", "v2"]
    assert CountingEngine.censuses == 1


# -- observers that cannot be set up ------------------------------------------------------------


def at_the_watch_limit(self: Inotify, path: str, mask: int) -> None:
    """Refuse every watch, as inotify does at fs.inotify.max_user_watches."""
    raise OSError(errno.ENOSPC, "inotify watch limit reached", path)


@pytest.mark.parametrize("how", ["configured-polling", "inotify-at-its-watch-limit"])
def test_an_observer_that_cannot_watch_degrades_with_a_warning_and_changes_are_still_seen(
    tmp_path: Path,
    audit: Audit,
    run_daemon: Callable[[dict[str, Any]], Daemon],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    if how == "inotify-at-its-watch-limit":
        monkeypatch.setattr(watcher_module.Inotify, "add_watch", at_the_watch_limit)
    daemon = run_daemon(
        config_for(store, observer="polling" if how == "configured-polling" else "inotify")
    )

    make_version(store, "iris", "v2")
    point_latest(store, "iris", "v2")

    wait_until(
        lambda: [e["version"] for e in audit.named("version_added")] == ["v2"],
        bool,
        "v2 seen by the degraded observer",
    )
    (ready,) = audit.named("daemon_ready")
    assert ready["observer"] == "PollingWatcher"
    degraded = audit.named("observer_degraded")
    if how == "inotify-at-its-watch-limit":
        assert [(e["observer"], e["level"]) for e in degraded] == [("polling", "warning")]
        assert "watch limit" in degraded[0]["error"]
    else:
        assert degraded == []
    assert audit.named("check_failed") == []
    assert daemon.index is not None
    assert {record.version for record in daemon.index.versions.values()} == {"v1", "v2"}

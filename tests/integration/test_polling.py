"""Polling (``schedule.observer: polling``): kinds, names, pointers and settling versions only.

The daemon runs in this process with a reconcile ten minutes away, so
whatever it sees within a test was seen by polling. The cost of a poll is
read off the calls it makes: ``lstat`` of each directory and pointer it
polls, and no listing of a settled version.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from storewarden.daemon import Daemon
from storewarden.watcher import PollingWatcher
from tests.conftest import Audit
from tests.reliability.support import genstore
from tests.reliability.test_scale import run_daemon
from tests.storebuilder import make_version, point_latest
from tests.waiting import wait_until

__all__ = ["run_daemon"]  # the fixture, used by name

NAMES = 20
VERSIONS_PER_NAME = 50


def config_for(store: Path, settle: str) -> dict[str, Any]:
    """No pressure; polling every 0.2 s; reconcile too far away to help."""
    return {
        "store": str(store),
        "trigger": {"high_percent": 99.9, "low_percent": 99.0},
        "protect": {"settle": settle},
        "schedule": {
            "check_interval": "1s",
            "reconcile_interval": "10m",
            "debounce": "0.2s",
            "observer": "polling",
            "poll_interval": "0.2s",
        },
        "log": {"level": "debug"},
    }


def poller_of(daemon: Daemon) -> PollingWatcher:
    """Return the daemon's polling watcher."""
    watcher = daemon.watcher
    assert isinstance(watcher, PollingWatcher), f"not polling: {watcher}"
    return watcher


def indexed_bytes(daemon: Daemon, version: Path) -> int:
    """Return the bytes the daemon's index holds for ``version`` (-1 if it holds none)."""
    with daemon._mutex:
        record = daemon.index.versions.get(version) if daemon.index else None
    return record.bytes if record is not None else -1


def test_a_poll_looks_at_the_names_and_pointers_never_into_settled_versions(
    tmp_path: Path, run_daemon: Callable[[dict[str, Any]], Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "bentoml"
    genstore.generate_store(
        store,
        names=NAMES,
        versions_per_name=VERSIONS_PER_NAME,
        files_per_version=1,
        bytes_per_file=64,
    )
    time.sleep(1.5)  # every version written more than `settle` ago
    daemon = run_daemon(config_for(store, settle="1s"))
    poller = poller_of(daemon)
    kinds = [kind for kind in ("models", "bentos") if (store / kind).is_dir()]
    assert poller.watched_versions() == set()
    assert poller.polled_paths() == 1 + len(kinds) + 2 * NAMES  # root, kinds, names, pointers

    this_thread = threading.get_ident()
    looked_at: list[str] = []
    listed: list[str] = []
    real_lstat, real_scandir = os.lstat, os.scandir

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if threading.get_ident() == this_thread:
            looked_at.append(os.fspath(path))
        return real_lstat(path, *args, **kwargs)

    def scandir(path: Any = ".") -> Any:
        if threading.get_ident() == this_thread:
            listed.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "scandir", scandir)
    poller.poll()
    monkeypatch.undo()
    assert len(looked_at) == poller.polled_paths()
    assert all(path.count("/") <= str(store).count("/") + 3 for path in looked_at)
    assert listed == []  # nothing moved, so nothing is listed


def test_a_new_version_is_polled_while_it_settles_and_dropped_once_settled(
    tmp_path: Path, audit: Audit, run_daemon: Callable[[dict[str, Any]], Daemon]
) -> None:
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    time.sleep(3.5)
    daemon = run_daemon(config_for(store, settle="3s"))
    poller = poller_of(daemon)

    version = make_version(store, "iris", "v2")
    wait_until(poller.watched_versions, lambda paths: paths == {str(version)}, "v2 polled")
    before = wait_until(lambda: indexed_bytes(daemon, version), lambda size: size > 0, "v2")
    (version / "variables").mkdir()
    (version / "variables" / "data").write_bytes(b"x" * 100_000)
    wait_until(
        lambda: indexed_bytes(daemon, version),
        lambda size: size >= before + 100_000,
        "a file written deep inside a settling v2 measured",
    )
    with (version / "variables" / "data").open("ab") as data:  # in place: no directory moves
        data.write(b"y" * 50_000)
    wait_until(
        lambda: indexed_bytes(daemon, version),
        lambda size: size >= before + 150_000,
        "a file grown in place inside a settling v2 measured",
    )
    wait_until(poller.watched_versions, lambda paths: paths == set(), "v2 dropped once settled")
    assert [e["version"] for e in audit.named("version_added")] == ["v2"]
    assert audit.named("check_failed") == []


def test_polling_sees_a_latest_rewritten_in_place_a_version_replaced_and_a_name_removed(
    tmp_path: Path, audit: Audit, run_daemon: Callable[[dict[str, Any]], Daemon]
) -> None:
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", size=1000)
    make_version(store, "iris", "v2", set_latest=True)
    make_version(store, "bert", "b1", set_latest=True)
    daemon = run_daemon(config_for(store, settle="0s"))

    point_latest(store, "iris", "v1")  # same length, written in place as BentoML does
    wait_until(
        lambda: [(e["old"], e["new"]) for e in audit.named("latest_changed")],
        lambda changes: changes == [("v2", "v1")],
        "the pointer's new target seen",
    )
    shutil.rmtree(store / "models" / "iris" / "v1")
    make_version(store, "iris", "v1", size=300_000)  # the same name, another directory
    wait_until(
        lambda: indexed_bytes(daemon, store / "models" / "iris" / "v1"),
        lambda size: size >= 300_000,
        "the replaced v1 measured again",
    )
    shutil.rmtree(store / "models" / "bert")
    wait_until(
        lambda: [e["version"] for e in audit.named("version_gone")],
        lambda gone: "b1" in gone,
        "a whole name removed by someone else seen",
    )
    assert daemon.index is not None
    assert ("models", "bert") not in daemon.index.pointers
    assert audit.named("check_failed") == []


def test_a_version_nested_a_thousand_directories_deep_does_not_stop_polling(
    tmp_path: Path, audit: Audit, run_daemon: Callable[[dict[str, Any]], Daemon]
) -> None:
    store = tmp_path / "bentoml"
    version = make_version(store, "iris", "v1", set_latest=True)
    deep = version
    for _ in range(1000):
        deep = deep / "d"
        deep.mkdir()
    daemon = run_daemon(config_for(store, settle="1h"))
    poller = poller_of(daemon)
    assert str(version) in poller.watched_versions()

    make_version(store, "iris", "v2")
    wait_until(
        lambda: [e["version"] for e in audit.named("version_added")],
        lambda added: added == ["v2"],
        "v2 seen while a deep version is polled",
    )
    assert audit.named("observer_degraded") == []
    assert audit.named("check_failed") == []
    assert poller.polls > 0

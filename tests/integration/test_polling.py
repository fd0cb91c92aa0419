"""Polling (``schedule.observer: polling``): kinds, names, pointers and settling versions only.

The daemon runs in this process with a reconcile ten minutes away, so
whatever it sees within a test was seen by polling. The cost of a poll is
read off the calls it makes: ``lstat`` of each directory and pointer it
polls, and no listing of a settled version.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from storewarden.daemon import Daemon
from storewarden.index import Change, Index
from storewarden.store import census
from storewarden.watcher import ChangeRecorder, PollingWatcher
from tests.conftest import Audit
from tests.integration.test_watcher import config_for as watcher_config
from tests.integration.test_watcher import generated_store
from tests.reliability.support import remove_deep_tree
from tests.reliability.test_scale import run_daemon
from tests.storebuilder import make_version, point_latest
from tests.waiting import wait_until

__all__ = ["run_daemon"]  # the fixture, used by name

NAMES = 20
VERSIONS_PER_NAME = 50


def config_for(store: Path, settle: str) -> dict[str, Any]:
    """The watcher tests' config, polling every 0.2 s; reconcile too far away to help."""
    return watcher_config(
        store, settle, observer="polling", poll_interval="0.2s", reconcile_interval="10m"
    )


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
    store = generated_store(tmp_path, NAMES, VERSIONS_PER_NAME)
    time.sleep(2.5)  # every version written more than `settle` ago, and no longer racy
    daemon = run_daemon(config_for(store, settle="1s"))
    poller = poller_of(daemon)
    kinds = [kind for kind in ("models", "bentos") if (store / kind).is_dir()]
    assert poller.watched_versions() == set()
    assert poller.polled_paths() == 1 + len(kinds) + 2 * NAMES  # root, kinds, names, pointers

    time.sleep(2.5)  # the daemon made its state directory in the root: no longer racy either
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
    # A poll may fall inside the rmtree (b1 gone, latest not yet): the pointer goes at the next.
    wait_until(
        lambda: daemon.index is not None and ("models", "bert") in daemon.index.pointers,
        lambda held: not held,
        "the removed name's pointer dropped",
    )
    assert audit.named("check_failed") == []


@pytest.fixture
def deep_trees_removed(tmp_path: Path) -> Iterator[None]:
    """Remove the store afterwards (shutil.rmtree recurses once per level, past the limit)."""
    yield
    remove_deep_tree(tmp_path / "bentoml")


@pytest.mark.usefixtures("deep_trees_removed")
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


# -- the poller alone, driven by hand: one poll, then what a check does with it -----------------


class Rig:
    """A store, its index and a PollingWatcher whose polls (and the checks after) run on call."""

    def __init__(self, store: Path, settle: float = 0.0) -> None:
        self.store = store
        self.index = Index(store, ("models", "bentos"))
        self.index.load(census(store, ("models", "bentos")))
        self.recorder = ChangeRecorder(self.index, lambda: None)
        self.poller = PollingWatcher(
            self.recorder, store, self.index.watched_kinds, settle=lambda *_: settle, interval=3600
        )

    def start(self) -> None:
        """Take the first signatures, then what the daemon does after its census."""
        self.poller.start()
        self.poller.resync(self.index, datetime.now(tz=UTC))

    def check(self) -> list[Change]:
        """Apply what was recorded, as the daemon's check does; return the changes found."""
        touched = self.recorder.drain()
        changes = self.index.refresh(touched)
        self.poller.follow(self.index, touched, datetime.now(tz=UTC))
        return changes

    def cycles(self, count: int = 3) -> list[Change]:
        """Poll and check ``count`` times; return every change found."""
        changes = []
        for _ in range(count):
            time.sleep(0.05)
            self.poller.poll()
            changes += self.check()
        return changes

    def indexed(self) -> set[str]:
        """Return the versions the index holds."""
        return {path.name for path in self.index.versions}

    def on_disk(self) -> set[str]:
        """Return the versions a fresh census finds."""
        return {record.version for record in census(self.store, ("models", "bentos")).versions}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Make rigs on ``tmp_path / "bentoml"``; stop their pollers at the end."""
    made: list[Rig] = []

    def make(settle: float = 0.0) -> Rig:
        made.append(Rig(tmp_path / "bentoml", settle))
        return made[-1]

    yield make
    for each in made:
        each.poller.stop()


def test_what_was_saved_between_the_census_and_the_first_poll_is_seen(
    tmp_path: Path, rig: Callable[..., Rig]
) -> None:
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    warden = rig()  # the census
    make_version(store, "iris", "v2")  # saved while a large store's census still ran
    make_version(store, "bert", "b1", set_latest=True)
    time.sleep(2.1)  # older than any "racy" second look would catch
    warden.start()
    warden.cycles(2)
    assert warden.indexed() == warden.on_disk() == {"v1", "v2", "b1"}


def test_a_name_removed_whole_between_the_census_and_the_first_poll_leaves_the_index(
    tmp_path: Path, rig: Callable[..., Rig]
) -> None:
    # Its versions' bytes would otherwise stay counted until reconcile, and
    # trigger a prune of versions that did not need to go.
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    last = make_version(store, "gpt", "g1", set_latest=True)
    warden = rig()  # the census
    shutil.rmtree(last.parent)  # the name's last version deleted: BentoML removes the name too
    time.sleep(2.1)
    warden.start()
    warden.cycles(2)
    assert warden.indexed() == warden.on_disk() == {"v1"}
    assert warden.index.store_bytes == sum(r.bytes for r in warden.index.versions.values())


@pytest.mark.parametrize("swapped", ["name", "kind"])
def test_a_kind_or_name_swapped_for_a_symlink_leaves_the_index(
    tmp_path: Path, rig: Callable[..., Rig], swapped: str
) -> None:
    # Found by review: moved out of the store with a symlink in its place, the
    # directory listed the same through the link; its versions stayed indexed
    # and a prune removed them where they now were, outside the store.
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1")
    make_version(store, "iris", "v2", set_latest=True)
    make_version(store, "svc", "b1", kind="bentos", set_latest=True)
    warden = rig()
    warden.start()
    warden.cycles(1)
    moved = store / "models" / "iris" if swapped == "name" else store / "models"
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(moved, outside / moved.name)
    os.symlink(outside / moved.name, moved)

    warden.cycles(2)

    assert warden.indexed() == warden.on_disk() == {"b1"}
    assert ("models", "iris") not in warden.index.pointers


@pytest.mark.parametrize("failing", ["listing", "lstat"])
def test_a_name_directory_that_cannot_be_read_once_is_looked_at_again_not_forgotten(
    tmp_path: Path, rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    store = tmp_path / "bentoml"
    for version in ("v1", "v2", "v3"):
        make_version(store, "iris", version, set_latest=version == "v3")
    warden = rig()
    warden.start()
    warden.cycles(1)
    name = str(store / "models" / "iris")
    make_version(store, "iris", "v4")  # a change, so the next poll looks into iris
    real = os.scandir if failing == "listing" else os.lstat

    def refusing(path: Any = ".", *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path) == name:
            raise OSError(errno.EIO if failing == "lstat" else errno.EMFILE, "injected")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir" if failing == "listing" else "lstat", refusing)
    warden.poller.poll()  # fails on iris
    monkeypatch.undo()
    warden.check()
    shutil.rmtree(store / "models" / "iris" / "v1")  # bentoml models delete iris:v1
    warden.cycles(3)
    assert warden.indexed() == warden.on_disk() == {"v2", "v3", "v4"}


def test_a_latest_rewritten_twice_within_one_tick_of_a_coarse_clock_is_seen(
    tmp_path: Path, rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "bentoml"
    for version in ("v1", "v2", "v3"):
        make_version(store, "iris", version, set_latest=version == "v1")
    warden = rig()
    warden.start()
    real = os.lstat

    class WholeSeconds:
        """A stat result with 1 s timestamps, as NFS serving such a filesystem gives."""

        def __init__(self, info: os.stat_result) -> None:
            self.info = info

        def __getattr__(self, field: str) -> Any:
            value = getattr(self.info, field)
            return value // 10**9 * 10**9 if field in ("st_mtime_ns", "st_ctime_ns") else value

    def whole_seconds(path: Any, *args: Any, **kwargs: Any) -> Any:
        return WholeSeconds(real(path, *args, **kwargs))

    monkeypatch.setattr(os, "lstat", whole_seconds)
    while not 0.2 < time.time() % 1 < 0.4:  # both writes in one second, a poll between
        time.sleep(0.01)
    point_latest(store, "iris", "v2")
    warden.poller.poll()
    first = warden.check()
    point_latest(store, "iris", "v3")  # the same length, in place, the same second
    later = warden.cycles(3)
    monkeypatch.undo()
    assert [(change.old, change.new) for change in first + later if change.what == "latest"] == [
        ("v1", "v2"),
        ("v2", "v3"),
    ]


def test_a_latest_written_through_its_symlink_to_a_file_is_seen(
    tmp_path: Path, rig: Callable[..., Rig]
) -> None:
    store = tmp_path / "bentoml"
    for version in ("v1", "v2", "v3"):
        make_version(store, "iris", version)
    name = store / "models" / "iris"
    (name / "pointer.txt").write_text("v2")
    (name / "latest").symlink_to("pointer.txt")
    warden = rig()
    warden.start()
    warden.cycles(1)
    time.sleep(0.05)
    (name / "pointer.txt").write_text("v3")  # BentoML writes latest through the link
    changes = warden.cycles(2)
    assert [(change.old, change.new) for change in changes if change.what == "latest"] == [
        ("v2", "v3")
    ]


def test_a_settling_version_replaced_by_a_symlink_is_never_walked_through_it(
    tmp_path: Path, rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    version = make_version(store, "iris", "v2")
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    warden = rig(settle=600.0)
    warden.start()
    warden.check()
    assert str(version) in warden.poller.watched_versions()
    shutil.rmtree(version)
    version.symlink_to(outside, target_is_directory=True)  # another tool's doing
    listed: list[str] = []
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        listed.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    warden.cycles(3)
    monkeypatch.undo()
    assert not [path for path in listed if path.startswith(str(version))]
    assert str(version) not in warden.poller.watched_versions()
    assert warden.indexed() == {"v1"}

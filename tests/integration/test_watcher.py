"""The daemon's inotify watches: the root, kinds, names and only the versions still settling.

The daemon runs in this process, so its inotify descriptor is this
process's: the kernel's own count of its watches is the ``inotify wd:``
lines of ``/proc/self/fdinfo/<descriptor>``. A refused watch is injected
(the kernel's limit is a system-wide sysctl a test must not lower).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from storewarden import watcher as watcher_module
from storewarden.daemon import Daemon
from storewarden.index import Index
from storewarden.store import census
from storewarden.watcher import ChangeRecorder, Inotify, InotifyWatcher
from tests.conftest import Audit
from tests.reliability.support import genstore
from tests.reliability.test_scale import run_daemon
from tests.storebuilder import make_version
from tests.waiting import wait_until

__all__ = ["run_daemon"]  # the fixture, used by name

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")

NAMES = 20
VERSIONS_PER_NAME = 100


def config_for(store: Path, settle: str, **schedule: str) -> dict[str, Any]:
    """No pressure (nothing is pruned); checks every second; ``settle`` as given."""
    return {
        "store": str(store),
        "trigger": {"high_percent": 99.9, "low_percent": 99.0},
        "protect": {"settle": settle},
        "schedule": {
            "check_interval": "1s",
            "reconcile_interval": "10s",
            "debounce": "0.2s",
            "observer": "inotify",
            **schedule,
        },
        "log": {"level": "debug"},
    }


def generated_store(tmp_path: Path, names: int, versions_per_name: int) -> Path:
    """Generate ``names`` x ``versions_per_name`` versions of one small file; return the store."""
    store = tmp_path / "bentoml"
    genstore.generate_store(
        store,
        names=names,
        versions_per_name=versions_per_name,
        files_per_version=1,
        bytes_per_file=64,
    )
    return store


def inotify_of(daemon: Daemon) -> InotifyWatcher:
    """Return the daemon's inotify watcher."""
    watcher = daemon.watcher
    assert isinstance(watcher, InotifyWatcher), f"not watching with inotify: {watcher}"
    return watcher


def kernel_watches(daemon: Daemon) -> int:
    """Return the watches the kernel holds on the daemon's inotify descriptor."""
    descriptor = inotify_of(daemon).inotify.descriptor
    with open(f"/proc/self/fdinfo/{descriptor}") as info:
        return sum(1 for line in info if line.startswith("inotify wd:"))


def stamp(event: dict[str, Any]) -> datetime:
    """Return an event's time."""
    return datetime.fromisoformat(event["timestamp"])


def test_the_watches_grow_with_the_names_not_with_the_settled_versions(
    tmp_path: Path, run_daemon: Callable[[dict[str, Any]], Daemon]
) -> None:
    store = generated_store(tmp_path, NAMES, VERSIONS_PER_NAME)
    time.sleep(1.5)  # every version written more than `settle` ago
    daemon = run_daemon(config_for(store, settle="1s"))

    kinds = [kind for kind in ("models", "bentos") if (store / kind).is_dir()]
    structure = 1 + len(kinds) + NAMES  # the root, each kind, each name
    assert kernel_watches(daemon) == structure
    assert inotify_of(daemon).watched_versions() == set()
    assert inotify_of(daemon).watch_count() == structure
    assert daemon.index is not None
    assert len(daemon.index.versions) == NAMES * VERSIONS_PER_NAME


def test_a_new_version_is_watched_while_it_settles_and_unwatched_once_settled(
    tmp_path: Path, audit: Audit, run_daemon: Callable[[dict[str, Any]], Daemon]
) -> None:
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    time.sleep(3.5)
    daemon = run_daemon(config_for(store, settle="3s"))
    watcher = inotify_of(daemon)
    at_rest = kernel_watches(daemon)
    assert at_rest == 3  # the root, models/, models/iris/

    version = make_version(store, "iris", "v2")
    wait_until(watcher.watched_versions, lambda paths: paths == {str(version)}, "v2 watched")
    assert kernel_watches(daemon) == at_rest + 1
    (version / "variables").mkdir()  # a save writes into directories of its own
    wait_until(lambda: kernel_watches(daemon), lambda count: count == at_rest + 2, "v2/variables")

    def measured() -> int:
        with daemon._mutex:
            record = daemon.index.versions.get(version) if daemon.index else None
        return record.bytes if record is not None else -1

    before = wait_until(measured, lambda size: size > 0, "v2 indexed")
    (version / "variables" / "data").write_bytes(b"x" * 100_000)
    wait_until(
        measured,
        lambda size: size >= before + 100_000,
        "the file written into v2/variables measured (its directory is watched)",
    )

    wait_until(watcher.watched_versions, lambda paths: paths == set(), "v2 unwatched once settled")
    assert kernel_watches(daemon) == at_rest
    assert [e["version"] for e in audit.named("version_added")] == ["v2"]
    assert audit.named("watch_failed") == []


def refusing(below: Path) -> Callable[[Inotify, str, int], None]:
    """Return an ``add_watch`` refusing, as at the watch limit, each directory below ``below``."""
    real = Inotify.add_watch

    def add_watch(self: Inotify, path: str, mask: int) -> None:
        if path.startswith(f"{below}/"):
            raise OSError(errno.ENOSPC, "inotify watch limit reached", path)
        real(self, path, mask)

    return add_watch


def test_a_refused_watch_is_logged_once_counted_and_the_version_still_indexed(
    tmp_path: Path,
    audit: Audit,
    run_daemon: Callable[[dict[str, Any]], Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    monkeypatch.setattr(watcher_module.Inotify, "add_watch", refusing(store / "models"))
    daemon = run_daemon(config_for(store, settle="1h"))
    started = datetime.now(tz=UTC)

    make_version(store, "iris", "v2")
    wait_until(lambda: [e["version"] for e in audit.named("version_added")], bool, "v2 seen at all")
    wait_until(
        lambda: [e for e in audit.named("reconcile_finished") if stamp(e) > started],
        bool,
        "a reconcile after v2 was written",
    )
    wait_until(lambda: len(audit.named("check")), lambda count: count >= 3, "three checks")

    with daemon._mutex:
        assert daemon.index is not None
        indexed = dict(daemon.index.versions)
    fresh = {record.path: record for record in census(store).versions}
    assert set(indexed) == set(fresh) == {store / "models/iris/v1", store / "models/iris/v2"}
    failed = audit.named("watch_failed")
    assert [(e["path"], e["failures"], e["level"]) for e in failed] == [
        (str(store / "models/iris"), 1, "warning"),
        (str(store / "models/iris/v1"), 2, "warning"),  # written just now: settling too
        (str(store / "models/iris/v2"), 3, "warning"),
    ]
    assert all(e["error"] == "ENOSPC: inotify watch limit reached" for e in failed)
    exposition = daemon.metrics.exposition().decode()
    assert f'storewarden_watch_failures_total{{store="{store}"}} 3.0' in exposition
    assert daemon.watcher is not None
    assert f'storewarden_watches{{store="{store}"}} {daemon.watcher.watch_count()}.0' in exposition


def test_a_name_whose_watch_was_refused_is_polled_at_each_check(
    tmp_path: Path,
    audit: Audit,
    run_daemon: Callable[[dict[str, Any]], Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    monkeypatch.setattr(watcher_module.Inotify, "add_watch", refusing(store / "models"))
    daemon = run_daemon(config_for(store, settle="1h", reconcile_interval="10m"))

    make_version(store, "iris", "v2")

    wait_until(
        lambda: [e["version"] for e in audit.named("version_added")],
        lambda added: added == ["v2"],
        "v2 seen by polling the refused name directory (reconcile is 10 minutes away)",
    )
    assert audit.named("reconcile_finished") == []
    assert daemon.index is not None


def resynced_index(store: Path, between: Callable[[], object]) -> Index:
    """Census, then ``between`` (what happens before the watches), then start, resync, check."""
    index = Index(store, ("models", "bentos"))
    index.load(census(store, ("models", "bentos")))  # the census
    between()
    recorder = ChangeRecorder(index, lambda: None)
    watcher = InotifyWatcher(
        recorder,
        store,
        index.watched_kinds,
        settle=lambda *_: 0.0,
        on_failure=lambda *_: None,
        on_overflow=lambda: None,
    )
    watcher.start()
    try:
        watcher.resync(index, datetime.now(tz=UTC))  # what the daemon does after its census
        index.refresh(recorder.drain())  # what its first check does
    finally:
        watcher.stop()
    return index


def test_what_was_saved_or_removed_between_the_census_and_the_watches_is_seen(
    tmp_path: Path,
) -> None:
    # On a large store the census runs for seconds before the name directories
    # are watched: a version saved (or removed) in between gives no event.
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    gone = make_version(store, "iris", "v0")
    last = make_version(store, "gpt", "g1", set_latest=True)

    def meanwhile() -> None:
        make_version(store, "iris", "v2")  # saved while the census still ran
        make_version(store, "bert", "b1", set_latest=True)  # a name new since the census
        shutil.rmtree(gone)  # removed by bentoml models delete meanwhile
        shutil.rmtree(last.parent)  # a name's last version: BentoML removes the name too

    index = resynced_index(store, meanwhile)

    found = {record.version for record in census(store, ("models", "bentos")).versions}
    assert found == {"v1", "v2", "b1"}
    assert {path.name for path in index.versions} == found
    assert index.versions_by_kind["models"] == 3  # the bytes that drive a prune, too
    assert index.store_bytes == sum(record.bytes for record in index.versions.values())


@pytest.mark.parametrize("layout", ["not-a-tag", "symlink", "mounted", "bind-mounted"])
def test_a_name_directory_the_census_leaves_alone_is_never_indexed(
    tmp_path: Path, layout: str
) -> None:
    # Found by review: the start-up listing took every directory of a kind, and
    # the index took in what it named; a prune then removed models/Iris/old1.
    store = tmp_path / "bentoml"
    make_version(store, "iris", "v1", set_latest=True)
    outside = tmp_path / "elsewhere"
    make_version(outside, "iris", "x1")
    name = {"not-a-tag": "Iris", "symlink": "linked"}.get(layout, "mnt")
    name_path = store / "models" / name
    mount = {
        "mounted": ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(name_path)],
        # The same filesystem, so the same st_dev: only the mount table tells it.
        "bind-mounted": ["mount", "--bind", str(outside / "models" / "iris"), str(name_path)],
    }.get(layout)
    if layout == "symlink":
        name_path.symlink_to(outside / "models" / "iris")
    elif mount is not None:
        name_path.mkdir()
        try:
            subprocess.run(mount, check=True, capture_output=True)
        except (subprocess.CalledProcessError, FileNotFoundError) as error:
            pytest.skip(f"cannot mount here (needs root or CAP_SYS_ADMIN): {error}")
    try:
        if layout in ("not-a-tag", "mounted"):
            make_version(store, name, "old1", set_latest=True)
        assert census(store, ("models",)).problems  # the census reports it and leaves it

        index = resynced_index(store, lambda: make_version(store, "iris", "v2"))
        version = "old1" if layout in ("not-a-tag", "mounted") else "x1"
        refreshed = index.refresh([("models", name, version), ("models", name, "latest")])

        assert {path.name for path in index.versions} == {"v1", "v2"}
        assert refreshed == []
        assert ("models", name) not in index.pointers
    finally:
        if mount is not None:
            subprocess.run(["umount", "-l", str(name_path)], check=False)

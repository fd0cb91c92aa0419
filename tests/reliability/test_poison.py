"""Poison versions: one version whose removal breaks must not stop the warden freeing space.

Each case puts one hostile version (the oldest, so first in line) among
ordinary old versions and prunes under pressure, with and without
archiving: every other eligible version must still go, the cycle must end
with its ``prune_finished``, and the hostile one fails alone (or is skipped,
or goes, where it is not poison any more). A version that fails three cycles
in a row is quarantined. Then one daemon faces every poison at once and must
reach its target. issue 10; docs/reliability.md lists the matrix.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from storewarden.archive import Archiver
from storewarden.config import build_config
from storewarden.engine import Engine
from storewarden.store import VersionRecord
from tests.conftest import Audit
from tests.e2e.test_daemon import DaemonProcess, fast_config, start_daemon
from tests.reliability.support import remove_deep_tree
from tests.storebuilder import NOW, backdate_arrivals, make_version, point_latest

__all__ = ["start_daemon"]
pytestmark = pytest.mark.slow

DAY = timedelta(days=1)
ORDINARY = [f"v{index}" for index in range(1, 6)]  # iris v1..v5, v5 latest


def make_chain(path: Path, depth: int) -> None:
    """Create ``d/d/...`` ``depth`` levels deep below ``path``, level by level."""
    descriptor = os.open(path, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=descriptor)
        inner = os.open("d", os.O_RDONLY, dir_fd=descriptor)
        os.close(descriptor)
        descriptor = inner
    (Path(f"/proc/self/fd/{descriptor}") / "deep.bin").write_bytes(b"d" * 100)
    os.close(descriptor)


def non_utf8(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        handle = os.open(
            b"\xff\xfe-weights.bin", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=descriptor
        )
        os.write(handle, b"x" * 100)
        os.close(handle)
    finally:
        os.close(descriptor)


def fifo(path: Path) -> None:
    os.mkfifo(path / "pipe")


def unix_socket(path: Path) -> None:
    # Bound by a relative name: the full path can exceed sun_path's 108 bytes.
    server = socket.socket(socket.AF_UNIX)
    here = os.getcwd()
    os.chdir(path)
    try:
        server.bind("control.sock")
    finally:
        os.chdir(here)
        server.close()


POISONS: dict[str, Callable[[Path], None]] = {
    "a-tree-1500-deep": lambda path: make_chain(path, 1500),
    "names-not-utf8": non_utf8,
    "a-fifo-inside": fifo,
    "a-socket-inside": unix_socket,
}


def build(root: Path, poison: str | None) -> Path:
    """Ordinary versions of iris and, oldest of all, the poison version; return its path."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    for index, version in enumerate(ORDINARY):
        make_version(root, "iris", version, created=NOW - (20 - index) * DAY, size=64 * 1024)
    point_latest(root, "iris", ORDINARY[-1])
    path = make_version(root, "poison", "p1", created=NOW - 90 * DAY, size=64 * 1024)
    make_version(root, "poison", "p2", created=NOW - 1 * DAY, size=1024)
    point_latest(root, "poison", "p2")
    if poison is not None:
        POISONS[poison](path)
    backdate_arrivals(
        root,
        {
            ("models", "iris", version): NOW - (20 - index) * DAY
            for index, version in enumerate(ORDINARY)
        }
        | {("models", "poison", "p1"): NOW - 90 * DAY, ("models", "poison", "p2"): NOW - DAY},
    )
    return path


def config_for(root: Path, archives: Path | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "store": str(root),
        "trigger": {"max_store_size": 1},  # everything unprotected is due
        "protect": {"settle": "0s", "min_age": "0s", "keep_last": 1},
    }
    if archives is not None:
        data["archive"] = {"dir": str(archives)}
    return data


@pytest.fixture
def deep_trees_removed(tmp_path: Path) -> Iterator[None]:
    yield
    for entry in tmp_path.iterdir():
        if entry.is_dir():
            remove_deep_tree(entry)


def removed(audit: Audit) -> list[str]:
    return [f"{e['name']}:{e['version']}" for e in audit.named("version_removed")]


@pytest.mark.usefixtures("deep_trees_removed")
@pytest.mark.parametrize("archiving", [False, True], ids=["no-archive", "archive"])
@pytest.mark.parametrize("poison", sorted(POISONS))
def test_one_poison_version_does_not_stop_the_others_from_going(
    tmp_path: Path, audit: Audit, poison: str, archiving: bool
) -> None:
    root = tmp_path / "bentoml"
    build(root, poison)
    archives = tmp_path / "archive" if archiving else None

    result = Engine(build_config(config_for(root, archives))).cycle()

    ordinary = [f"iris:{version}" for version in ORDINARY[:-1]]
    assert [tag for tag in removed(audit) if tag.startswith("iris:")] == ordinary
    (finished,) = audit.named("prune_finished")
    assert finished["removed"] == len(result.removed)
    # The poison either went like any version or failed alone, with what broke.
    went = "poison:p1" in removed(audit)
    failed = [f"{record.name}:{record.version}" for record, _error in result.failed]
    assert went or failed == ["poison:p1"], (result.failed, result.skipped)
    if failed:
        (event,) = audit.named("removal_failed") or audit.named("archive_failed")
        assert event["version"] == "p1"
    if archiving and poison in ("a-fifo-inside", "a-socket-inside"):
        assert failed == ["poison:p1"]  # BentoML's import would reject the archive: it stays
        assert (root / "models" / "poison" / "p1").is_dir()


class ArchiveThenWrite(Archiver):
    """A real archiver; while the archive of the poison is written, a file lands in it."""

    def write(self, record: VersionRecord, *, run_id: str | None = None) -> Path:
        path = super().write(record, run_id=run_id)
        if record.name == "poison":
            (record.path / f"late-{uuid.uuid4().hex[:6]}.bin").write_bytes(b"late")
        return path


def test_a_version_that_changes_while_it_is_archived_stays_and_the_others_go(
    tmp_path: Path, audit: Audit
) -> None:
    root = tmp_path / "bentoml"
    poisoned = build(root, None)
    config = build_config(
        {**config_for(root, tmp_path / "archive"), "protect": {"settle": "2s", "min_age": "0s"}}
    )
    time.sleep(2.5)  # everything written so far has settled; the late write will not have
    engine = Engine(config)
    engine.archiver = ArchiveThenWrite(tmp_path / "archive", store=root)

    result = engine.cycle()

    assert poisoned.is_dir()
    assert [(record.version, reasons) for record, reasons in result.skipped] == [
        ("p1", ("settle",))
    ]
    assert [tag for tag in removed(audit) if tag.startswith("iris:")] == [
        f"iris:{version}" for version in ORDINARY[:-1]
    ]


def test_a_version_failing_three_cycles_in_a_row_is_quarantined_then_left_alone(
    tmp_path: Path, audit: Audit
) -> None:
    root = tmp_path / "bentoml"
    build(root, "a-fifo-inside")
    config = build_config(config_for(root, tmp_path / "archive"))

    results = [Engine(config).cycle() for _ in range(4)]

    assert [len(result.failed) for result in results] == [1, 1, 1, 0]
    assert [len(result.quarantined) for result in results] == [0, 0, 0, 1]
    (event,) = audit.named("version_quarantined")
    assert (event["name"], event["version"]) == ("poison", "p1")
    assert "archive failed" in event["error"]
    assert list(Engine(config).quarantined()) == ["models/poison:p1"]


@pytest.mark.tmpfs
def test_a_file_that_cannot_be_unlinked_leaves_its_version_out_of_the_store_and_the_rest_goes(
    tmp_path: Path, audit: Audit
) -> None:
    if shutil.which("mkfs.ext4") is None or shutil.which("chattr") is None:
        pytest.skip("needs mkfs.ext4 and chattr (e2fsprogs) for an immutable file on ext4")
    image, mount = tmp_path / "ext4.img", tmp_path / "ext4"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    attached = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=False)
    if attached.returncode != 0:
        pytest.skip("cannot loop-mount an ext4 image here (needs root and loop devices)")
    root = mount / "bentoml"
    try:
        poisoned = build(root, None)
        subprocess.run(["chattr", "+i", str(poisoned / "weights.bin")], check=True)

        result = Engine(build_config(config_for(root, None))).cycle()

        assert "poison:p1" in removed(audit)  # it left the store in one rename
        assert [tag for tag in removed(audit) if tag.startswith("iris:")] == [
            f"iris:{version}" for version in ORDINARY[:-1]
        ]
        (stuck,) = audit.named("trash_not_emptied")
        assert "Operation not permitted" in stuck["error"]
        assert result.target_reached is False or result.failed == ()
    finally:
        for path in (root / ".storewarden" / "trash").rglob("weights.bin"):
            subprocess.run(["chattr", "-i", str(path)], check=False)
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.usefixtures("deep_trees_removed")
def test_a_daemon_facing_every_poison_at_once_reaches_its_target(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    root = tmp_path / "bentoml"
    build(root, None)
    for number, poison in enumerate(sorted(POISONS)):
        path = make_version(
            root, f"poison{number}", "x1", created=NOW - (60 + number) * DAY, size=4096
        )
        make_version(root, f"poison{number}", "x2", created=NOW - DAY, size=1024)
        point_latest(root, f"poison{number}", "x2")
        POISONS[poison](path)
    config = fast_config(root, trigger={"max_store_size": 1})
    config["archive"] = {"dir": str(tmp_path / "archive")}
    daemon = start_daemon(config)
    daemon.wait_for(
        lambda events: len([e for e in events if e["event"] == "prune_finished"]) >= 3,
        "three checks that prune",
    )
    events = daemon.events()
    assert daemon.stop() == 0

    gone = {f"{e['name']}:{e['version']}" for e in events if e["event"] == "version_removed"}
    assert {f"iris:{version}" for version in ORDINARY[:-1]} <= gone
    assert not [e for e in events if e["event"] == "check_failed"]
    assert all(not (root / "models" / "iris" / version).exists() for version in ORDINARY[:-1])

"""The mount table: read again whenever a mount changed, never trusted stale.

The re-check before each removal and the removal itself ask which mount
points lie inside a version (a bind mount keeps ``st_dev``, so only the table
tells it). :class:`storewarden.layout.MountTable` answers from its last read
until the kernel says the table changed; these tests mount and unmount real
filesystems between the questions.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from storewarden.layout import MOUNTS, MountTable, mount_points

pytestmark = pytest.mark.tmpfs


def test_a_mount_made_or_undone_after_a_read_is_in_the_next_answer(
    tmpfs: Callable[[str], Path], tmp_path: Path
) -> None:
    table = MountTable()
    other = tmpfs("1m")
    target = tmp_path / "with a space\tand a tab"
    target.mkdir()
    before = table.points()

    subprocess.run(["mount", "--bind", str(other), str(target)], check=True)
    try:
        mounted = table.points()
        listed = tuple(partition.mountpoint for partition in psutil.disk_partitions(all=True))
    finally:
        subprocess.run(["umount", str(target)], check=True)
    after = table.points()

    assert str(target) not in before
    assert str(target) in mounted
    assert str(target) not in after
    assert mounted == listed  # as psutil reads the table, escapes decoded


def test_a_bind_mount_inside_a_directory_is_found_by_its_identity(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    version = tmp_path / "version"
    (version / "data").mkdir(parents=True)
    assert mount_points(version) == frozenset()

    subprocess.run(["mount", "--bind", str(outside), str(version / "data")], check=True)
    try:
        found = mount_points(version)
    finally:
        subprocess.run(["umount", str(version / "data")], check=True)

    info = os.stat(outside)
    assert found == frozenset({(info.st_dev, info.st_ino)})
    assert mount_points(version) == frozenset()


def test_a_forked_child_never_takes_the_news_of_a_change_from_its_parent(
    tmpfs: Callable[[str], Path], tmp_path: Path
) -> None:
    # The parent's open table and its poll state are shared with a child: a child
    # polling it would see the change in the parent's place, and the parent miss it.
    MOUNTS.points()
    other = tmpfs("1m")
    target = tmp_path / "target"
    target.mkdir()
    subprocess.run(["mount", "--bind", str(other), str(target)], check=True)
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            os._exit(0 if str(target) in MOUNTS.points() else 1)
        _, status = os.waitpid(child, 0)
        seen = MOUNTS.points()
    finally:
        subprocess.run(["umount", str(target)], check=True)

    assert os.waitstatus_to_exitcode(status) == 0
    assert str(target) in seen

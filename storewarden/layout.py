"""The filesystems a store spans: where its versions are, and how they can leave the store.

A version leaves the store in one rename into the warden's trash, which must
therefore be on the same mount as the version (Linux refuses ``rename``
across mount points, even two views of one filesystem). Usually the whole
store is one mount and the trash is ``<state>/trash``. When ``models/`` or
``bentos/`` is a mount point of its own (a separate disk), no directory on
that mount lies outside ``models/`` or ``bentos/``, and BentoML rejects any
entry there that is not a tag, so no trash can be kept on it: its versions
are removed in place instead (see :meth:`storewarden.prune.Pruner.remove`).
Such a layout is measured filesystem by filesystem.

A mount point is known by the mount table, not only by ``st_dev``: a bind
mount of a directory of the same filesystem keeps its device number, yet is
another mount (``rename`` across it fails with EXDEV) and may show anything,
from outside the store included.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KIND_DIRECTORIES = ("models", "bentos")

Inode = tuple[int, int]  # (st_dev, st_ino)


def mount_points(*directories: Path) -> frozenset[Inode]:
    """Return ``(st_dev, st_ino)`` of each mount point at or below ``directories``.

    Read from this mount namespace's table (``/proc/self/mounts``, see
    :class:`MountTable`), so a same-filesystem bind mount is found too; the
    identity is what a walk meets at that path (the mounted directory). Only
    mount points below the given directories are stat'ed (a hung network
    mount elsewhere never blocks the warden). An unreadable table yields
    nothing: the ``st_dev`` checks the walks make still hold.
    """
    return frozenset(inode for inode, _ in _mounts_below(directories))


def mount_table(root: Path) -> tuple[frozenset[Inode], frozenset[tuple[str, ...]]]:
    """Return the mount points at or below ``root``: identities, and paths as parts under it."""
    found = _mounts_below([root])
    return frozenset(inode for inode, _ in found), frozenset(parts for _, parts in found)


_ESCAPED = re.compile(rb"\\([0-7]{3})")
_TABLE = "/proc/self/mounts"
_CHANGED = select.POLLPRI | select.POLLERR


class MountTable:
    """This mount namespace's mount points, read again only when the table has changed.

    The kernel flags an open ``/proc/self/mounts`` with ``POLLPRI`` once a
    mount or unmount happened in this namespace (or was propagated into it)
    since it was last polled, so a ``poll`` that does not wait (about a
    microsecond) tells whether the points read before still hold; the table
    is read and parsed again only then (a read costs 30 µs with 20 mounts,
    more with many; psutil's took 0.4 ms). The re-check before each removal
    and the removal itself each ask. Where that file cannot be opened,
    psutil reads the table at each call.
    """

    def __init__(self, path: str = _TABLE) -> None:
        self.path = path
        # A poll that saw a change must finish its read before another caller trusts the points.
        self._lock = threading.Lock()
        self._descriptor: int | None = None
        self._poll = select.poll()
        self._points: tuple[str, ...] = ()

    def points(self) -> tuple[str, ...]:
        """Return every mount point of this namespace now; raise OSError if none can be read."""
        with self._lock:
            descriptor = self._descriptor
            try:
                if descriptor is None:
                    try:
                        descriptor = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                    except OSError:
                        return _partitions()
                    # Changes from now on show in the next poll: the read below is current.
                    self._poll = select.poll()
                    self._poll.register(descriptor, _CHANGED)
                    self._descriptor = descriptor
                    self._points = _read_table(descriptor)
                elif any(events & _CHANGED for _, events in self._poll.poll(0)):
                    self._points = _read_table(descriptor)
            except OSError:
                # The change the poll reported is not read yet: the next call opens anew.
                self._forget()
                raise
            return self._points

    def _forget(self) -> None:
        """Close the table (if open here): the next call opens and reads it afresh."""
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(self._descriptor)
        self._descriptor = None

    def forked(self) -> None:
        """In a forked child: drop the parent's descriptor (its poll state is shared) and lock.

        Closing it here closes the child's copy only.
        """
        self._lock = threading.Lock()
        self._forget()


def _read_table(descriptor: int) -> tuple[str, ...]:
    """Return the mount points ``/proc/self/mounts`` (open as ``descriptor``) lists now."""
    os.lseek(descriptor, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(descriptor, 1 << 16):
        chunks.append(chunk)
    points = []
    for line in b"".join(chunks).splitlines():
        fields = line.split(b" ")
        if len(fields) > 1:
            # A space, tab, newline or backslash in a path is written as \ooo (octal).
            point = _ESCAPED.sub(lambda match: bytes([int(match[1], 8)]), fields[1])
            points.append(os.fsdecode(point))
    return tuple(points)


def _partitions() -> tuple[str, ...]:
    """Return every mount point as psutil reads them (where there is no /proc/self/mounts)."""
    import psutil  # noqa: PLC0415 - only where /proc is missing

    return tuple(partition.mountpoint for partition in psutil.disk_partitions(all=True))


MOUNTS = MountTable()
os.register_at_fork(after_in_child=MOUNTS.forked)


def real_directory(path: Path) -> str:
    """Return ``os.path.realpath(path)`` of a directory, asked of the kernel where it can be.

    The directory is opened (``O_PATH``: nothing is read) and its descriptor's
    link in ``/proc/self/fd`` names it with every symlink resolved: three
    calls where realpath makes one lstat per component. The removal of each
    version asks twice. Anything else (no ``/proc``, not a directory, gone)
    is left to realpath.
    """
    try:
        descriptor = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        real = os.readlink(f"/proc/self/fd/{descriptor}")
    except OSError:
        real = ""
    finally:
        os.close(descriptor)
    # Removed meanwhile, or out of this process's root: the link says so in words.
    return (
        real if real.startswith("/") and not real.endswith(" (deleted)") else os.path.realpath(path)
    )


def _mounts_below(directories: Iterable[Path]) -> list[tuple[Inode, tuple[str, ...]]]:
    prefixes = []
    for directory in directories:
        real = real_directory(directory)
        prefixes.append((real, real.rstrip("/") + "/"))
    try:
        points = MOUNTS.points()
    except (OSError, RuntimeError):
        return []
    found = []
    for point in points:
        for real, below in prefixes:
            if point == real or point.startswith(below):
                try:
                    info = os.lstat(point)
                except OSError:
                    break
                parts = tuple(point[len(below) :].split("/")) if point != real else ()
                found.append(((info.st_dev, info.st_ino), parts))
                break
    return found


def mount_of(path: Path) -> str | None:
    """Return the mount point ``path`` is on (the longest one over its real path), or None.

    None where the mount table cannot be read. Two paths on one filesystem
    but under different mounts (a bind mount) cannot be renamed between.
    """
    real = os.path.realpath(path)
    try:
        points = MOUNTS.points()
    except (OSError, RuntimeError):
        return None
    over = [
        point
        for point in points
        if real == point or real.startswith(point.rstrip("/") + "/") or point == "/"
    ]
    return max(over, key=len) if over else None


def is_mount(info: os.stat_result, parent: os.stat_result, mounts: frozenset[Inode]) -> bool:
    """Return whether a directory (``info``, under ``parent``) is a mount point."""
    return info.st_dev != parent.st_dev or (info.st_dev, info.st_ino) in mounts


class LayoutError(Exception):
    """The store has a layout the warden cannot work with."""


def directory_problem(path: Path) -> str | None:
    """Given a kind or name directory of the store, return why nothing may be written into it.

    "a symlink" or "not a directory", as ``lstat`` sees it; None if it is a
    real directory or absent. A rename into a symlinked directory lands
    wherever the link points, outside the store; the census never scans one.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(info.st_mode):
        return None
    return "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"


@dataclass(frozen=True)
class Place:
    """One mount the store's versions are on: its device, the kinds on it, a directory on it.

    ``trash`` is the warden's trash on that mount, or None where none can be
    (a kind directory that is a mount point of its own): removal in place.
    """

    device: int
    kinds: tuple[str, ...]
    directory: Path
    trash: Path | None


def spans(
    root: Path, kinds: Iterable[str] = KIND_DIRECTORIES
) -> list[tuple[Path, tuple[str, ...]]]:
    """Return a directory on each filesystem that holds versions, with the kinds on it.

    One entry (the root) for the usual store on one filesystem. Nothing is
    created: this is what usage is measured on.
    """
    try:
        root_device = os.stat(root).st_dev
    except OSError:
        return [(root, tuple(kinds))]
    where: dict[int, tuple[Path, list[str]]] = {root_device: (root, [])}
    for kind in kinds:
        # Measured after every removal: one lstat a kind, no pathlib on the way.
        try:
            info = os.lstat(os.path.join(root, kind))
        except OSError:
            info = None
        if info is None or not stat.S_ISDIR(info.st_mode):  # absent, a symlink, a file
            where[root_device][1].append(kind)
            continue
        where.setdefault(info.st_dev, (root / kind, []))[1].append(kind)
    return [(directory, tuple(on_it)) for directory, on_it in where.values() if on_it]


def find_places(
    root: Path, state_dir: Path, kinds: Iterable[str] = KIND_DIRECTORIES
) -> list[Place]:
    """Return every mount the store's kinds are on; the store root's first, with the trash.

    A kind directory that is a mount point (another filesystem, or a bind
    mount of the same one) is a place of its own, without a trash.
    """
    root_info = os.stat(root)
    mounts = mount_points(root)
    on_root: list[str] = []
    places: list[Place] = []
    for kind in kinds:
        directory = root / kind
        try:
            info = os.lstat(directory)
        except OSError:
            on_root.append(kind)
            continue
        if stat.S_ISDIR(info.st_mode) and is_mount(info, root_info, mounts):
            places.append(Place(info.st_dev, (kind,), directory, None))
        else:
            on_root.append(kind)
    return [Place(root_info.st_dev, tuple(on_root), state_dir, state_dir / "trash"), *places]

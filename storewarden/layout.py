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
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KIND_DIRECTORIES = ("models", "bentos")


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
        directory = root / kind
        try:
            if directory.is_symlink() or not directory.is_dir():
                where[root_device][1].append(kind)
                continue
            device = os.stat(directory).st_dev
        except OSError:
            where[root_device][1].append(kind)
            continue
        where.setdefault(device, (directory, []))[1].append(kind)
    return [(directory, tuple(on_it)) for directory, on_it in where.values() if on_it]


def find_places(
    root: Path, state_dir: Path, kinds: Iterable[str] = KIND_DIRECTORIES
) -> list[Place]:
    """Return every mount the store's kinds are on; the store root's first, with the trash."""
    root_device = os.stat(root).st_dev
    places = [Place(root_device, (), state_dir, state_dir / "trash")]
    for directory, on_it in spans(root, kinds):
        device = os.stat(directory).st_dev
        if device == root_device:
            places[0] = Place(root_device, on_it, state_dir, state_dir / "trash")
        else:
            places.append(Place(device, on_it, directory, None))
    return places

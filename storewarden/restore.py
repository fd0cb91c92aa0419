"""Putting an archived version back into the store: one rename, through Operations.

:func:`restore` extracts the archive into the warden's ``tmp`` on the store's
filesystem (every file and directory fsynced), then makes the version appear
in one rename into ``<kind>/<name>/<version>``, and points ``latest`` at it
if BentoML would (see :func:`_becomes_latest`). Every write into the store
goes through :class:`storewarden.prune.Operations`, so the crash-point tests
kill it after each step; a kill leaves the version wholly there or wholly
absent, and recovery empties ``tmp``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from storewarden import durable
from storewarden.archive import (
    _CHUNK,
    ArchivedVersion,
    RestoreError,
    _link_stays_inside,
    _member_path,
    _open,
    _read_descriptor,
)
from storewarden.logs import get_logger
from storewarden.prune import Pruner, linked_directory
from storewarden.store import Kind, census_version


@dataclass(frozen=True)
class Restored:
    """What :func:`restore` put back."""

    version: ArchivedVersion
    path: Path
    bytes: int
    pointer_old: str | None
    pointer_new: str | None


def restore(archive: Path, pruner: Pruner, kinds: tuple[Kind, ...]) -> Restored:
    """Put the version ``archive`` holds back into the store and return what was done.

    The caller holds the store lock (recovery empties ``<state>/tmp``).
    Extraction goes to ``<state>/tmp``; one rename then makes the version
    appear whole. ``latest`` moves to it when it is the newest complete
    version of its name. Raise RestoreError if the archive is not a version
    archive, its kind is not managed, the version is already in the store, or
    its kind or name directory is a symlink or not a directory.
    """
    log = get_logger()
    with _open(archive) as tar:
        held = _read_descriptor(archive, tar)
        if held.kind not in kinds:
            raise RestoreError(f"{archive} holds {held.kind}, which this store does not manage")
        destination = pruner.root / held.kind / held.name / held.version
        _refuse_linked(pruner, held)
        _refuse_existing(destination)
        _refuse_without_models(held, pruner)
        staging = pruner.temporary_for(pruner.root / held.kind) / f"restore-{uuid.uuid4().hex}"
        os.mkdir(staging, 0o700)
        # A kill after the version appears but before latest follows would leave
        # latest behind it: the intent lets recovery finish, as BentoML's save would.
        intent = pruner.intend_restore(held.kind, held.name, held.version)
        try:
            _extract(tar, staging)
            name_dir = destination.parent
            if not name_dir.is_dir():
                kind_dir = name_dir.parent
                if not kind_dir.is_dir():
                    pruner.operations.mkdir(kind_dir, 0o755)
                pruner.operations.mkdir(name_dir, 0o755)
                pruner.operations.fsync_dir(kind_dir)
            _refuse_linked(pruner, held)  # again, just before: nothing was written through one
            _refuse_existing(destination)
            pruner.operations.rename(staging, destination)
        except BaseException:
            with contextlib.suppress(OSError):
                pruner.operations.remove_tree(staging)
                pruner.operations.unlink(intent)
            raise
    pruner.operations.fsync_dir(destination.parent)
    current, pointer_new = pruner.point_at_restored(held.kind, held.name, held.version)
    pruner.operations.unlink(intent)
    record = census_version(held.kind, held.name, destination, pruner.filesystem)
    size = record.bytes if record is not None else 0
    log.info(
        "version_restored",
        kind=held.kind,
        name=held.name,
        version=held.version,
        path=str(destination),
        bytes=size,
        archive=str(archive),
        creation_time=held.creation_time.isoformat() if held.creation_time else None,
    )
    return Restored(held, destination, size, current if pointer_new else None, pointer_new)


def _refuse_without_models(held: ArchivedVersion, pruner: Pruner) -> None:
    """Raise RestoreError if a bento would come back without a model it needs.

    A bento BentoML built names its models and does not carry them; put
    back without them, it cannot be served. The models go back first.
    """
    lacking = []
    for tag in held.references:
        name, _, version = tag.partition(":")
        if version == "latest":
            version = pruner.read_pointer("models", name)[1] or ""
        if not version or not (pruner.root / "models" / name / version / "model.yaml").is_file():
            lacking.append(tag)
    if lacking:
        raise RestoreError(
            f"bentos/{held.name}:{held.version} needs {', '.join(lacking)}, which the store"
            " lacks; restore the model first (storewarden restore <its archive>, or"
            " bentoml models import), then the bento. Nothing was restored"
        )


def _refuse_linked(pruner: Pruner, held: ArchivedVersion) -> None:
    """Raise RestoreError if the kind or name directory is a symlink or not a directory.

    The version's rename (and the pointer's) would land wherever the link
    points, outside the store.
    """
    found = linked_directory(pruner.root, held.kind, held.name)
    if found is not None:
        path, problem = found
        raise RestoreError(
            f"{path} is {problem}: restore writes only into the store's own directories;"
            " nothing restored"
        )


def _refuse_existing(destination: Path) -> None:
    if os.path.lexists(destination):
        tag = f"{destination.parent.name}:{destination.name}"
        raise RestoreError(f"{tag} is already in the store ({destination}); nothing restored")


def _extract(tar: tarfile.TarFile, staging: Path) -> None:
    """Extract every member under ``staging``, each file and directory fsynced."""
    directories: list[tuple[Path, tarfile.TarInfo]] = []
    made: set[str] = set()
    links: set[str] = set()
    home = os.path.realpath(staging)
    for member in tar.getmembers():
        relative = _member_path(member.name)
        if relative is None:
            continue
        _refuse_through_links(member, relative, made, links)
        target = staging / relative
        if target.parent != staging and not target.parent.is_dir():
            target.parent.mkdir(mode=0o700, parents=True)
        parent = os.path.realpath(target.parent)
        if parent != home and not parent.startswith(home + os.sep):
            raise RestoreError(f"unsafe member {member.name!r} (leaves the version)")
        made.add(relative)
        if member.issym():
            links.add(relative)
        if member.isdir():
            target.mkdir(mode=0o700, exist_ok=True)
            directories.append((target, member))
        elif member.isfile():
            content = tar.extractfile(member)
            if content is None:  # pragma: no cover - isfile() members always have content
                raise RestoreError(f"cannot read member {member.name!r}")
            with content:
                _write_file(target, content, member)
        elif member.issym():
            if not _link_stays_inside(relative, member.linkname):
                raise RestoreError(f"unsafe member {member.name!r} (symlink leaves the version)")
            os.symlink(member.linkname, target)
        else:
            raise RestoreError(f"unsupported member {member.name!r} (hard link or special file)")
    _refuse_links_leading_out(staging, links)
    for directory, member in reversed(directories):  # deepest first: children are done
        os.chmod(directory, stat.S_IMODE(member.mode) or 0o700)
        os.utime(directory, (member.mtime, member.mtime))
        durable.fsync_directory(directory)
    durable.fsync_directory(staging)


def _refuse_through_links(
    member: tarfile.TarInfo, relative: str, made: set[str], links: set[str]
) -> None:
    """Raise RestoreError for a member a symlink member could redirect out of the version.

    As BentoML's own import refuses: a member nested under a symlink (each
    link may stay inside on its own, yet ``m -> a/l/..`` through ``a/l ->
    ../..`` leads out), and a second member at a path already made (a
    directory member landing on a symlink would be chmodded through it).
    """
    if relative in made:
        raise RestoreError(f"unsafe member {member.name!r} (a second member at that path)")
    parts = relative.split("/")
    for depth in range(1, len(parts)):
        if "/".join(parts[:depth]) in links:
            raise RestoreError(
                f"unsafe member {member.name!r} (nested under the symlink"
                f" {'/'.join(parts[:depth])!r})"
            )


def _refuse_links_leading_out(staging: Path, links: set[str]) -> None:
    """Raise RestoreError if a symlink under ``staging``, followed to its end, lands outside it.

    Each link's own text stays inside (see ``_link_stays_inside``), yet a
    chain of them leads out: ``b/c -> ..`` is the version, ``r0 -> b/c/..``
    reads as ``b`` but is its parent. So, as BentoML's import does ("destination
    escapes import directory"), every link is resolved once all are made (a
    link may name one extracted after it); a dangling one must end inside too.
    """
    home = os.path.realpath(staging)
    for relative in sorted(links):
        resolved = os.path.realpath(staging / relative)
        if resolved != home and not resolved.startswith(home + os.sep):
            raise RestoreError(f"unsafe member {relative!r} (symlink resolves outside the version)")


def _write_file(target: Path, content: IO[bytes], member: tarfile.TarInfo) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(target, flags, 0o600)
    try:
        for chunk in _chunks(content):
            view = memoryview(chunk)
            while view:
                view = view[os.write(descriptor, view) :]
        os.fchmod(descriptor, stat.S_IMODE(member.mode))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.utime(target, (member.mtime, member.mtime))


def _chunks(content: IO[bytes]) -> Iterator[bytes]:
    while chunk := content.read(_CHUNK):
        yield chunk

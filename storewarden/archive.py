"""Archive before delete, and restore: versions written as archives BentoML imports.

With ``archive.dir`` set, every version a prune or ``delete`` removes (except
abandoned half-written ones, which BentoML could not import) is first written
to ``archive.dir`` as a tar of the version directory's contents -- the format
``bentoml models export`` writes and ``bentoml models import`` (``bentoml
import`` for bentos) reads, chosen by the file name's extension:

- ``xz``: ``<name>+<version>.bentomodel`` (``.bento``), byte for byte the
  container BentoML's own export makes (tar, xz-compressed);
- ``gz``: ``<name>+<version>.bentomodel.gz``, gzip-compressed;
- ``tar``: ``<name>+<version>.bentomodel.tar``, uncompressed (the default:
  model weights hardly compress, and it is written as fast as the disk goes).

An archive is written to a hidden temporary file in ``archive.dir``, fsynced
and renamed into place before the removal starts; if any of that fails the
version is not removed. ``archive.max_size`` bounds the directory: the
oldest archives (by modification time) go first to make room. Only archives
named as this module names them count or go (:func:`is_own_archive`); any
other file in the directory is the operator's.

:func:`restore` puts an archived version back: it extracts into
``<state>/tmp`` (the store's filesystem), fsyncs, and renames the directory
into ``<kind>/<name>/<version>`` in one step, then points ``latest`` at it if
it is now the newest version of its name by ``creation_time``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import stat
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

import yaml

from storewarden import durable
from storewarden.logs import get_logger
from storewarden.paths import Danger, forbidden_place
from storewarden.references import bento_references
from storewarden.store import (
    DESCRIPTORS,
    MAX_DESCRIPTOR_BYTES,
    Kind,
    VersionRecord,
    parse_creation_time,
)
from storewarden.tags import is_valid_tag_part, new_tag_problem

try:  # the C loader, as the census uses
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - every wheel on PyPI ships libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

Format = Literal["tar", "gz", "xz"]
EXTENSIONS: dict[str, str] = {"models": "bentomodel", "bentos": "bento"}
# The names this module writes, the only archives the budget counts and may remove.
# ``name+version``: "+" never occurs in a tag, so the name says where the name ends
# ("resnet-50:v1" and "resnet:50-v1" would both be "resnet-50-v1" with a "-"). A
# second archive of the same version gets "~2", "~3"... Both parts are checked as
# tags besides (is_own_archive): `bentoml models export` writes "name-version" and
# older releases of the warden did too; such files are neither counted nor removed.
_OWN_ARCHIVE = re.compile(
    r"(?P<name>[^+~]+)\+(?P<version>[^+~]+)(?:~(?P<copy>[1-9][0-9]*))?"
    r"\.(?:bentomodel|bento)(?:\.tar|\.gz)?"
)
# How many archives of one version may coexist before writing one more is refused.
MAX_SAME_VERSION = 1000
PARTIAL_MARK = ".partial-"
# A temporary archive: "." + the archive's name + PARTIAL_MARK + 12 hex digits.
_PARTIAL = re.compile(rf"\.(?P<final>.+){re.escape(PARTIAL_MARK)}[0-9a-f]{{12}}")
# A temporary archive untouched this long was left by a crash, not a writer at work.
PARTIAL_STALE_SECONDS = 3600.0
_CHUNK = 1 << 20


class ArchiveError(Exception):
    """An archive could not be written or read; the version it concerns was not removed."""


class UnsafeArchiveDirError(Exception):
    """``archive.dir`` lies inside the store's ``models/`` or ``bentos/``."""


class RestoreError(Exception):
    """An archive cannot be restored (not a version archive, or the version exists)."""


def archive_file_name(
    kind: str, name: str, version: str, archive_format: Format, copy: int = 1
) -> str:
    """Return the archive's file name; its extension tells ``bentoml ... import`` the format.

    ``name+version``, unambiguous since "+" is in no tag; ``copy`` above 1
    names a further archive of the same version (``name+version~2``).
    """
    stem = f"{name}+{version}" + (f"~{copy}" if copy > 1 else "")
    base = f"{stem}.{EXTENSIONS[kind]}"
    return base if archive_format == "xz" else f"{base}.{archive_format}"


def is_own_archive(file_name: str) -> bool:
    """Return whether ``file_name`` is one :func:`archive_file_name` gives.

    ``name+version`` (``~N`` from 2 for a further copy) with each part a
    valid BentoML tag part, then the extension of a kind and a format. Any
    other file in the archive directory is the operator's: the budget
    neither counts nor removes it.
    """
    match = _OWN_ARCHIVE.fullmatch(file_name)
    if match is None:
        return False
    copy = match.group("copy")
    return (
        is_valid_tag_part(match.group("name"))
        and is_valid_tag_part(match.group("version"))
        and (copy is None or 2 <= int(copy) <= MAX_SAME_VERSION)
    )


def is_own_partial(file_name: str) -> bool:
    """Return whether ``file_name`` is a temporary archive :class:`Archiver` writes."""
    match = _PARTIAL.fullmatch(file_name)
    return match is not None and is_own_archive(match.group("final"))


def check_archive_dir(directory: Path, store: Path, state_dir: Path | None = None) -> None:
    """Raise UnsafeArchiveDirError if ``directory`` (links resolved) is in models/ or bentos/.

    BentoML rejects the whole store when ``models/`` or a name directory holds
    anything that is not a valid tag, and the census would count archives as
    the store's own bytes. Nor may it be the warden's state directory, or
    lie in the trash or tmp there: the warden empties those, and the
    archives are the only copy of what it removed.
    """
    forbidden = forbidden_place(directory, store, state_dir)
    if forbidden is None:
        return
    if forbidden.danger is Danger.KIND_DIRECTORY:
        raise UnsafeArchiveDirError(
            f"archive.dir {directory} is inside {forbidden.directory}; BentoML would break. "
            "Put the archives outside models/ and bentos/"
        )
    where = (
        "the state directory"
        if forbidden.danger is Danger.STATE_DIRECTORY
        else f"inside {forbidden.directory}"
    )
    raise UnsafeArchiveDirError(
        f"archive.dir {directory} is {where}; the warden empties its trash and tmp"
        " there. Put the archives elsewhere"
    )


def ensure_archive_dir(directory: Path, *, create: bool = True) -> None:
    """Make sure ``archive.dir`` exists: create it (mode 0700) when its parent does.

    Raise UnsafeArchiveDirError with one clear line if it is not a
    directory, or is missing and cannot be created. With ``create`` false,
    only check that it exists or could be made (``storewarden check``).
    """
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        parent = directory.parent
        if not parent.is_dir():
            raise UnsafeArchiveDirError(
                f"archive.dir {directory} does not exist, nor does {parent} to create it in;"
                " no version could be archived, so none would ever be removed"
            ) from None
        if not create:
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UnsafeArchiveDirError(
                    f"archive.dir {directory} does not exist and {parent} is not writable"
                ) from None
            return
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            return
        except OSError as error:
            raise UnsafeArchiveDirError(
                f"archive.dir {directory} cannot be created: {error.strerror or error}"
            ) from None
        get_logger().info("archive_dir_created", path=str(directory))
        return
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeArchiveDirError(f"archive.dir {directory} exists and is not a directory")


@dataclass(frozen=True)
class ArchiveEntry:
    """One archive in the archive directory."""

    path: Path
    bytes: int
    mtime: float


class Archiver:
    """Writes versions into one archive directory and keeps it under its size budget."""

    def __init__(
        self,
        directory: Path,
        *,
        store: Path,
        state_dir: Path | None = None,
        max_size: int | None = None,
        archive_format: Format = "tar",
    ) -> None:
        check_archive_dir(directory, store, state_dir)
        self.directory = directory
        self.max_size = max_size
        self.format: Format = archive_format
        self.log = get_logger()

    def archives(self) -> list[ArchiveEntry]:
        """Return the archives this module wrote, oldest first (by modification time)."""
        found = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not is_own_archive(entry.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        found.append(ArchiveEntry(Path(entry.path), info.st_size, info.st_mtime))
        return sorted(found, key=lambda archive: (archive.mtime, archive.path.name))

    def write(self, record: VersionRecord, *, run_id: str | None = None) -> Path:
        """Archive ``record`` atomically and return the archive's path.

        Raise ArchiveError (nothing left behind but older archives trimmed
        for room) if the directory is missing or full, a file cannot be read,
        the version holds what an import would reject, or the archive alone
        exceeds ``max_size``.
        """
        final = self.directory / archive_file_name(
            record.kind, record.name, record.version, self.format
        )
        temporary = self.directory / f".{final.name}{PARTIAL_MARK}{uuid.uuid4().hex[:12]}"
        try:
            ensure_archive_dir(self.directory)
        except UnsafeArchiveDirError as error:
            raise ArchiveError(str(error)) from None
        try:
            self._remove_stale_partials()
            if self.max_size is not None and record.bytes <= self.max_size:
                # Make room first: the archive directory may be as full as its budget.
                # (A version larger than the budget may still compress into it; no
                # older archive is given up for one that may not fit at all.)
                self._trim(self.max_size - record.bytes, spare=final)
            self._write_tar(record.path, temporary)
            size = os.stat(temporary).st_size
            if self.max_size is None or size <= self.max_size:
                final = self._publish(temporary, record)
                durable.fsync_directory(self.directory)
        except OSError as error:
            _discard(temporary)
            raise ArchiveError(f"{error.filename or final}: {error.strerror or error}") from None
        except BaseException:
            _discard(temporary)
            raise
        if self.max_size is not None and size > self.max_size:
            _discard(temporary)
            raise ArchiveError(
                f"the archive of {record.kind}/{record.tag} takes {size} bytes, more than"
                f" archive.max_size ({self.max_size})"
            )
        self.log.info(
            "archive_written",
            kind=record.kind,
            name=record.name,
            version=record.version,
            path=str(final),
            bytes=size,
            run_id=run_id,
            format=self.format,
        )
        if self.max_size is not None:
            try:
                self._trim(self.max_size - size, spare=final)
            except OSError as error:
                raise ArchiveError(f"{error.filename}: {error.strerror or error}") from None
        return final

    def _publish(self, temporary: Path, record: VersionRecord) -> Path:
        """Give the finished archive its name, never replacing an archive already there.

        An earlier archive of the same version (restored, then removed again)
        keeps its name, and this one takes the next free ``~N``. Raise
        OSError(EEXIST) if MAX_SAME_VERSION are there already.
        """
        for copy in range(1, MAX_SAME_VERSION + 1):
            final = self.directory / archive_file_name(
                record.kind, record.name, record.version, self.format, copy
            )
            if durable.link_new(temporary, final):
                return final
        raise FileExistsError(
            errno.EEXIST, f"{MAX_SAME_VERSION} archives of {record.tag} exist", str(self.directory)
        )

    def _trim(self, allowance: int, *, spare: Path) -> None:
        """Remove the oldest archives but ``spare`` until they total at most ``allowance``."""
        others = [archive for archive in self.archives() if archive.path != spare]
        total = sum(archive.bytes for archive in others)
        for archive in others:
            if total <= allowance:
                break
            try:
                os.unlink(archive.path)
            except FileNotFoundError:  # another warden sharing the directory was first
                total -= archive.bytes
                continue
            total -= archive.bytes
            self.log.info(
                "archive_removed", path=str(archive.path), bytes=archive.bytes, reason="max_size"
            )

    def _remove_stale_partials(self) -> None:
        cutoff = time.time() - PARTIAL_STALE_SECONDS
        with os.scandir(self.directory) as entries:
            stale = [
                entry
                for entry in entries
                if is_own_partial(entry.name)
                and entry.is_file(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < cutoff
            ]
        for entry in stale:
            with contextlib.suppress(FileNotFoundError):
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
                self.log.info("archive_removed", path=entry.path, bytes=size, reason="partial")

    def _write_tar(self, source: Path, destination: Path) -> None:
        descriptor = os.open(
            destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
        )
        with os.fdopen(descriptor, "wb") as raw:
            with _tar_writer(raw, self.format) as tar:
                add_tree(tar, source)
            raw.flush()
            os.fsync(raw.fileno())


def _tar_writer(raw: IO[bytes], archive_format: Format) -> tarfile.TarFile:
    if archive_format == "gz":
        return tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6)
    if archive_format == "xz":
        return tarfile.open(fileobj=raw, mode="w:xz", preset=6)  # as `bentoml models export`
    return tarfile.open(fileobj=raw, mode="w")


def add_tree(tar: tarfile.TarFile, source: Path) -> None:
    """Add the contents of ``source`` to ``tar`` with names relative to it, as BentoML imports.

    Hard links become regular files and symlinks stay symlinks (BentoML's
    import rejects hard-link members, and symlinks leaving the version).
    Each directory comes before its contents, in name order. No recursion: a
    version nested thousands of directories deep is archived like any other.
    Raise ArchiveError for a symlink out of the version or a special file.
    """
    pending: list[tuple[str, Iterator[os.DirEntry[str]]]] = [("", _sorted_entries(source))]
    while pending:
        relative, entries = pending[-1]
        entry = next(entries, None)
        if entry is None:
            pending.pop()
            continue
        name = f"{relative}/{entry.name}" if relative else entry.name
        if _add_entry(tar, entry, name):
            pending.append((name, _sorted_entries(Path(entry.path))))


def _sorted_entries(directory: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(directory) as scan:
        return iter(sorted(scan, key=lambda entry: entry.name))


def _add_entry(tar: tarfile.TarFile, entry: os.DirEntry[str], name: str) -> bool:
    """Add one entry as ``name``; return whether it is a directory whose contents follow."""
    info = entry.stat(follow_symlinks=False)
    member = tarfile.TarInfo(name)
    member.mode = stat.S_IMODE(info.st_mode)
    member.mtime = int(info.st_mtime)
    if stat.S_ISDIR(info.st_mode):
        member.type = tarfile.DIRTYPE
        tar.addfile(member)
        return True
    if stat.S_ISREG(info.st_mode):
        member.size = info.st_size
        handle = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(handle, "rb") as content:
            tar.addfile(member, content)
    elif stat.S_ISLNK(info.st_mode):
        target = os.readlink(entry.path)
        if not _link_stays_inside(name, target):
            raise ArchiveError(
                f"{entry.path} is a symlink to {target}, outside the version;"
                " BentoML's import would reject the archive"
            )
        member.type = tarfile.SYMTYPE
        member.linkname = target
        tar.addfile(member)
    else:
        raise ArchiveError(f"{entry.path} is not a file, directory or symlink")
    return False


def _link_stays_inside(name: str, target: str) -> bool:
    if not target or target.startswith("/") or "\x00" in target:
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return resolved != ".." and not resolved.startswith("../")


def _member_path(name: str) -> str | None:
    """Return a member's path relative to the version, None for the root; raise RestoreError."""
    if "\x00" in name or name.startswith("/"):
        raise RestoreError(f"unsafe member {name!r} (absolute path)")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise RestoreError(f"unsafe member {name!r} (leaves the version)")
    return "/".join(parts) if parts else None


@dataclass(frozen=True)
class ArchivedVersion:
    """What an archive holds: one version of a model or bento."""

    kind: Kind
    name: str
    version: str
    creation_time: datetime | None
    references: tuple[str, ...] = ()


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")  # plain, gzip, xz or bzip2, told by the content
    except (tarfile.TarError, EOFError) as error:
        raise RestoreError(f"{path} is not a tar archive: {error}") from None


def inspect_archive(path: Path) -> ArchivedVersion:
    """Return the version an archive holds; raise RestoreError if it is not a version archive."""
    with _open(path) as tar:
        return _read_descriptor(path, tar)


def _read_descriptor(path: Path, tar: tarfile.TarFile) -> ArchivedVersion:
    members = {_member_path(member.name): member for member in tar.getmembers()}
    for kind_text, file_name in DESCRIPTORS.items():
        member = members.get(file_name)
        if member is None or not member.isfile():
            continue
        if member.size > MAX_DESCRIPTOR_BYTES:
            raise RestoreError(f"{path}: {file_name} is too large to be a descriptor")
        content = tar.extractfile(member)
        if content is None:  # pragma: no cover - isfile() members always have content
            continue
        with content:
            raw = content.read()
        try:
            data = yaml.load(raw, Loader=SafeLoader)
        except yaml.YAMLError:
            raise RestoreError(f"{path}: {file_name} is not valid YAML") from None
        if not isinstance(data, dict):
            raise RestoreError(f"{path}: {file_name} is not a mapping")
        name, version = data.get("name"), data.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            # BentoML's own Tag(...) cannot take a number (version: 1.0) or null either.
            raise RestoreError(
                f"{path}: {file_name} names {name!r}:{version!r}, which cannot be restored:"
                " a name and a version must be text"
            )
        problem = new_tag_problem(name, version)
        if problem is not None:
            raise RestoreError(
                f"{path}: {file_name} names {f'{name}:{version}'!r}, which cannot be"
                f" restored: {problem}"
            )
        kind: Kind = "bentos" if kind_text == "bentos" else "models"
        references = bento_references(data)[0] if kind == "bentos" else ()
        return ArchivedVersion(
            kind, name, version, parse_creation_time(data.get("creation_time")), references
        )
    raise RestoreError(f"{path} holds neither a model.yaml nor a bento.yaml at its top")


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)

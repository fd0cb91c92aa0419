"""Census: read a BentoML store into an immutable snapshot.

Nothing here writes. Filesystem calls go through :class:`FileSystem` so tests
can make directories vanish mid-scan; a directory that vanishes is "gone", not
an error. Symlinks are never followed: a version directory that is a symlink
is reported as a problem and left alone, and a file inside a version that is
a symlink is counted as the link itself.
"""

from __future__ import annotations

import copy
import errno
import functools
import itertools
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Protocol

import yaml

from storewarden.descriptor import read_plain
from storewarden.layout import is_mount, mount_table
from storewarden.references import bento_references
from storewarden.tags import MAX_TAG_LENGTH, TAG_PATTERN, is_store_name, is_valid_tag_part

try:  # the C loader is several times faster on thousands of descriptors
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - every wheel on PyPI ships libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

Kind = Literal["models", "bentos"]
KINDS: tuple[Kind, ...] = ("models", "bentos")
DESCRIPTORS: Mapping[str, str] = {"models": "model.yaml", "bentos": "bento.yaml"}
POINTER = "latest"
# One empty, read-only mapping shared by every version without labels.
NO_LABELS: Mapping[str, str] = MappingProxyType({})
# Distinct label sets remembered for sharing (shared_labels); past this, the least used go.
LABEL_SETS = 1024
# Where `bentoml build` assembles a bento before it copies it into bentos/:
# $BENTOML_HOME/tmp/bentoml_bento_<name><random>. The bento resolves its model
# tags while that directory exists, so a model it will need is named there
# (in its bento.yaml) before the bento appears in the store.
STAGING_DIRECTORY = "tmp"
STAGING_PREFIX = "bentoml_bento_"
# A model.yaml is a few KiB; a bento.yaml holds its API schema and pinned requirements
# and can reach megabytes (a service taking an enum of 80,000 members writes 5 MB).
# Larger than this, a descriptor is not read: the version is then "unreadable", which
# protects it (and, for a bento, stops model removals) -- never "half written".
DESCRIPTOR_LIMITS: Mapping[str, int] = {"models": 16 * 1024 * 1024, "bentos": 64 * 1024 * 1024}
MAX_DESCRIPTOR_BYTES = max(DESCRIPTOR_LIMITS.values())
# A creation_time further ahead of the wall clock than this is not real (a clock
# skew between hosts sharing a store is minutes): it would keep the version
# "newest" and under min_age forever, so the directory's mtime stands in.
FUTURE_TOLERANCE = timedelta(hours=1)
TOO_LARGE = "descriptor is too large"


__all__ = ["MAX_TAG_LENGTH", "TAG_PATTERN", "is_valid_tag_part"]


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One version directory as the census found it.

    ``creation_time_estimated`` is set when the descriptor gave no usable
    ``creation_time`` and the directory's mtime stands in. ``last_change`` is
    the newest mtime *or ctime* of anything inside: BentoML copies files with
    ``shutil.copytree``, which copies the source's mtime, so only ctime shows
    that a file was written just now.

    ``references`` are the model tags (``name:version``, or ``name:latest``)
    a bento needs from the store (see storewarden.references); ``None`` when
    they cannot be known (no ``bento.yaml``, or one that does not parse or
    cannot be read). Models always have ``()``. ``reference_problems`` lists
    entries of ``bento.yaml`` that name no valid tag.
    """

    kind: Kind
    name: str
    version: str
    path: Path
    creation_time: datetime
    creation_time_estimated: bool
    labels: Mapping[str, str]
    bytes: int
    last_change: datetime
    complete: bool
    readable: bool = True
    problem: str | None = None
    references: tuple[str, ...] | None = ()
    reference_problems: tuple[str, ...] = ()
    mounted: bool = False  # another filesystem is mounted at or inside it: never touched
    # When the warden first saw it in this store (its directory's ctime then):
    # an imported or pulled version keeps a creation_time of long ago.
    arrived: datetime | None = None

    def __post_init__(self) -> None:
        # Equal times share one object: a version's newest change is mostly its
        # directory's ctime, which is also when it arrived (48 bytes a version).
        last_change = self.last_change
        for name in ("arrived", "creation_time"):
            moment = getattr(self, name)
            if (
                moment is not None
                and moment is not last_change
                and moment == last_change
                and moment.tzinfo is last_change.tzinfo
            ):
                object.__setattr__(self, name, last_change)

    @property
    def age_basis(self) -> datetime:
        """Return when it came to be in this store: the later of creation and arrival.

        Oldest-first order, ``min_age`` and ``max_age`` count from here, so a
        model imported today that was created months ago is not the first to go.
        """
        arrived = self.arrived
        if arrived is not None and arrived > self.creation_time:
            return arrived
        return self.creation_time

    @property
    def tag(self) -> str:
        """Return ``name:version``."""
        return f"{self.name}:{self.version}"

    @property
    def key(self) -> tuple[str, str]:
        """Return ``(kind, name)``, the key of this version's pointer."""
        return (self.kind, self.name)


@dataclass(frozen=True, slots=True)
class Pointer:
    """A ``latest`` pointer: ``target`` is the version it names if that is a valid tag.

    ``form`` is ``file`` (what BentoML writes) or ``symlink`` (what other
    tools write). ``problem`` says why a pointer is unusable (invalid content,
    a link out of the store, a missing target).
    """

    kind: Kind
    name: str
    path: Path
    form: Literal["file", "symlink"]
    target: str | None
    problem: str | None = None
    # It exists but could not be read (another user's 0600 file): what it
    # names is unknown, so every version of the name may be it. Never repaired.
    unreadable: bool = False


@dataclass(frozen=True, slots=True)
class Problem:
    """An entry the census will not touch, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Snapshot:
    """The store at one moment: every version, every pointer, every problem.

    ``versions`` are those of the managed kinds. ``others`` are bentos of a
    kind the config does not manage, and ``staging`` the bentos ``bentoml
    build`` is assembling under ``$BENTOML_HOME/tmp``: never removed, read
    only for the models they need.
    """

    root: Path
    versions: tuple[VersionRecord, ...]
    pointers: Mapping[tuple[str, str], Pointer]
    problems: tuple[Problem, ...] = ()
    others: tuple[VersionRecord, ...] = ()
    staging: tuple[VersionRecord, ...] = ()
    # Version entries that are symlinks: left alone, but a pointer naming one is valid.
    linked: frozenset[Path] = frozenset()
    _by_key: dict[tuple[str, str], tuple[VersionRecord, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _bentos: tuple[VersionRecord, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[tuple[str, str], list[VersionRecord]] = {}
        for record in self.versions:
            grouped.setdefault(record.key, []).append(record)
        for key, records in grouped.items():
            records.sort(key=lambda record: (record.creation_time, record.version))
            self._by_key[key] = tuple(records)
        bentos = tuple(record for record in self.versions if record.kind == "bentos")
        object.__setattr__(self, "_bentos", bentos)

    def with_dependents(
        self, others: tuple[VersionRecord, ...], staging: tuple[VersionRecord, ...]
    ) -> Snapshot:
        """Return this snapshot with ``others`` and ``staging`` replaced.

        The versions and their index are shared, not built again: the
        re-check before each removal asks about the bentos on disk now against
        one census of the models, and must not pay for every version each time.
        """
        copied = copy.copy(self)
        object.__setattr__(copied, "others", others)
        object.__setattr__(copied, "staging", staging)
        return copied

    @property
    def store_bytes(self) -> int:
        """Return the bytes of every version in the snapshot."""
        return sum(record.bytes for record in self.versions)

    def names(self) -> list[tuple[str, str]]:
        """Return every ``(kind, name)`` that has versions or a pointer, sorted."""
        return sorted(set(self._by_key) | set(self.pointers))

    def versions_of(self, kind: str, name: str) -> tuple[VersionRecord, ...]:
        """Return the versions of ``kind``/``name``, oldest first."""
        return self._by_key.get((kind, name), ())

    def find(self, kind: str, name: str, version: str) -> VersionRecord | None:
        """Return the version with this tag, or None."""
        for record in self.versions_of(kind, name):
            if record.version == version:
                return record
        return None

    def pointer_target(self, kind: str, name: str) -> str | None:
        """Return the version the pointer of ``kind``/``name`` validly names, or None."""
        pointer = self.pointers.get((kind, name))
        return pointer.target if pointer is not None and pointer.problem is None else None

    def dependents(self) -> tuple[VersionRecord, ...]:
        """Return every bento that may need models: managed, unmanaged and being built."""
        return (*self._bentos, *self.others, *self.staging)


class RecordCache(Protocol):
    """Census records kept between runs (see storewarden.cache), keyed by directory stat."""

    def lookup(
        self,
        kind: Kind,
        name: str,
        version: str,
        path: Path,
        stamp: Stamp,
        arrived: datetime | None = None,
    ) -> VersionRecord | None:
        """Return the cached record, built with ``arrived``, if the directory keeps ``stamp``."""

    def store(self, record: VersionRecord, stamp: Stamp) -> None:
        """Remember a record under its directory's stamp."""

    def arrival(self, kind: Kind, name: str, version: str, stamp: Stamp) -> datetime:
        """Return when a version was first seen (recording ``stamp``'s ctime if never)."""


@dataclass(frozen=True, slots=True)
class Stamp:
    """What identifies one state of a version directory: inode, mtime and ctime.

    ``descriptor`` adds its descriptor's inode, size, mtime and ctime: a
    ``bento.yaml`` rewritten in place (its models changed) leaves the
    directory's stamp as it was. None where it cannot be stat'ed.
    """

    inode: int
    mtime_ns: int
    ctime_ns: int
    descriptor: tuple[int, int, int, int] | None = None

    @classmethod
    def of(cls, info: os.stat_result) -> Stamp:
        """Return the stamp of a directory's stat result."""
        return cls(info.st_ino, info.st_mtime_ns, info.st_ctime_ns)

    @classmethod
    def of_version(cls, kind: str, path: Path, info: os.stat_result) -> Stamp:
        """Return the stamp of a version directory (``info``) with its descriptor's."""
        try:
            # Followed, as the census follows a symlinked bento.yaml; a stat opens nothing.
            found = os.stat(os.path.join(path, DESCRIPTORS[kind]))
        except (OSError, ValueError):
            return cls.of(info)
        return cls(
            info.st_ino,
            info.st_mtime_ns,
            info.st_ctime_ns,
            (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns),
        )


@dataclass(frozen=True, slots=True)
class Walk:
    """What a walk of one version directory found.

    ``mounted`` is the first directory inside that is another filesystem's
    mount point (never walked into, never touched).
    """

    bytes: int
    last_change: float
    readable: bool
    mounted: str | None = None


class FileSystem:
    """The filesystem calls the census makes; tests subclass it to inject races.

    ``mounts`` holds the mount points below the store as the mount table
    last showed them (:meth:`refresh_mounts`): a bind mount of the same
    filesystem keeps its ``st_dev``, so the device alone cannot tell one.
    """

    mounts: frozenset[tuple[int, int]] = frozenset()
    # Each mount point below the root as path parts (kind, name, version, ...).
    mounted_at: frozenset[tuple[str, ...]] = frozenset()

    def refresh_mounts(self, root: Path) -> None:
        """Read the mount table again for the mount points at or below ``root``."""
        self.mounts, self.mounted_at = mount_table(root)

    def holds_mount(self, kind: str, name: str, version: str) -> bool:
        """Return whether a mount point lies at or inside that version (by the table's paths)."""
        return any(parts[:3] == (kind, name, version) for parts in self.mounted_at)

    def is_mount(self, info: os.stat_result, parent: os.stat_result) -> bool:
        """Return whether a directory (``info``, found in ``parent``) is a mount point."""
        return is_mount(info, parent, self.mounts)

    def scandir(self, path: Path) -> list[os.DirEntry[str]]:
        """Return the entries of ``path``; raise OSError as os.scandir does."""
        with os.scandir(path) as entries:
            return list(entries)

    def lstat(self, path: Path) -> os.stat_result:
        """Return ``os.lstat(path)``."""
        return os.lstat(path)

    def read_bytes(self, path: Path, limit: int) -> bytes:
        """Return up to ``limit + 1`` bytes of a regular file, never following a symlink.

        Raise OSError(EINVAL) for anything but a regular file: O_NONBLOCK keeps
        a FIFO named model.yaml from blocking the census forever.
        """
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(path))
            return os.read(descriptor, limit + 1)
        finally:
            os.close(descriptor)

    def readlink(self, path: Path) -> str:
        """Return the target text of the symlink ``path``."""
        return os.readlink(path)

    def read_linked(self, path: Path, limit: int, within: Path) -> bytes:
        """Return up to ``limit + 1`` bytes of the regular file the symlink ``path`` leads to.

        BentoML follows a symlinked ``bento.yaml``; so does the census, but
        only to a regular file inside ``within`` (the version's own
        directory): nothing outside the store is opened, and no device or
        FIFO at all. Raise OSError(ELOOP) for a link leading anywhere else.
        """
        target = Path(os.path.realpath(path))
        home = Path(os.path.realpath(within))
        if home not in target.parents:
            raise OSError(errno.ELOOP, "a symlink leading out of its version", str(path))
        try:
            info = os.stat(target)
        except FileNotFoundError:
            # Not "no descriptor" (a half-written version): a link that leads
            # nowhere is someone's doing, and the version stays protected.
            raise OSError(errno.ELOOP, "a symlink to nothing", str(path)) from None
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        descriptor = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            opened = os.fstat(descriptor)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                raise OSError(errno.EAGAIN, "changed while being opened", str(path))
            return os.read(descriptor, limit + 1)
        finally:
            os.close(descriptor)


def shared_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """Return ``labels`` as a read-only mapping shared by the versions with the same labels.

    The versions of a name mostly carry the same few labels: one mapping (and
    one copy of its strings) serves them all instead of a dict per version.
    The order of the labels is kept; no labels is :data:`NO_LABELS`.
    """
    if not labels:
        return NO_LABELS
    return _label_set(tuple(labels.items()))


@functools.lru_cache(maxsize=LABEL_SETS)
def _label_set(items: tuple[tuple[str, str], ...]) -> Mapping[str, str]:
    return MappingProxyType(dict(items))


def _gone(error: OSError) -> bool:
    return isinstance(error, FileNotFoundError | NotADirectoryError)


def walk_version(
    path: Path,
    filesystem: FileSystem,
    seen: set[tuple[int, int]],
    inodes: set[tuple[int, int]] | None = None,
) -> Walk:
    """Given a version directory, return its bytes on disk and newest mtime/ctime.

    Bytes are ``st_blocks * 512``; an inode already in ``seen`` (a hard link
    met before, in this version or another) is not counted again. Symlinks are
    counted as links, never followed. A directory on another filesystem (a
    mount point inside) is noted and not entered. ``inodes``, if given,
    receives ``(device, inode)`` of everything in the version, itself
    included. Raise FileNotFoundError if the directory itself is gone.
    """
    top = filesystem.lstat(path)
    total = top.st_blocks * 512
    newest = max(top.st_mtime, top.st_ctime)
    readable = True
    mounted: str | None = None
    if inodes is not None:
        inodes.add((top.st_dev, top.st_ino))
    pending = [path]
    while pending:
        directory = pending.pop()
        entries, listed = _walk_listing(directory, path, filesystem)
        readable = readable and listed
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as error:
                if not _gone(error):
                    readable = False
                continue
            if filesystem.is_mount(info, top):
                mounted = mounted or entry.path  # another mount: not ours to walk
                continue
            if inodes is not None:
                inodes.add((info.st_dev, info.st_ino))
            newest = max(newest, info.st_mtime, info.st_ctime)
            if stat.S_ISDIR(info.st_mode):
                total += info.st_blocks * 512
                pending.append(Path(entry.path))
                continue
            if info.st_nlink > 1:
                inode = (info.st_dev, info.st_ino)
                if inode in seen:
                    continue
                seen.add(inode)
            total += info.st_blocks * 512
    return Walk(bytes=total, last_change=newest, readable=readable, mounted=mounted)


def _walk_listing(
    directory: Path, top: Path, filesystem: FileSystem
) -> tuple[list[os.DirEntry[str]], bool]:
    """Return a walked directory's entries and whether it could be read.

    A directory that vanished reads as empty; the version itself vanishing
    raises FileNotFoundError. Nested beyond PATH_MAX, a loop, an I/O error:
    never fatal, only unreadable.
    """
    try:
        return filesystem.scandir(directory), True
    except PermissionError:
        return [], False
    except OSError as error:
        if directory == top and _gone(error):
            raise FileNotFoundError(str(top)) from error
        return [], _gone(error)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What the census takes from model.yaml / bento.yaml (the models a bento needs too)."""

    creation_time: datetime | None
    labels: Mapping[str, str]
    problem: str | None
    references: tuple[str, ...] = ()
    reference_problems: tuple[str, ...] = ()


_SCALARS = (str, int, float, bool)


def parse_descriptor(raw: bytes, limit: int = MAX_DESCRIPTOR_BYTES) -> Descriptor:
    """Given the bytes of a descriptor, return its creation time, labels and references.

    A descriptor that is not YAML, not a mapping, or too large is returned
    with ``problem`` set and no creation time; the census then treats the
    version as incomplete. A missing or unparseable ``creation_time`` alone is
    not fatal (the caller falls back to the directory's mtime and flags it).
    ``references`` are the model entries of a bento.yaml; the fast reader
    only accepts documents without any sequence, so a document it reads
    lists no model at all.
    """
    if len(raw) > limit:
        return Descriptor(None, NO_LABELS, TOO_LARGE)
    if b"\x00" in raw:
        return Descriptor(None, NO_LABELS, "descriptor is binary")
    try:
        plain = read_plain(raw.decode("utf-8"))
    except UnicodeDecodeError:
        plain = None
    if plain is not None:
        return Descriptor(parse_creation_time(plain[0]), shared_labels(plain[1]), None)
    try:
        data = yaml.load(raw, Loader=SafeLoader)
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError):
        # ValueError/OverflowError: a scalar Python cannot build (a date 2026-13-45).
        return Descriptor(None, NO_LABELS, "descriptor is not valid YAML")
    if not isinstance(data, dict):
        return Descriptor(None, NO_LABELS, "descriptor is not a mapping")
    labels_data = data.get("labels") or {}
    # Scalars only: str() of a nested value built from YAML aliases (a "billion
    # laughs" descriptor) would expand it to gigabytes.
    labels = (
        {
            str(key): str(value)
            for key, value in labels_data.items()
            if isinstance(key, _SCALARS) and isinstance(value, _SCALARS)
        }
        if isinstance(labels_data, dict)
        else {}
    )
    references, reference_problems = bento_references(data)
    return Descriptor(
        parse_creation_time(data.get("creation_time")),
        shared_labels(labels),
        None,
        references,
        reference_problems,
    )


def parse_creation_time(value: object) -> datetime | None:
    """Return ``value`` as an aware UTC datetime, or None if it is not a timestamp."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # BentoML writes UTC; a naive one is UTC too
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # '0001-01-01T00:00:00+14:00' lies before year 1 in UTC
        return None


def read_pointer(
    kind: Kind, name: str, path: Path, filesystem: FileSystem, info: os.stat_result
) -> Pointer:
    """Given the ``latest`` entry of a name directory, return it as a Pointer.

    A symlink to a version directory (other tools) names that version; a
    symlink to a file names what the file holds, as BentoML reads it, and
    counts as the ``file`` form (a move writes a plain file over the link).
    """
    form: Literal["file", "symlink"] = "file"
    read_from: Path | None = path if stat.S_ISREG(info.st_mode) else None
    if stat.S_ISLNK(info.st_mode):
        led_to = _pointer_file(path)
        if led_to == "outside":
            # BentoML reads latest through the link; the census reads nothing outside
            # the name directory, so what it names is unknown: every version may be it.
            return Pointer(
                kind,
                name,
                path,
                "symlink",
                None,
                "latest is a symlink to a file outside its name directory; left alone",
                unreadable=True,
            )
        read_from = led_to
        if read_from is None:
            form = "symlink"
            text = _linked_version(path, filesystem.readlink(path))
    if read_from is not None:
        raw = filesystem.read_bytes(read_from, 256)
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            return Pointer(kind, name, path, "file", None, "pointer is not text")
    elif form == "file":
        return Pointer(kind, name, path, "file", None, "pointer is neither a file nor a symlink")
    if not is_valid_tag_part(text):
        # '../../etc', '/abs/path', 'a/b' and the like: invalid input, never followed.
        return Pointer(kind, name, path, form, None, f"pointer names {text[:80]!r}, not a version")
    return Pointer(kind, name, path, form, text)


def _pointer_file(path: Path) -> Path | Literal["outside"] | None:
    """Return the regular file a symlinked ``latest`` leads to, as BentoML reads it.

    BentoML reads ``latest`` as a file, through any link: a link to a file
    holding the version (``latest -> pointer.txt``) names that version. Such
    a file inside the name directory is returned (by its real path, to be
    read without following anything); one elsewhere is ``"outside"``; None
    when the link leads to no regular file (a version directory, as other
    tools write it, or nothing).
    """
    try:
        real = os.path.realpath(path)
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None
    except (OSError, ValueError):
        return None
    home = os.path.realpath(path.parent)
    return Path(real) if os.path.dirname(real) == home else "outside"


def _linked_version(path: Path, text: str) -> str:
    """Return the version a symlinked ``latest`` leads to, as the link was written otherwise.

    Tools write ``v1``, ``./v1/``, ``../iris/v1`` or an absolute path: each
    names the version ``v1`` when the directory part leads to the pointer's
    own name directory (by real path; the version itself is not followed).
    A directory part that passes through a version (``v1/../v2``) or leads
    anywhere else names no version: the text comes back as written, to be
    reported.
    """
    parts = text.rstrip("/").split("/")
    version, prefix = parts[-1], [part for part in parts[:-1] if part not in ("", ".")]
    if is_valid_tag_part(text) or not is_valid_tag_part(version):
        return text
    absolute = text.startswith("/")
    if not prefix and not absolute:
        return version  # ./v1, v1/, ./v1/
    # Relative: '..' first, then names only (../iris, ../../models/iris).
    names = list(itertools.dropwhile(lambda part: part == "..", prefix))
    if not absolute and (names == prefix or ".." in names):
        return text
    try:
        led_to = os.path.join("/" if absolute else path.parent, *prefix)
        same = os.path.realpath(led_to) == os.path.realpath(path.parent)
    except (OSError, ValueError):
        same = False
    return version if same else text


_FIRST_TIME = datetime(1, 1, 2, tzinfo=UTC)
_LAST_TIME = datetime(9999, 12, 30, tzinfo=UTC)


def file_time(timestamp: float) -> datetime:
    """Return a file time as a UTC datetime, clamped to what datetime can hold.

    A filesystem such as tmpfs stores any 64-bit mtime (``touch -d @1e12``);
    one out of datetime's range must not stop the census. The bounds keep a
    day's margin so that ``timestamp()`` of the result converts back.
    """
    try:
        return datetime.fromtimestamp(timestamp, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return _LAST_TIME if timestamp > 0 else _FIRST_TIME


@dataclass(frozen=True, slots=True)
class _DescriptorRead:
    """What reading a version's descriptor gave: the descriptor, its problem, what it means."""

    descriptor: Descriptor
    problem: str | None
    parsed: bool  # read and parses: a bento's references are known
    unreadable: bool  # a read error, or too large: protects the version (never "half written")


def _read_descriptor(kind: Kind, path: Path, filesystem: FileSystem) -> _DescriptorRead | None:
    """Read a version's model.yaml or bento.yaml; None if the version itself vanished.

    Only "not there" or "does not parse" can mean half written. A read error
    (EACCES while BentoML, as another user, reads it; EIO) says nothing of the
    version: it is unreadable, which protects it. A FIFO or directory in the
    descriptor's place is no descriptor at all (EINVAL). A symlinked descriptor
    is followed as BentoML follows it, within the version only.
    """
    file_name = DESCRIPTORS[kind]
    limit = DESCRIPTOR_LIMITS[kind]
    try:
        try:
            raw = filesystem.read_bytes(path / file_name, limit)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raw = filesystem.read_linked(path / file_name, limit, within=path)
        descriptor = parse_descriptor(raw, limit)
    except FileNotFoundError:
        try:
            filesystem.lstat(path)
        except FileNotFoundError:
            return None  # the whole version vanished after the walk
        return _DescriptorRead(Descriptor(None, NO_LABELS, None), f"no {file_name}", False, False)
    except OSError as error:
        return _DescriptorRead(
            Descriptor(None, NO_LABELS, None),
            f"cannot read {file_name}: {error.strerror or error}",
            False,
            error.errno != errno.EINVAL,
        )
    found = descriptor.problem
    return _DescriptorRead(descriptor, found, found is None, found == TOO_LARGE)


def _mount_in(path: Path, top: os.stat_result, walk: Walk, filesystem: FileSystem) -> str | None:
    """Return where another filesystem is mounted at or inside a version, or None."""
    try:
        if filesystem.is_mount(top, filesystem.lstat(path.parent)):
            return str(path)  # the version directory is itself a mount point
    except OSError:
        pass
    return walk.mounted


MOUNTED_HERE = "another filesystem is mounted here; left alone"


def name_refusal(
    name: str,
    lstat_name: Callable[[], os.stat_result],
    kind_info: os.stat_result,
    filesystem: FileSystem,
) -> str | None:
    """Return why the census leaves a name directory alone, or None if it reads it.

    The empty string: left alone without a problem to report (a version the
    warden is removing in place, or a directory gone meanwhile). The daemon's
    index applies the same rules to what its watchers report, so that it
    never holds a version the census would not.
    """
    if not is_store_name(name) and is_valid_tag_part(name):
        return ""  # a version the warden is removing in place: no longer the store's
    if not is_valid_tag_part(name):
        return "name is not a valid BentoML tag"
    try:
        info = lstat_name()
    except OSError:
        return ""
    if not stat.S_ISDIR(info.st_mode):
        return "not a directory; not scanned"
    if filesystem.is_mount(info, kind_info):
        return MOUNTED_HERE
    return None


def name_directory_refusal(root: Path, kind: str, name: str, filesystem: FileSystem) -> str | None:
    """Return why the census would not read ``root/kind/name`` now, or None if it would.

    The kind directory must be a real directory too. Read with ``lstat``:
    a symlink anywhere below the root is refused, never followed.
    """
    try:
        kind_info = os.lstat(root / kind)
    except OSError as error:
        return f"the kind directory cannot be examined: {error.strerror or error}"
    if not stat.S_ISDIR(kind_info.st_mode):
        return "the kind directory is not a directory (a symlink?)"
    path = root / kind / name
    refusal = name_refusal(name, lambda: os.lstat(path), kind_info, filesystem)
    if refusal == "":
        return "the name directory is gone"
    return refusal


def census_version(
    kind: Kind,
    name: str,
    path: Path,
    filesystem: FileSystem | None = None,
    seen: set[tuple[int, int]] | None = None,
    inodes: set[tuple[int, int]] | None = None,
) -> VersionRecord | None:
    """Given one version directory, return its record, or None if it vanished.

    ``inodes`` (if given) receives the ``(device, inode)`` of everything in it.
    """
    filesystem = filesystem or FileSystem()
    seen = set() if seen is None else seen
    try:
        walk = walk_version(path, filesystem, seen, inodes)
        top = filesystem.lstat(path)
    except FileNotFoundError:
        return None
    read = _read_descriptor(kind, path, filesystem)
    if read is None:
        return None
    descriptor, problem = read.descriptor, read.problem
    readable = walk.readable and not read.unreadable
    mounted = _mount_in(path, top, walk, filesystem)
    if mounted is not None:
        # Another filesystem lives there: the warden never touches it, so the
        # version is left alone (kept, as unreadable ones are).
        readable = False
        problem = f"a filesystem is mounted at {mounted}; left alone"
    complete = problem is None and readable
    if not walk.readable and problem is None:
        problem = "unreadable entries inside"
    creation_time = descriptor.creation_time
    if creation_time is not None and creation_time > datetime.now(tz=UTC) + FUTURE_TOLERANCE:
        creation_time = None
    if creation_time is None and problem is None:
        problem = "no usable creation_time; directory mtime used"
    bento = kind == "bentos"
    return VersionRecord(
        kind=kind,
        name=name,
        version=path.name,
        path=path,
        creation_time=creation_time or file_time(top.st_mtime),
        creation_time_estimated=creation_time is None,
        labels=descriptor.labels,
        bytes=walk.bytes,
        last_change=file_time(walk.last_change),
        complete=complete,
        readable=readable,
        problem=problem,
        references=(descriptor.references if read.parsed else None) if bento else (),
        reference_problems=descriptor.reference_problems if bento else (),
        mounted=mounted is not None,
        # From nanoseconds, as the census cache counts it: st_ctime (a float) can round
        # a microsecond the other way.
        arrived=file_time(top.st_ctime_ns / 1e9),
    )


def _entries(path: Path, filesystem: FileSystem) -> Iterator[os.DirEntry[str]] | None:
    try:
        return iter(sorted(filesystem.scandir(path), key=lambda entry: entry.name))
    except OSError as error:
        if _gone(error):
            return None
        raise


@dataclass
class _Census:
    """One census in progress: what it found so far, and what it reads with."""

    filesystem: FileSystem
    cache: RecordCache | None
    versions: list[VersionRecord] = field(default_factory=list)
    pointers: dict[tuple[str, str], Pointer] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    linked: set[Path] = field(default_factory=set)
    seen: set[tuple[int, int]] = field(default_factory=set)
    # Bento directories the census could not read: the models they need are unknown.
    unseen_bentos: list[VersionRecord] = field(default_factory=list)

    def kind(self, kind: Kind, root: Path) -> None:
        """Read one kind directory: every name in it."""
        kind_dir = root / kind
        try:
            kind_info = self.filesystem.lstat(kind_dir)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(kind_info.st_mode):
            self.problems.append(Problem(kind_dir, "not a directory (a symlink?); not scanned"))
            return
        try:
            names = _entries(kind_dir, self.filesystem)
        except OSError as error:
            if kind != "bentos":
                raise
            self._unseen(kind, "*", kind_dir, "cannot read the bentos directory", error)
            return
        for name_entry in names or ():
            self.name(kind, name_entry, kind_info)

    def name(self, kind: Kind, name_entry: os.DirEntry[str], kind_info: os.stat_result) -> None:
        """Read one name directory: its versions, its pointer and what is wrong in it."""
        name_path = Path(name_entry.path)
        refusal = name_refusal(
            name_entry.name,
            lambda: name_entry.stat(follow_symlinks=False),
            kind_info,
            self.filesystem,
        )
        if refusal is not None:
            if refusal:
                self.problems.append(Problem(name_path, refusal))
            return
        try:
            entries = _entries(name_path, self.filesystem)
        except OSError as error:
            self._unseen(kind, name_entry.name, name_path, "cannot read the name directory", error)
            return
        for entry in entries or ():
            # A child of one Path per name shares its parent's parts: parsing each
            # version's full path again costs time and ~300 bytes a version.
            path = name_path / entry.name
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as error:
                self._unseen(kind, name_entry.name, path, "cannot examine the entry", error)
                continue
            if entry.name == POINTER:
                self.pointers[(kind, name_entry.name)] = self._pointer(
                    kind, name_entry.name, path, info
                )
                continue
            self.entry(kind, name_entry.name, path, info)

    def _pointer(self, kind: Kind, name: str, path: Path, info: os.stat_result) -> Pointer:
        """Read one ``latest``; one that cannot be read is unknown, and stops nothing else."""
        form: Literal["file", "symlink"] = "symlink" if stat.S_ISLNK(info.st_mode) else "file"
        try:
            return read_pointer(kind, name, path, self.filesystem, info)
        except OSError as error:
            problem = f"latest cannot be read: {error.strerror or error}"
            return Pointer(kind, name, path, form, None, problem, unreadable=True)

    def _unseen(self, kind: Kind, name: str, path: Path, what: str, error: OSError) -> None:
        """Record a directory the census cannot read (EACCES, EIO): left alone, never stopping it.

        One under ``bentos/`` may be a bento that needs any model: it counts
        as one whose ``bento.yaml`` cannot be read, as BentoML's own
        ``models delete`` refuses while it cannot list the bentos.
        """
        self.problems.append(Problem(path, f"{what}: {error.strerror or error}; left alone"))
        if kind != "bentos":
            return
        moment = datetime.now(tz=UTC)
        self.unseen_bentos.append(
            VersionRecord(
                kind="bentos",
                name=name,
                version=path.name,
                path=path,
                creation_time=moment,
                creation_time_estimated=True,
                labels={},
                bytes=0,
                last_change=moment,
                complete=False,
                readable=False,
                problem=f"{what}: {error.strerror or error}",
                references=None,
            )
        )

    def entry(self, kind: Kind, name: str, path: Path, info: os.stat_result) -> None:
        """Read one entry of a name directory: a version, or something left alone."""
        if not is_valid_tag_part(path.name):
            self.problems.append(Problem(path, "entry is not a valid BentoML tag"))
            return
        if not stat.S_ISDIR(info.st_mode):
            self.problems.append(Problem(path, "version is a symlink or a file, not a directory"))
            if stat.S_ISLNK(info.st_mode):
                self.linked.add(path)
            return
        stamp = Stamp.of_version(kind, path, info)
        cache = self.cache
        record = None
        arrived = None
        if cache is not None:
            # The first time any census saw it, kept across runs; its ctime then.
            arrived = cache.arrival(kind, name, path.name, stamp)
            if not self.filesystem.holds_mount(kind, name, path.name):
                # A mount made inside leaves the directory's stamp as it was.
                record = cache.lookup(kind, name, path.name, path, stamp, arrived)
        if record is None:
            record = census_version(kind, name, path, self.filesystem, self.seen)
            if record is not None and cache is not None:
                cache.store(record, stamp)  # stamped before the walk: a change since misses
                if arrived != record.arrived:
                    record = replace(record, arrived=arrived)
        if record is not None:
            self.versions.append(record)


def census(
    root: Path,
    kinds: Iterable[Kind] = KINDS,
    filesystem: FileSystem | None = None,
    cache: RecordCache | None = None,
) -> Snapshot:
    """Given a store root, return a Snapshot of its versions, pointers and problems.

    A missing ``models/`` or ``bentos/`` is an empty kind. Bentos are read
    even when ``kinds`` leaves them out, for the models they need (they go
    to ``others``), and so are the bentos ``bentoml build`` is assembling
    (``staging``). Raise FileNotFoundError if the root itself does not
    exist, PermissionError if it cannot be read.
    """
    filesystem = filesystem or FileSystem()
    filesystem.refresh_mounts(root)
    if not root.is_dir():
        raise FileNotFoundError(f"store {root} does not exist or is not a directory")
    managed = tuple(kinds)
    found = _Census(filesystem, cache)
    for kind in managed:
        found.kind(kind, root)
    others = _Census(filesystem, cache)
    if "bentos" not in managed:
        # Read for their references only: their pointers and problems are not ours.
        others.kind("bentos", root)
    others.versions.extend(census_linked_bentos(root))
    others.versions.extend(found.unseen_bentos)
    others.versions.extend(others.unseen_bentos)
    snapshot = Snapshot(
        root=root,
        versions=tuple(found.versions),
        pointers=found.pointers,
        linked=frozenset(found.linked),
    )
    return Snapshot(
        root=root,
        versions=snapshot.versions,
        pointers=check_targets(snapshot),
        problems=tuple(found.problems),
        others=tuple(others.versions),
        staging=census_staging(root, filesystem),
        linked=snapshot.linked,
    )


def census_linked_bentos(root: Path) -> tuple[VersionRecord, ...]:
    """Return the bento versions reached through a symlink, for the models they need.

    BentoML follows symlinks (``bentos/`` itself, a name directory or a
    version directory may be one); the census never follows them to remove
    anything, but a bento BentoML can load protects its models all the same.
    Only ``bento.yaml`` is read, through the link; nothing is walked, so a
    link loop or a huge tree costs nothing. Never raises.
    """
    kind_dir = root / "bentos"
    found = []
    try:
        kind_linked = kind_dir.is_symlink()
        names = sorted(os.scandir(kind_dir), key=lambda entry: entry.name)
    except OSError:
        return ()
    for name_entry in names:
        try:
            if not is_store_name(name_entry.name) or not name_entry.is_dir():
                continue
            name_linked = kind_linked or name_entry.is_symlink()
            versions = sorted(os.scandir(name_entry.path), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in versions:
            try:
                linked = name_linked or entry.is_symlink()
                if entry.name == POINTER or not linked or not entry.is_dir():
                    continue
            except OSError:
                continue
            if is_valid_tag_part(entry.name):
                found.append(_linked_bento(name_entry.name, Path(entry.path)))
    return tuple(found)


def _linked_bento(name: str, path: Path) -> VersionRecord:
    """Read a bento version through a symlink: its bento.yaml, and when it last changed."""
    limit = DESCRIPTOR_LIMITS["bentos"]
    descriptor = Descriptor(None, NO_LABELS, "no bento.yaml")
    readable = True
    changed = 0.0
    try:
        info = os.stat(path)
        changed = max(info.st_mtime, info.st_ctime)
        with open(path / "bento.yaml", "rb") as handle:
            changed = max(changed, os.fstat(handle.fileno()).st_ctime)
            descriptor = parse_descriptor(handle.read(limit + 1), limit)
    except FileNotFoundError:
        pass
    except OSError:
        readable = False
    parsed = readable and descriptor.problem is None
    return VersionRecord(
        kind="bentos",
        name=name,
        version=path.name,
        path=path,
        creation_time=descriptor.creation_time or file_time(changed),
        creation_time_estimated=descriptor.creation_time is None,
        labels=descriptor.labels,
        bytes=0,
        last_change=file_time(changed),
        complete=parsed,
        readable=readable and descriptor.problem != TOO_LARGE,
        problem=descriptor.problem,
        references=descriptor.references if parsed else None,
        reference_problems=descriptor.reference_problems,
    )


def staging_name(directory: str) -> str:
    """Return the bento name in a staging directory's name (``bentoml_bento_<name><8 random>``)."""
    return directory[len(STAGING_PREFIX) : -8] or "unknown"


def census_staging(root: Path, filesystem: FileSystem | None = None) -> tuple[VersionRecord, ...]:
    """Return the bentos ``bentoml build`` is assembling under ``<root>/tmp``, as records.

    Each is read like a bento version (its ``bento.yaml`` says which models
    it needs; none yet means unknown). Nothing here is ever removed: the
    directory is BentoML's. A ``tmp`` that is missing or unreadable holds none.
    """
    filesystem = filesystem or FileSystem()
    staging_dir = root / STAGING_DIRECTORY
    try:
        entries = filesystem.scandir(staging_dir)
    except OSError:
        return ()
    found = []
    for entry in sorted(entries, key=lambda item: item.name):
        if not entry.name.startswith(STAGING_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        record = census_version(
            "bentos", staging_name(entry.name), staging_dir / entry.name, filesystem, set()
        )
        if record is not None:
            found.append(record)
    return tuple(found)


def check_targets(snapshot: Snapshot) -> dict[tuple[str, str], Pointer]:
    """Return the snapshot's pointers, each naming a version it lacks marked with a problem."""
    checked: dict[tuple[str, str], Pointer] = {}
    for key, pointer in snapshot.pointers.items():
        target = pointer.target
        missing = (
            pointer.problem is None
            and target is not None
            and snapshot.find(pointer.kind, pointer.name, target) is None
            # A symlinked version is left alone, and so is the pointer naming it:
            # BentoML lists and loads it.
            and pointer.path.parent / target not in snapshot.linked
        )
        checked[key] = (
            replace(pointer, problem=f"pointer names missing version {target!r}")
            if missing
            else pointer
        )
    return checked


class BentoScan:
    """The store's bentos as they are on disk now, for the re-check before a model goes.

    Each :meth:`read` lists ``bentos/`` afresh (a bento built since the plan
    must protect its models) but reads a version again only where its
    directory changed since it was last read (inode, mtime, ctime) or where
    it may still be written (changed after ``changed_since``). Records of
    unchanged versions come from ``cache`` (the census cache) when given.
    """

    def __init__(
        self, root: Path, filesystem: FileSystem | None = None, cache: RecordCache | None = None
    ) -> None:
        self.root = root
        self.filesystem = filesystem or FileSystem()
        self.cache = cache
        self._known: dict[Path, tuple[Stamp, VersionRecord]] = {}

    def read(self, changed_since: datetime) -> tuple[VersionRecord, ...]:
        """Return every bento version in the store now (through symlinks too)."""
        found: list[VersionRecord] = []
        kind_dir = self.root / "bentos"
        linked = census_linked_bentos(self.root)
        try:
            if kind_dir.is_symlink():
                return linked
            names = self.filesystem.scandir(kind_dir)
        except OSError:
            return linked
        for name_entry in names:
            if not is_store_name(name_entry.name) or not _is_real_dir(name_entry):
                continue
            name_path = kind_dir / name_entry.name
            try:
                entries = self.filesystem.scandir(name_path)
            except OSError:
                continue
            for entry in entries:
                if entry.name == POINTER or not is_valid_tag_part(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    record = self._record(
                        name_entry.name, name_path / entry.name, info, changed_since
                    )
                    if record is not None:
                        found.append(record)
        return (*found, *linked)

    def _record(
        self, name: str, path: Path, info: os.stat_result, changed_since: datetime
    ) -> VersionRecord | None:
        stamp = Stamp.of_version("bentos", path, info)
        known = self._known.get(path)
        if known is not None and known[0] == stamp and known[1].last_change < changed_since:
            return known[1]
        record = None
        if self.cache is not None:
            record = self.cache.lookup("bentos", name, path.name, path, stamp)
        if record is None or record.last_change >= changed_since:
            record = census_version("bentos", name, path, self.filesystem, set())
        if record is not None:
            self._known[path] = (stamp, record)
        return record


def _is_real_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False

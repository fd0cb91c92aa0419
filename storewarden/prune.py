"""The only module that deletes versions or rewrites pointers.

A removal keeps the store valid for BentoML at every instant:

1. write an intent record (``<state>/trash/<id>.json``, fsynced);
2. if ``latest`` names the victim, point it at the newest remaining complete
   version (temp file under ``<state>/tmp``, fsync, rename over ``latest``,
   fsync the directory) or, when none remains, remove the pointer;
3. rename the version directory into ``<state>/trash/<id>`` (same
   filesystem, outside ``models/`` and ``bentos/``): the version vanishes
   from the store in one step;
4. remove it from the trash file by file, then the intent record.

:meth:`Pruner.recover` finishes or undoes whatever a crash interrupted. All
filesystem writes go through :class:`Operations`, whose :meth:`~Operations.step`
hook lets tests crash after any single step.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storewarden import durable
from storewarden.layout import (
    Inode,
    Place,
    directory_problem,
    find_places,
    mount_of,
    mount_points,
)
from storewarden.logs import get_logger
from storewarden.paths import DEFAULT_STATE_DIR, WIPED_DIRECTORIES
from storewarden.store import (
    DESCRIPTORS,
    POINTER,
    FileSystem,
    Kind,
    Snapshot,
    VersionRecord,
    census,
    census_version,
    is_valid_tag_part,
    read_pointer,
)
from storewarden.tags import REMOVING_PREFIX


class StoreBusyError(Exception):
    """Another warden holds the store's lock."""


class UnsafeStateDirError(Exception):
    """The state directory cannot hold the trash (another filesystem, or inside models/)."""


# The (empty) file that marks a directory as the warden's own state directory: the
# warden deletes what it puts in trash/ and tmp/ there, so nothing else may live there.
STATE_MARKER = ".storewarden-state"
# What a warden of an earlier release put in its state directory, before the marker.
_OWN_ENTRIES = frozenset(
    {
        "lock",
        "trash",
        "tmp",
        "pins.json",
        "pins.lock",
        "census-cache.json",
        "history.jsonl",
        "history.jsonl.unreadable",
        "history.lock",
    }
)
_OWN_TEMPORARY = re.compile(
    r"^\.(pins\.json|census-cache\.json|history\.jsonl)\.[0-9a-f]+(\.tmp)?$"
)
# The only directories a warden deletes inside (paths.WIPED_DIRECTORIES), and what it
# names the entries in them.
_TRASH_ENTRY = re.compile(r"^[0-9a-f]{1,32}-[0-9]{1,9}$")
_TEMPORARY_ENTRY = re.compile(r"^(latest|restore)-[0-9a-f]{1,32}$")


def _check_wiped(state_dir: Path, *, adopting: bool) -> None:
    """Raise UnsafeStateDirError unless ``trash`` and ``tmp`` are the warden's to empty.

    Each must be a real directory on the state directory's filesystem: not a
    symlink (emptying it would empty its target) and not a mount point (that
    would empty another filesystem). In a directory being adopted (no marker
    yet), each must also hold only entries named as a warden names them.
    """
    try:
        device = os.lstat(state_dir).st_dev
    except FileNotFoundError:
        return
    mounts = mount_points(state_dir)
    for wiped in WIPED_DIRECTORIES:
        path = state_dir / wiped
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
            raise UnsafeStateDirError(
                f"{path} is {what}; the warden empties it, so it must be a directory of its own"
            )
        if info.st_dev != device or (info.st_dev, info.st_ino) in mounts:
            raise UnsafeStateDirError(
                f"{path} is a mount point (another filesystem, or a bind mount) in the state"
                " directory; the warden"
                " empties it: unmount it, or give the warden another state_dir"
            )
        if not adopting:
            continue
        own = _TEMPORARY_ENTRY if wiped == "tmp" else _TRASH_ENTRY
        try:
            entries = os.listdir(path)
        except OSError as error:
            raise UnsafeStateDirError(f"{path} cannot be read: {error.strerror or error}") from None
        foreign = sorted(
            entry
            for entry in entries
            if not own.match(entry) and (wiped == "tmp" or Intent.parse(entry) is None)
        )
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise UnsafeStateDirError(
                f"{path} holds entries that are not storewarden's ({shown}); the warden"
                " empties it: give the warden a directory of its own"
            )


def check_state_dir(root: Path, state_dir: Path, device: int | None = None) -> None:
    """Raise UnsafeStateDirError unless ``state_dir`` can be the warden's own directory.

    It must be (or be made) on the filesystem ``device`` (default: the
    store root's). Nothing is written. See :meth:`Pruner.prepare` for the rules.
    """
    real_root = Path(os.path.realpath(root))
    real_state = Path(os.path.realpath(state_dir))
    if real_state == real_root or real_state in real_root.parents:
        raise UnsafeStateDirError(
            f"state_dir {state_dir} is the store {root} or holds it; the warden deletes"
            " inside its state directory: give it a directory of its own"
        )
    for kind in ("models", "bentos"):
        kind_dir = real_root / kind
        if real_state == kind_dir or kind_dir in real_state.parents:
            raise UnsafeStateDirError(
                f"state_dir {state_dir} is inside {kind_dir}; BentoML would break"
            )
    existing = real_state
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # where it would be created
    if os.stat(existing).st_dev != (os.stat(real_root).st_dev if device is None else device):
        raise UnsafeStateDirError(
            f"state_dir {state_dir} is on another filesystem than the store {root};"
            " the trash must be reachable by rename"
        )
    if device is None and mount_of(existing) != mount_of(real_root):
        # One filesystem, two mounts (a bind mount): rename fails with EXDEV all the same.
        raise UnsafeStateDirError(
            f"state_dir {state_dir} is under another mount ({mount_of(existing)}) than the"
            f" store {root} ({mount_of(real_root)}); the trash must be reachable by rename"
        )
    try:
        info = os.lstat(state_dir)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeStateDirError(f"state_dir {state_dir} exists and is not a directory")
    try:
        entries = set(os.listdir(state_dir))
    except OSError as error:
        raise UnsafeStateDirError(
            f"state_dir {state_dir} cannot be read: {error.strerror or error}"
        ) from None
    if STATE_MARKER in entries:
        _check_wiped(state_dir, adopting=False)
        return
    foreign = sorted(
        entry for entry in entries if entry not in _OWN_ENTRIES and not _OWN_TEMPORARY.match(entry)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UnsafeStateDirError(
            f"state_dir {state_dir} holds files that are not storewarden's ({shown}); the"
            " warden deletes inside its state directory: give it a directory of its own"
        )
    _check_wiped(state_dir, adopting=True)
    if real_state != real_root / DEFAULT_STATE_DIR and _holds_anything(state_dir, entries):
        # Older wardens kept their state, unmarked, at the default place; a directory
        # given as state_dir that already holds files is adopted only when marked.
        raise UnsafeStateDirError(
            f"state_dir {state_dir} already holds files and is not marked as storewarden's;"
            " the warden deletes inside its state directory: give it an empty or new"
            f" directory, or if it is a warden's own, mark it: touch {state_dir / STATE_MARKER}"
        )


def _holds_anything(state_dir: Path, entries: set[str]) -> bool:
    """Return whether a state directory holds more than empty ``tmp``/``trash`` directories."""
    for entry in entries:
        if entry not in WIPED_DIRECTORIES:
            return True
        try:
            if os.listdir(state_dir / entry):
                return True
        except OSError:
            return True
    return False


def mark_state_dir(state_dir: Path) -> None:
    """Mark ``state_dir`` as the warden's own (it made it, or adopted an older warden's).

    The marker is an empty file: on a full filesystem it needs no data block,
    only a name. Failing to write it is not fatal (an unmarked directory that
    holds only the warden's own entries is adopted next time).
    """
    with contextlib.suppress(OSError):
        descriptor = os.open(
            state_dir / STATE_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
        )
        os.close(descriptor)


class NoSettledLatestError(Exception):
    """``latest`` names the version, and no other is complete and settled to take its place."""

    reason = "no_settled_latest"


class OwnMountLatestError(NoSettledLatestError):
    """``latest`` names a version on a kind directory that is a mount of its own."""

    reason = "latest_on_own_mount"


def linked_directory(root: Path, kind: str, name: str) -> tuple[Path, str] | None:
    """Return the kind or name directory under ``root`` nothing may be written into, and why.

    None when both are real directories (or absent). See
    :func:`storewarden.layout.directory_problem`.
    """
    for path in (root / kind, root / kind / name):
        problem = directory_problem(path)
        if problem is not None:
            return path, problem
    return None


def refuse_linked(root: Path, kind: str, name: str, consequence: str) -> None:
    """Raise NotADirectoryError if the kind or name directory is a symlink or not a directory."""
    found = linked_directory(root, kind, name)
    if found is not None:
        path, problem = found
        raise NotADirectoryError(errno.ENOTDIR, f"{problem}; {consequence}", str(path))


class Operations:
    """Every filesystem write a removal makes, one method per step.

    ``step`` is called before each action with the step's name and path;
    tests override it to simulate a crash (raise) after any number of steps.
    """

    def step(self, name: str, path: Path) -> None:
        """Hook called before each filesystem action; does nothing here."""

    def write_file(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        """Create ``path`` holding ``data`` (no fsync); the umask never narrows ``mode``."""
        self.step("write_file", path)
        durable.write_new(path, data, mode)

    def fsync_file(self, path: Path) -> None:
        """Flush a file's data to disk."""
        self.step("fsync_file", path)
        durable.fsync_file(path)

    def symlink(self, target: str, path: Path) -> None:
        """Create the symlink ``path -> target``."""
        self.step("symlink", path)
        os.symlink(target, path)

    def rename(self, source: Path, destination: Path, *, source_dir: int | None = None) -> None:
        """Atomically rename ``source`` to ``destination`` (same filesystem).

        With ``source_dir`` (a descriptor of ``source``'s directory), the
        source is looked up by its name in that directory, not by its path:
        nothing above it can be swapped for a symlink in between.
        """
        self.step("rename", source)
        if source_dir is None:
            os.rename(source, destination)
        else:
            os.rename(source.name, destination, src_dir_fd=source_dir)

    def fsync_dir(self, path: Path) -> None:
        """Make a directory's entries (renames, unlinks) durable."""
        self.step("fsync_dir", path)
        durable.fsync_directory(path)

    def mkdir(self, path: Path, mode: int = 0o755) -> None:
        """Create a directory (its parent must exist), with ``mode`` whatever the umask."""
        self.step("mkdir", path)
        os.mkdir(path, mode)
        os.chmod(path, mode)

    def unlink(self, path: Path) -> None:
        """Remove a file or symlink."""
        self.step("unlink", path)
        os.unlink(path)

    def rmdir(self, path: Path) -> None:
        """Remove an empty directory."""
        self.step("rmdir", path)
        os.rmdir(path)

    def chmod(self, path: Path, mode: int) -> None:
        """Change a directory's mode (never following a symlink)."""
        self.step("chmod", path)
        os.chmod(path, mode, follow_symlinks=False)

    def remove_tree(
        self, path: Path, *, last: str | None = None, mounts_at: Path | None = None
    ) -> int:
        """Remove a directory tree bottom-up, never following symlinks; return bytes freed.

        A directory inside that its owner may not write or search (a copied
        read-only package, a 0500 assets directory) would stop the removal
        half-way as any user but root: such directories owned by this user get
        ``u+rwx`` and the removal goes on. ``last`` names a file at the top
        that goes after everything else (a version's descriptor, when it is
        removed in place). Raise OSError if the tree still cannot be removed
        (another user's read-only directory).
        """
        freed = [0]
        # Bind mounts of the same filesystem keep its st_dev: the table tells them, by
        # the tree's real path (``mounts_at``) when ``path`` reaches it through a descriptor.
        mounts = mount_points(mounts_at or path)
        try:
            return self._remove_tree(path, freed, mounts, last)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EPERM, errno.ENOTEMPTY):
                raise
            if not self._open_up(path, mounts):
                raise
            return self._remove_tree(path, freed, mounts, last)

    def _open_up(self, path: Path, mounts: frozenset[Inode]) -> bool:
        """Give this user rwx on each of its directories below ``path``; return if any changed."""
        changed = False
        device = os.lstat(path).st_dev
        pending = [path]
        while pending:
            directory = pending.pop()
            try:
                info = os.lstat(directory)
            except FileNotFoundError:
                continue
            mode = stat.S_IMODE(info.st_mode)
            if not stat.S_ISDIR(info.st_mode):
                continue
            if info.st_dev != device or (info.st_dev, info.st_ino) in mounts:
                continue  # another mount: never changed
            if mode & 0o700 != 0o700 and info.st_uid == os.geteuid():
                self.chmod(directory, mode | 0o700)
                changed = True
            with contextlib.suppress(OSError), os.scandir(directory) as entries:
                pending.extend(
                    Path(entry.path) for entry in entries if entry.is_dir(follow_symlinks=False)
                )
        return changed

    def _remove_tree(
        self, path: Path, freed: list[int], mounts: frozenset[Inode], last: str | None = None
    ) -> int:
        """Remove ``path`` bottom-up, adding each step's bytes to ``freed[0]``; return the sum."""
        try:
            top = os.lstat(path)
        except FileNotFoundError:
            return freed[0]
        if not stat.S_ISDIR(top.st_mode):
            freed[0] += top.st_blocks * 512 if top.st_nlink == 1 else 0
            self.unlink(path)
            return freed[0]

        for base, subdirectories, files in _walk_bottom_up(path, top, mounts):
            kept_for_last = None
            at_top = base == path
            for entry in files:
                if at_top and entry.name == last:
                    kept_for_last = entry
                else:
                    self._unlink_counted(base, entry, freed)
            for subdirectory in subdirectories:
                target = base / subdirectory
                with contextlib.suppress(FileNotFoundError):
                    info = os.lstat(target)
                    if stat.S_ISLNK(info.st_mode):
                        self.unlink(target)  # os.walk lists links to dirs as dirs
                    else:
                        self.rmdir(target)
                    freed[0] += info.st_blocks * 512
            if kept_for_last is not None:
                self._unlink_counted(base, kept_for_last, freed)
        self.rmdir(path)
        freed[0] += top.st_blocks * 512
        return freed[0]

    def _unlink_counted(self, base: Path, entry: os.DirEntry[str], freed: list[int]) -> None:
        """Unlink one listed entry of ``base``; count its blocks unless another link keeps them."""
        with contextlib.suppress(FileNotFoundError):
            info = entry.stat(follow_symlinks=False)  # this entry as it is now: one fstatat
            self.unlink(base / entry.name)
            freed[0] += info.st_blocks * 512 if info.st_nlink == 1 else 0


def _walk_bottom_up(
    top: Path, top_info: os.stat_result, mounts: frozenset[Inode] = frozenset()
) -> Iterator[tuple[Path, list[str], list[os.DirEntry[str]]]]:
    """Yield ``(directory, subdirectories, other entries)`` below ``top``, deepest first.

    Like ``os.walk(top, topdown=False)``, but without recursion (Python 3.11's
    os.walk recurses, and a version nested a thousand directories deep would
    raise RecursionError) and stopping at a directory it cannot list rather
    than skipping it. Symlinks to directories are listed, never followed.
    Everything is listed before the first yield, so a directory on another
    filesystem (a mount point) raises OSError(EXDEV) before anything is
    removed: the warden never deletes on a filesystem mounted inside a version.
    ``mounts`` are the mount points known from the mount table (a bind mount
    of the same filesystem keeps its ``st_dev``); ``top`` (``top_info`` its
    lstat) must not be one. The other entries come as listed, so that each
    is stat'ed once, when it goes.
    """
    device = top_info.st_dev
    if (device, top_info.st_ino) in mounts:
        raise OSError(errno.EXDEV, "a filesystem is mounted here; not removed", str(top))
    listed: list[tuple[Path, list[str], list[os.DirEntry[str]]]] = []
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except FileNotFoundError:
            continue
        subdirectories = [entry.name for entry in entries if entry.is_dir()]
        files = [entry for entry in entries if not entry.is_dir()]
        listed.append((directory, subdirectories, files))
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            if info.st_dev != device or (info.st_dev, info.st_ino) in mounts:
                raise OSError(errno.EXDEV, "a filesystem is mounted here; not removed", entry.path)
            pending.append(directory / entry.name)
    yield from reversed(listed)


@dataclass
class StoreLock:
    """An exclusive ``fcntl`` lock on ``<state>/lock``: one warden prunes a store at a time."""

    path: Path
    _descriptor: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raise StoreBusyError if it stays taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(descriptor)
                    raise StoreBusyError(
                        f"another storewarden holds {self.path}; try again later"
                    ) from None
                time.sleep(0.05)
                continue
            break
        # The pid is a hint for humans only: on a full disk the write fails, and
        # that must neither stop the warden that is there to free space nor
        # leak the descriptor (and with it the lock).
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor

    def release(self) -> None:
        """Release the lock if held."""
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None

    @contextlib.contextmanager
    def held(self, wait: float = 0.0) -> Iterator[StoreLock]:
        """Hold the lock for the body of a ``with`` block."""
        self.acquire(wait)
        try:
            yield self
        finally:
            self.release()


_INTENT_FIELDS = 8
_REASON = re.compile(r"^[a-z_]{1,32}$")


@dataclass(frozen=True)
class Intent:
    """A removal about to happen, recorded as the name of an empty file in the trash.

    ``pointer`` is ``-`` when the removal does not move ``latest``, else the
    first letter of the pointer's form (``f``ile or ``s``ymlink). ``+`` never
    occurs in a tag, so it separates the fields; the name stays under 255
    bytes even for 63-character names and versions.
    """

    intent_id: str
    kind: Kind
    name: str
    version: str
    reason: str
    bytes: int
    created: int
    pointer: str

    @classmethod
    def of(cls, record: VersionRecord, intent_id: str, reason: str, pointer: str) -> Intent:
        """Return the intent to remove ``record`` for ``reason``, ``pointer`` as above."""
        return cls(
            intent_id=intent_id,
            kind=record.kind,
            name=record.name,
            version=record.version,
            reason=reason,
            bytes=record.bytes,
            created=int(record.creation_time.timestamp()),
            pointer=pointer,
        )

    def file_name(self) -> str:
        """Return the intent file's name."""
        fields = (self.intent_id, self.kind, self.name, self.version, self.reason)
        return "+".join((*fields, str(self.bytes), str(self.created), self.pointer))

    @classmethod
    def parse(cls, file_name: str) -> Intent | None:
        """Return the intent a file name records, or None if it is not a valid one."""
        fields = file_name.split("+")
        if len(fields) != _INTENT_FIELDS:
            return None
        intent_id, kind, name, version, reason, size, created, pointer = fields
        if kind not in ("models", "bentos") or pointer not in ("-", "f", "s", "i", "h", "r"):
            return None
        if not (is_valid_tag_part(name) and is_valid_tag_part(version)):
            return None
        if not re.fullmatch(r"[0-9a-f]{1,32}-[0-9]{1,9}", intent_id) or not _REASON.match(reason):
            return None
        if not (size.isdigit() and created.lstrip("-").isdigit()):
            return None
        return cls(
            intent_id,
            "models" if kind == "models" else "bentos",
            name,
            version,
            reason,
            int(size),
            int(created),
            pointer,
        )


@dataclass(frozen=True)
class RemovalOutcome:
    """What one removal did: bytes freed and the pointer change, if any."""

    record: VersionRecord
    bytes_freed: int
    pointer_old: str | None
    pointer_new: str | None


@dataclass(frozen=True)
class Recovery:
    """What :meth:`Pruner.recover` finished or undid."""

    rolled_back: int
    completed: int
    trash_entries: int
    trash_bytes: int
    pointers_repaired: int
    snapshot: Snapshot | None = None  # the census recovery took, if it then changed nothing

    @property
    def changed_store(self) -> bool:
        """Return whether recovery changed anything in ``models/`` or ``bentos/``."""
        return bool(self.rolled_back or self.completed or self.pointers_repaired)


class Pruner:
    """Removes versions and rewrites pointers in one store, crash-safely.

    The caller holds the store lock around every call.
    """

    def __init__(
        self,
        root: Path,
        state_dir: Path,
        *,
        kinds: tuple[Kind, ...] = ("models", "bentos"),
        operations: Operations | None = None,
        filesystem: FileSystem | None = None,
        settle: Callable[[str, str], float] = lambda _kind, _name: 0.0,
        clock: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
    ) -> None:
        self.root = root
        self.state_dir = state_dir
        self.kinds = kinds
        self.operations = operations or Operations()
        self.filesystem = filesystem or FileSystem()
        self.settle = settle
        self.clock = clock
        self.trash = state_dir / "trash"
        self.temporary = state_dir / "tmp"
        # One per filesystem the store spans (the store root's first): prepare() finds them.
        self.places: list[Place] = [Place(0, (), state_dir, state_dir / "trash")]
        self._by_kind: dict[str, Place] = {}
        self.log = get_logger()
        self._sequence = 0

    # -- set-up -----------------------------------------------------------------

    def prepare(self, *, create: bool = True) -> None:
        """Check the state directory can be the warden's own, and create it (unless not ``create``).

        The warden only ever deletes inside directories it created and marked
        (STATE_MARKER), so the state directory must be one it made, or empty,
        or hold only what an older warden left there (which it then marks). It
        must not be the store itself, nor lie inside ``models/`` or
        ``bentos/`` (BentoML rejects any entry there that is not a valid
        tag), and its trash must be on the store's filesystem (a rename, not
        a copy). Raise UnsafeStateDirError naming what is wrong. Raise
        FileNotFoundError if the store itself is missing: creating the state
        directory must not create a store at a mistyped path. With ``create``
        false nothing is written (``storewarden check``).
        """
        if not self.root.is_dir():
            raise FileNotFoundError(f"store {self.root} does not exist or is not a directory")
        check_state_dir(self.root, self.state_dir)
        self.places = find_places(self.root, self.state_dir, self.kinds)
        self._by_kind = {kind: place for place in self.places for kind in place.kinds}
        if not create:
            return
        fresh = not os.path.lexists(self.state_dir)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if fresh or not (self.state_dir / STATE_MARKER).exists():
            mark_state_dir(self.state_dir)
        for directory in (self.trash, self.temporary):
            directory.mkdir(mode=0o700, exist_ok=True)
        _check_wiped(self.state_dir, adopting=False)  # nothing swapped in since the check
        if os.stat(self.trash).st_dev != os.stat(self.root).st_dev:
            raise UnsafeStateDirError(
                f"state_dir {self.state_dir} is on another filesystem than the store "
                f"{self.root}; the trash must be reachable by rename"
            )

    def temporary_for(self, path: Path) -> Path:
        """Return the warden's tmp directory for a rename to ``path``; raise OSError(EXDEV).

        Where ``path`` is on a kind directory that is a mount of its own, no
        such directory exists (nothing may be written aside there).
        """
        while not os.path.lexists(path) and path != path.parent:
            path = path.parent
        if self._place_of(path).trash is None:
            raise OSError(
                errno.EXDEV,
                "a mount of its own: nothing can be renamed into place here atomically",
                str(path),
            )
        return self.temporary

    def _place_of(self, path: Path) -> Place:
        """Return the mount ``path`` is on; raise OSError(EXDEV) for one the store does not span.

        By the kind directory it is under (two mounts may share a device: a
        bind mount of the same filesystem), checked against its device.
        """
        if not self._by_kind:  # prepare() not called: the single-filesystem default
            return self.places[0]
        try:
            kind = path.relative_to(self.root).parts[0]
        except (ValueError, IndexError):
            kind = ""
        place = self._by_kind.get(kind, self.places[0])
        if os.lstat(path).st_dev != place.device:
            raise OSError(
                errno.EXDEV, "on a filesystem the store does not span; left alone", str(path)
            )
        return place

    def in_place(self, path: Path) -> bool:
        """Return whether a version at ``path`` is removed in place (its kind is its own mount)."""
        return self._place_of(path).trash is None

    # -- pointers ---------------------------------------------------------------

    def read_pointer(self, kind: Kind, name: str) -> tuple[str | None, str | None]:
        """Return ``(form, target)`` of the pointer now on disk; ``(None, None)`` if absent."""
        path = self.root / kind / name / POINTER
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None, None
        pointer = read_pointer(kind, name, path, self.filesystem, info)
        return pointer.form, pointer.target

    def versions_on_disk(self, kind: Kind, name: str) -> list[VersionRecord]:
        """Return a fresh census of every version directory of a name now on disk.

        Symlinked versions and entries that are not valid tags are left out,
        as the census leaves them out.
        """
        name_dir = self.root / kind / name
        try:
            entries = self.filesystem.scandir(name_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for entry in entries:
            if entry.name == POINTER or not is_valid_tag_part(entry.name):
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            record = census_version(kind, name, Path(entry.path), self.filesystem, set())
            if record is not None:
                found.append(record)
        return found

    def newest_settled(
        self, kind: Kind, name: str, excluding: str | None, *, settled: bool = True
    ) -> str | None:
        """Return the version ``latest`` may name now: the newest complete and settled one.

        Complete: its descriptor parses and everything in it can be read.
        Settled: nothing in it changed for the name's ``settle`` period, so no
        save is still copying into it (BentoML writes ``latest`` only after
        the copy). Newest: by ``creation_time``, as BentoML picks. With
        ``settled=False`` (``--force``) any complete version will do, as
        BentoML's own delete would pick. Return None if there is none.
        """
        cutoff = self.clock() - timedelta(seconds=self.settle(kind, name))
        best: tuple[datetime, str] | None = None
        for record in self.versions_on_disk(kind, name):
            if record.version == excluding or not record.complete:
                continue
            if settled and record.last_change > cutoff:
                continue
            candidate = (record.creation_time, record.version)
            if best is None or candidate > best:
                best = candidate
        return best[1] if best else None

    def others_remain(self, kind: Kind, name: str, excluding: str) -> bool:
        """Return whether a name holds any version directory besides ``excluding``."""
        name_dir = self.root / kind / name
        try:
            entries = self.filesystem.scandir(name_dir)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return any(
            entry.name not in (POINTER, excluding) and is_valid_tag_part(entry.name)
            for entry in entries
        )

    def write_pointer(self, kind: Kind, name: str, target: str, form: str | None) -> None:
        """Atomically point ``latest`` of a name at ``target``, in ``form`` (file by default).

        The temp file lives under ``<state>/tmp`` so no stray entry ever
        appears in the name directory; a failure leaves the old pointer whole.
        Raise NotADirectoryError if the kind or name directory is a symlink
        (or not a directory) just before the rename: it would land there.
        """
        name_dir = self.root / kind / name
        temporary = self.temporary_for(name_dir) / f"latest-{uuid.uuid4().hex}"
        try:
            if form == "symlink":
                self.operations.symlink(target, temporary)
            else:
                self.operations.write_file(temporary, target.encode())
                self.operations.fsync_file(temporary)
            refuse_linked(self.root, kind, name, "latest is not written through it")
            self.operations.rename(temporary, name_dir / POINTER)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self.operations.fsync_dir(name_dir)

    def remove_pointer(self, kind: Kind, name: str) -> None:
        """Remove the ``latest`` pointer of a name, if present."""
        path = self.root / kind / name / POINTER
        with contextlib.suppress(FileNotFoundError):
            self.operations.unlink(path)
            self.operations.fsync_dir(path.parent)

    def remove_name_if_empty(self, kind: Kind, name: str) -> bool:
        """Remove a name directory that holds nothing (no versions, no pointer)."""
        name_dir = self.root / kind / name
        try:
            self.operations.rmdir(name_dir)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                return False
            raise
        self.operations.fsync_dir(name_dir.parent)
        self.log.info("name_removed", kind=kind, name=name)
        return True

    # -- removal ------------------------------------------------------------------

    def _write_intent(self, intent: Intent, trash: Path, *, durable: bool) -> Path:
        """Record the intent as an empty file whose name holds it: no data block needed.

        A full filesystem has no block for a record's contents, but a name
        in the trash directory's existing block costs nothing.
        """
        path = trash / intent.file_name()
        self.operations.write_file(path, b"", mode=0o600)
        if durable:
            self.operations.fsync_dir(trash)
        return path

    def remove(
        self,
        record: VersionRecord,
        *,
        reason: str,
        run_id: str,
        announce: Callable[[RemovalOutcome], None] | None = None,
        force: bool = False,
    ) -> RemovalOutcome:
        """Remove one version crash-safely and return what was freed.

        Moves ``latest`` first when it names the version. ``announce`` (which
        logs ``version_removed``) is called while the intent record still
        exists, so a crash at any instant leaves the event logged, or the
        intent for :meth:`recover` to log it. Raise OSError if a step fails;
        the store is valid whatever step failed, and :meth:`recover`
        finishes or undoes the rest.
        """
        self._sequence += 1
        intent_id = f"{run_id}-{self._sequence}"
        # The version leaves through a descriptor of its name directory, opened without
        # following a symlink (the last look checked it too; this is the instant before
        # the first write): one swapped in after this (a rename exchange) is never
        # followed, and what is renamed is the store's own version wherever it now is.
        name_dir = self._open_name_directory(record.kind, record.name)
        try:
            if self.in_place(record.path):
                return self._remove_in_place(record, name_dir, reason, intent_id, announce)
            return self._remove_below(record, name_dir, reason, intent_id, announce, force)
        finally:
            os.close(name_dir)

    def _open_name_directory(self, kind: Kind, name: str) -> int:
        """Open ``root/kind/name`` following no symlink at kind or name; refuse a mount.

        Raise OSError (ELOOP or ENOTDIR for a symlink, EXDEV for a mount).
        """
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        kind_dir = os.open(self.root / kind, flags)
        try:
            name_dir = os.open(name, flags, dir_fd=kind_dir)
            try:
                mounted = self.filesystem.is_mount(os.fstat(name_dir), os.fstat(kind_dir))
            except BaseException:
                os.close(name_dir)
                raise
        finally:
            os.close(kind_dir)
        if mounted:
            os.close(name_dir)
            raise OSError(
                errno.EXDEV,
                "another filesystem is mounted here; nothing is removed from it",
                str(self.root / kind / name),
            )
        return name_dir

    def _remove_below(
        self,
        record: VersionRecord,
        name_dir: int,
        reason: str,
        intent_id: str,
        announce: Callable[[RemovalOutcome], None] | None,
        force: bool,
    ) -> RemovalOutcome:
        """Remove one version through its name directory's descriptor (see :meth:`remove`)."""
        kind, name = record.kind, record.name
        form, current = self.read_pointer(kind, name)
        pointer_new: str | None = None
        moves_pointer = current == record.version
        if moves_pointer:
            pointer_new = self.newest_settled(
                kind, name, excluding=record.version, settled=not force
            )
            if pointer_new is None and self.others_remain(kind, name, record.version):
                # Removing the pointer would let BentoML's get("name:latest") pick a
                # version still being written; the version waits instead.
                raise NoSettledLatestError(
                    f"{kind}/{record.tag} is what latest names, and no other version of"
                    f" {name} is complete and settled for latest to move to yet"
                )
        intent = Intent.of(record, intent_id, reason, (form or "file")[0] if moves_pointer else "-")
        # Only a moved pointer needs its intent on disk before it moves: without one,
        # a power loss can at worst leave the version in place, which is valid.
        trash = self.trash
        intent_path = self._write_intent(intent, trash, durable=moves_pointer)
        trash_entry = trash / intent_id
        try:
            if moves_pointer:
                self._move_pointer_off(record, form, pointer_new)
            self.operations.rename(record.path, trash_entry, source_dir=name_dir)
        except Exception:
            # Still in the store: put things back now rather than at the next start.
            # (A crash, unlike an exception, leaves this to recovery.)
            if os.path.lexists(record.path):
                self._undo(intent, intent_path, form if moves_pointer else None)
            raise
        # Both directories, before anything is logged: after a power loss the version
        # must not come back once version_removed says it went.
        self.operations.fsync_dir(record.path.parent)
        self.operations.fsync_dir(trash)
        if moves_pointer and pointer_new is None:
            self.remove_name_if_empty(kind, name)
        freed = self._empty_trash_entry(trash_entry) or 0
        outcome = RemovalOutcome(record, freed, current if moves_pointer else None, pointer_new)
        if announce is not None:
            announce(outcome)
        self.operations.unlink(intent_path)
        return outcome

    def hidden(self, intent: Intent) -> Path:
        """Return where a version removed in place waits while its files go.

        A name directory of its kind (``storewarden-removing-<intent id>``):
        a valid tag, so ``bentoml models list`` keeps working, but no tag of
        the version resolves there, so nothing can be built on it or load it.
        """
        return self.root / intent.kind / f"{REMOVING_PREFIX}{intent.intent_id}" / intent.version

    def _remove_in_place(
        self,
        record: VersionRecord,
        name_dir: int,
        reason: str,
        intent_id: str,
        announce: Callable[[RemovalOutcome], None] | None,
    ) -> RemovalOutcome:
        """Remove a version of a kind that is a mount of its own, on that mount.

        No trash can be on that mount, so the version leaves its name in one
        rename into a hidden name directory beside it (see :meth:`hidden`):
        from then on BentoML cannot resolve it, and its files go deepest
        first with the descriptor last, so BentoML's listing stays valid
        throughout. The intent (in the store root's trash) lets a restart
        finish or undo it. ``latest`` cannot be rewritten atomically on such
        a mount, so a version it names goes only as its name's last (the
        pointer then goes too); raise OwnMountLatestError otherwise. Files
        that cannot be removed (another user's read-only directory) are
        logged as ``trash_not_emptied`` and retried at the next start: the
        version is out of the store already.
        """
        kind, name = record.kind, record.name
        _form, current = self.read_pointer(kind, name)
        moves_pointer = current == record.version
        if moves_pointer and self.others_remain(kind, name, record.version):
            raise OwnMountLatestError(
                f"{kind}/{record.tag} is what latest names, and {kind}/ is a mount of its own:"
                " latest cannot be rewritten atomically there"
            )
        intent = Intent.of(record, intent_id, reason, "i")
        intent_path = self._write_intent(intent, self.trash, durable=True)
        hidden = self.hidden(intent)
        try:
            self.operations.mkdir(hidden.parent, mode=0o700)
            self.operations.rename(record.path, hidden, source_dir=name_dir)
        except Exception:
            # Still in the store: put things back now rather than at the next start.
            if os.path.lexists(record.path):
                with contextlib.suppress(OSError):
                    self.operations.rmdir(hidden.parent)
                self._undo(intent, intent_path, None)
            raise
        self.operations.fsync_dir(record.path.parent)
        self.operations.fsync_dir(hidden.parent.parent)
        if moves_pointer:  # dangling for an instant, as after BentoML's own delete
            self._move_pointer_off(record, None, None)
            self.remove_name_if_empty(kind, name)
        freed = self._empty_hidden(intent)
        outcome = RemovalOutcome(record, freed or 0, current if moves_pointer else None, None)
        if announce is not None:
            announce(outcome)
        self._settle_hidden(intent, intent_path, emptied=freed is not None)
        return outcome

    def _empty_hidden(self, intent: Intent) -> int | None:
        """Delete a hidden version and its directory; return bytes freed, None if it must wait."""
        hidden = self.hidden(intent)
        try:
            anchor = self._open_hidden_parent(hidden.parent)
        except FileNotFoundError:
            return 0  # emptied and removed already
        except OSError as error:
            self.log.error("trash_not_emptied", path=str(hidden.parent), error=str(error))
            return None
        try:
            # Walked through the descriptor: the hidden directory sits in the store's
            # own kind directory, where its owner could swap it for a symlink meanwhile.
            freed = self.operations.remove_tree(
                Path(f"/proc/self/fd/{anchor}") / hidden.name,
                last=DESCRIPTORS[intent.kind],
                mounts_at=hidden,
            )
            with contextlib.suppress(FileNotFoundError):
                self.operations.rmdir(hidden.parent)
            self.operations.fsync_dir(hidden.parent.parent)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EROFS, errno.EIO):
                raise
            self.log.error("trash_not_emptied", path=str(hidden.parent), error=str(error))
            return None
        finally:
            os.close(anchor)
        return freed

    def _open_hidden_parent(self, path: Path) -> int:
        """Open a hidden name directory this warden made; raise OSError if it is not that one.

        Not followed if a symlink (ELOOP); refused (EPERM) unless owned by this
        user with mode 0700, as :meth:`_remove_in_place` made it: nobody else
        can have made one so, or put anything into it.
        """
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(path, flags)
        info = os.fstat(descriptor)
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) != 0o700:
            os.close(descriptor)
            raise PermissionError(
                errno.EPERM, "not the hidden directory this warden made; left alone", str(path)
            )
        return descriptor

    def _settle_hidden(self, intent: Intent, intent_path: Path, *, emptied: bool) -> None:
        """Drop the intent of an announced removal, or keep it as ``h`` (only emptying left)."""
        if emptied:
            self.operations.unlink(intent_path)
        elif intent.pointer != "h":
            waiting = replace(intent, pointer="h")
            self.operations.rename(intent_path, intent_path.with_name(waiting.file_name()))

    def _move_pointer_off(self, record: VersionRecord, form: str | None, new: str | None) -> None:
        """Point ``latest`` (which names ``record``) at ``new``, or remove it if None."""
        kind, name = record.kind, record.name
        if new is not None:
            self.write_pointer(kind, name, new, form)
            self.log.info(
                "latest_changed",
                kind=kind,
                name=name,
                old=record.version,
                new=new,
                reason="removed",
            )
        else:
            self.remove_pointer(kind, name)
            self.log.info(
                "latest_removed", kind=kind, name=name, old=record.version, reason="removed"
            )

    def _undo(self, intent: Intent, intent_path: Path, form: str | None) -> None:
        """Undo a removal that failed before its version left the store; never raise.

        ``form`` is the pointer's form if the removal was to move it: it goes
        back to the version. Whatever cannot be undone now waits for recovery.
        """
        kind, name, version = intent.kind, intent.name, intent.version
        try:
            if form is not None and self.read_pointer(kind, name)[1] != version:
                self.write_pointer(kind, name, version, form)
                self.log.info(
                    "latest_changed", kind=kind, name=name, old=None, new=version, reason="rollback"
                )
            self.operations.unlink(intent_path)
        except OSError:
            return
        self.log.info("removal_rolled_back", kind=kind, name=name, version=version)

    # -- recovery ---------------------------------------------------------------

    def recover(
        self,
        measure_percent: Callable[[], float],
        take_census: Callable[[], Snapshot] | None = None,
    ) -> Recovery:
        """Finish or undo work a crash interrupted, empty the trash, repair pointers.

        For each intent record: if the version is still in the store the
        removal never happened, so a pointer moved for it is moved back;
        otherwise the removal is completed and logged (``recovered=True``).
        """
        self.prepare()
        self._empty_temporary()
        rolled_back = completed = 0
        percent = measure_percent()
        trash = self.trash
        for entry in self._listing(trash):
            intent = Intent.parse(entry)
            if intent is None:
                continue
            if intent.pointer == "r":  # a restore: latest follows if the version came back
                if os.path.lexists(self.root / intent.kind / intent.name / intent.version):
                    self.point_at_restored(intent.kind, intent.name, intent.version)
            elif intent.pointer in ("i", "h"):
                finished = self._finish_hidden(intent, trash / entry, percent)
                completed += finished is True
                rolled_back += finished is False
                continue
            elif self._finish_intent(intent, percent):
                completed += 1
                self._empty_trash_entry(trash / intent.intent_id)
            else:
                rolled_back += 1
                self._empty_trash_entry(trash / intent.intent_id)
            self.operations.unlink(trash / entry)
        entries = trash_bytes = 0
        for leftover in self._listing(trash):
            if Intent.parse(leftover) is not None:
                continue  # a removal in place whose files must wait (``h``)
            freed = self._empty_trash_entry(trash / leftover)
            if freed is not None:
                trash_bytes += freed
                entries += 1
        if entries:
            self.log.info("trash_emptied", entries=entries, bytes=trash_bytes)
        snapshot = take_census() if take_census else census(self.root, self.kinds, self.filesystem)
        repaired, changed_since = self.repair_pointers(snapshot)
        recovery = Recovery(rolled_back, completed, entries, trash_bytes, repaired)
        if not recovery.changed_store and not changed_since:
            recovery = Recovery(rolled_back, completed, entries, trash_bytes, repaired, snapshot)
        return recovery

    def _empty_temporary(self) -> None:
        """Delete what an interrupted run left in the warden's own ``tmp``; log it."""
        leftovers = cleaned = 0
        for leftover in self._listing(self.temporary):
            cleaned += self.operations.remove_tree(self.temporary / leftover)
            leftovers += 1
        if leftovers:
            self.log.info("tmp_emptied", entries=leftovers, bytes=cleaned)

    def _empty_trash_entry(self, path: Path) -> int | None:
        """Delete one trash entry; return the bytes freed, or None if it must wait.

        An entry that cannot be deleted (another user's read-only directory
        inside) is logged as ``trash_not_emptied`` and left for the next
        start: it is out of the store already, and one such entry must not
        stop every prune after it.
        """
        try:
            return self.operations.remove_tree(path)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EROFS, errno.EIO):
                raise
            self.log.error("trash_not_emptied", path=str(path), error=str(error))
            return None

    def _listing(self, directory: Path) -> list[str]:
        try:
            return sorted(os.listdir(directory))
        except FileNotFoundError:
            return []

    def _log_recovered(self, intent: Intent, percent: float) -> None:
        """Log ``version_removed`` for a removal a restart finished."""
        self.log.info(
            "version_removed",
            kind=intent.kind,
            name=intent.name,
            version=intent.version,
            path=str(self.root / intent.kind / intent.name / intent.version),
            bytes=intent.bytes,
            creation_time=datetime.fromtimestamp(intent.created, tz=UTC).isoformat(),
            reason=intent.reason,
            run_id=intent.intent_id.split("-")[0],
            used_percent_before=round(percent, 2),
            used_percent_after=round(percent, 2),
            recovered=True,
        )

    def _finish_hidden(self, intent: Intent, intent_path: Path, percent: float) -> bool | None:
        """Finish or undo a removal in place; True if finished, False if undone, None if neither.

        Hidden (renamed away) means done: BentoML could not resolve it since,
        so nothing can have started to need it, and only emptying is left.
        Still in its place means the rename never happened: nothing to undo
        but the empty hidden directory, whatever was pinned or built since.
        ``h`` is a removal already logged whose files could not all go.
        """
        kind, name, version = intent.kind, intent.name, intent.version
        hidden = self.hidden(intent)
        in_place = os.path.lexists(self.root / kind / name / version)
        if intent.pointer == "i" and not os.path.lexists(hidden) and in_place:
            with contextlib.suppress(OSError):
                self.operations.rmdir(hidden.parent)
            self.operations.unlink(intent_path)
            self.log.info("removal_rolled_back", kind=kind, name=name, version=version)
            return False
        if intent.pointer == "i":
            self._log_recovered(intent, percent)
        if self.read_pointer(kind, name) == (None, None):
            self.remove_name_if_empty(kind, name)
        emptied = self._empty_hidden(intent) is not None
        self._settle_hidden(intent, intent_path, emptied=emptied)
        return True if intent.pointer == "i" else None

    def _finish_intent(self, intent: Intent, percent: float) -> bool:
        """Return True if the intent's version had left the store, False if rolled back.

        A version still in place was never removed: a pointer moved off it
        goes back to the newest complete version (itself, unless BentoML saved
        a newer one meanwhile). A version gone is logged as removed.
        """
        kind, name, version = intent.kind, intent.name, intent.version
        path = self.root / kind / name / version
        moved = intent.pointer != "-"
        form = "symlink" if intent.pointer == "s" else "file"
        if os.path.lexists(path):
            if moved:
                current_form, current = self.read_pointer(kind, name)
                newest = self.rollback_target(kind, name, current)
                if newest is not None and current != newest:
                    self.write_pointer(kind, name, newest, current_form or form)
                    self.log.info(
                        "latest_changed",
                        kind=kind,
                        name=name,
                        old=current,
                        new=newest,
                        reason="rollback",
                    )
            self.log.info("removal_rolled_back", kind=kind, name=name, version=version)
            return False
        self._log_recovered(intent, percent)
        if moved and self.read_pointer(kind, name) == (None, None):
            self.remove_name_if_empty(kind, name)
        return True

    def intend_restore(self, kind: Kind, name: str, version: str) -> Path:
        """Record (durably) that a version is about to be put back; return the record's path."""
        self._sequence += 1
        intent = Intent(
            intent_id=f"{uuid.uuid4().hex[:12]}-{self._sequence}",
            kind=kind,
            name=name,
            version=version,
            reason="restored",
            bytes=0,
            created=0,
            pointer="r",
        )
        return self._write_intent(intent, self.trash, durable=True)

    def point_at_restored(
        self, kind: Kind, name: str, version: str
    ) -> tuple[str | None, str | None]:
        """Point ``latest`` at a version put back, if BentoML's save would; return (old, new).

        BentoML points ``latest`` at a version it saved when there is no
        usable pointer, or the new version is at least as new as the one it
        names. ``new`` is None when the pointer stays, as it does when the
        kind or name directory is a symlink (the census never scans one).
        """
        if linked_directory(self.root, kind, name) is not None:
            return None, None
        form, current = self.read_pointer(kind, name)
        on_disk = {record.version: record for record in self.versions_on_disk(kind, name)}
        restored, named = on_disk.get(version), on_disk.get(current or "")
        if restored is None or not restored.complete or current == version:
            return current, None
        if named is not None and named.complete and restored.creation_time < named.creation_time:
            return current, None
        self.write_pointer(kind, name, version, form)
        self.log.info(
            "latest_changed", kind=kind, name=name, old=current, new=version, reason="restored"
        )
        return current, version

    def rollback_target(self, kind: Kind, name: str, current: str | None) -> str | None:
        """Return where ``latest`` goes back to after a removal was undone (None: leave it).

        The newest complete, settled version, unless the pointer already names
        a complete version at least as new (BentoML saved one meanwhile and
        pointed ``latest`` at it after its copy).
        """
        best = self.newest_settled(kind, name, excluding=None)
        if best is None or current is None:
            return best
        on_disk = {record.version: record for record in self.versions_on_disk(kind, name)}
        now_named, best_record = on_disk.get(current), on_disk.get(best)
        if (
            now_named is not None
            and best_record is not None
            and now_named.complete
            and now_named.creation_time >= best_record.creation_time
        ):
            return None
        return best

    def _pointer_fixed_since(self, kind: Kind, name: str, seen: str | None) -> bool:
        """Return whether a pointer the census found broken is fine now, or rewritten since.

        The census lists a name directory before it reads its ``latest``: a
        save in between (BentoML writes the version, then the pointer) shows
        a pointer naming a version the listing missed. Repairing it then put
        ``latest`` back on an older version. Re-read just before the repair:
        a pointer rewritten since, or naming a version directory now there,
        is left as it is (the next census judges it again).
        """
        try:
            _form, target = self.read_pointer(kind, name)
        except OSError:
            return True  # cannot be read now: left as it is, like an unreadable one
        if target != seen:
            return True
        if target is None or not is_valid_tag_part(target):
            return False
        try:
            return stat.S_ISDIR(os.lstat(self.root / kind / name / target).st_mode)
        except OSError:
            return False

    def repair_pointers(self, snapshot: Snapshot) -> tuple[int, bool]:
        """Point every pointer that names a missing or invalid version at the newest complete one.

        A name left with no complete version loses its pointer (and its
        directory, if that is then empty). Return how many were repaired,
        and whether a pointer had changed since ``snapshot`` (then it is stale).
        """
        repaired = 0
        changed_since = False
        for (kind_text, name), pointer in sorted(snapshot.pointers.items()):
            if pointer.problem is None or pointer.unreadable:
                continue  # an unreadable one may name any version: left as it is
            kind: Kind = "bentos" if kind_text == "bentos" else "models"
            if self._pointer_fixed_since(kind, name, pointer.target):
                changed_since = True
                continue
            new = self.newest_settled(kind, name, excluding=None)
            if new is None and self.newest_settled(kind, name, None, settled=False):
                # Only versions still being written: pointing at one could name a
                # half-copied model; BentoML's own get("name:latest") would. Wait.
                self.log.warning(
                    "pointer_repair_deferred",
                    kind=kind,
                    name=name,
                    problem=pointer.problem,
                    reason="no complete version has settled yet",
                )
                continue
            try:
                if new is not None:
                    self.write_pointer(kind, name, new, pointer.form)
                else:
                    self.remove_pointer(kind, name)
                    self.remove_name_if_empty(kind, name)
            except OSError as error:
                self.log.error("pointer_repair_failed", kind=kind, name=name, error=str(error))
                continue
            self.log.info(
                "pointer_repaired",
                kind=kind,
                name=name,
                old=pointer.target,
                new=new,
                problem=pointer.problem,
            )
            repaired += 1
        return repaired, changed_since

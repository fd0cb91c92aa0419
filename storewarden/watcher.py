"""Watching the store: record what changed, ask for an early check. No pruning here.

On Linux the daemon watches with :class:`InotifyWatcher`: one inotify
descriptor and one reader thread, holding watches on the root, the kind
directories and the name directories, plus only the version directories
still settling (and the directories inside those). A settled store of
50,000 versions over 500 names holds about 503 watches, not 50,000: the
watch count grows with the number of names and of versions being written,
never with the versions at rest. Whatever a watch cannot see (a settled
version changed in place, a watch the kernel refused) the reconcile job's
full rescan corrects.

With ``schedule.observer: polling`` (NFS), or where inotify cannot even
watch the root and the kinds, :class:`PollingWatcher` looks at the same
directories every ``schedule.poll_interval``: a thousand ``lstat`` calls
for 50,000 versions over 500 names, not a walk of the store. On platforms
without inotify a watchdog observer watches each kind directory
recursively (:class:`ObserverWatcher`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from storewarden.index import Index, Touched
from storewarden.logs import get_logger
from storewarden.store import POINTER, VersionRecord
from storewarden.tags import is_store_name, is_valid_tag_part

# Reads (opened, closed_no_write) are left out: the census itself reads every
# descriptor and must not wake the watcher that asked for it.
EVENTS_OF_INTEREST: list[type[FileSystemEvent]] = [
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
]


class ChangeRecorder(FileSystemEventHandler):
    """Collects what events touched (debounced by the caller) and calls ``on_change``."""

    def __init__(self, index: Index, on_change: Callable[[], None]) -> None:
        self.index = index
        self._index = index
        self._on_change = on_change
        self._lock = threading.Lock()
        self._touched: set[Touched] = set()

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Record the version, name or kind a watchdog event touched; never raises."""
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", ""):
            paths.append(os.fsdecode(event.dest_path))
        self.record_paths(paths)

    def record_paths(self, paths: Iterable[str]) -> None:
        """Record what each path under the store touched; call ``on_change`` if any did."""
        recorded = False
        for path in paths:
            touched = self._index.touched(path)
            if touched is not None:
                with self._lock:
                    self._touched.add(touched)
                recorded = True
        if recorded:
            self._on_change()

    def drain(self) -> set[Touched]:
        """Return and clear what was touched since the last drain."""
        with self._lock:
            touched, self._touched = self._touched, set()
        return touched

    def pending(self) -> bool:
        """Return whether changes await a drain."""
        with self._lock:
            return bool(self._touched)


class Watcher(Protocol):
    """What the daemon needs of a watcher, whichever kind it is."""

    @property
    def name(self) -> str:
        """Return what watches, for ``daemon_ready`` (``InotifyWatcher``, ``PollingWatcher``)."""
        ...

    def start(self) -> None:
        """Place the watches every store needs and start; raise OSError if that fails."""
        ...

    def follow(self, index: Index, touched: set[Touched], now: datetime) -> None:
        """After a check applied ``touched`` to ``index``: watch and unwatch accordingly."""
        ...

    def resync(self, index: Index, now: datetime) -> None:
        """After a full census: bring the watches in line with the whole store."""
        ...

    def watch_count(self) -> int:
        """Return how many kernel watches this watcher holds (0 where it cannot tell)."""
        ...

    def stop(self) -> None:
        """Stop watching and join the threads this watcher started."""
        ...


# -- watchdog observers: platforms without inotify ------------------------------


def make_observer() -> BaseObserver:
    """Return the platform's watchdog observer (FSEvents, kqueue, ReadDirectoryChangesW...)."""
    from watchdog.observers import Observer  # noqa: PLC0415 - picks the platform's observer

    observer: BaseObserver = Observer()
    return observer


class ObserverWatcher:
    """A watchdog observer watching the root, and each kind directory recursively.

    Used on platforms without inotify, where watchdog's own observer
    (FSEvents, kqueue...) watches whole trees.
    """

    def __init__(
        self, observer: BaseObserver, recorder: ChangeRecorder, root: Path, kinds: Iterable[str]
    ) -> None:
        self.observer = observer
        self.recorder = recorder
        self.root = root
        self.kinds = tuple(kinds)
        self._watched_kinds: set[str] = set()

    @property
    def name(self) -> str:
        """Return the observer's class name."""
        return type(self.observer).__name__

    def start(self) -> None:
        """Schedule the watches and start the observer; on failure stop what it started.

        Raise OSError if the platform refuses a watch, RecursionError if the
        polling observer's recursive walk meets a tree nested too deep.
        """
        try:
            self.observer.schedule(
                self.recorder, str(self.root), recursive=False, event_filter=EVENTS_OF_INTEREST
            )
            self._watch_new_kinds()
            self.observer.start()
        except BaseException:
            self.observer.stop()
            raise

    def _watch_new_kinds(self) -> None:
        for kind in self.kinds:
            directory = self.root / kind
            if kind in self._watched_kinds or not directory.is_dir():
                continue
            self.observer.schedule(
                self.recorder, str(directory), recursive=True, event_filter=EVENTS_OF_INTEREST
            )
            self._watched_kinds.add(kind)

    def follow(self, index: Index, touched: set[Touched], now: datetime) -> None:
        """Watch a kind directory that appeared since; the rest is watched recursively."""
        del index, now
        if any(name is None for _kind, name, _version in touched):
            self._rewatch_kinds()

    def resync(self, index: Index, now: datetime) -> None:
        """Watch a kind directory that appeared since."""
        del index, now
        self._rewatch_kinds()

    def _rewatch_kinds(self) -> None:
        try:
            self._watch_new_kinds()
        except (OSError, RecursionError) as error:
            get_logger().warning(
                "observer_degraded",
                observer="reconcile only",
                error=f"{type(error).__name__}: {error}",
            )
            self._watched_kinds.update(self.kinds)  # do not retry a refused watch every check

    def watch_count(self) -> int:
        """Return 0: watchdog does not say how many kernel watches it holds."""
        return 0

    def stop(self) -> None:
        """Stop the observer and join its threads."""
        self.observer.stop()
        if self.observer.is_alive():
            self.observer.join(timeout=5)


class NoWatcher:
    """No watcher at all: changes are seen by the scheduled checks and the reconcile job."""

    name = "none"

    def start(self) -> None:
        """Start nothing."""

    def follow(self, index: Index, touched: set[Touched], now: datetime) -> None:
        """Do nothing."""

    def resync(self, index: Index, now: datetime) -> None:
        """Do nothing."""

    def watch_count(self) -> int:
        """Return 0."""
        return 0

    def stop(self) -> None:
        """Stop nothing."""


# -- polling: kinds, names and settling versions only -----------------------------------------

# A timestamp this close to the poll that read it may be followed, within the same
# tick of the filesystem's clock, by a change that leaves it as it was (git's "racy"
# entries): such a path is looked at again at the next poll whatever it shows then.
# Two seconds: FAT's granularity, and NFS times come from the server's clock.
RACY_NS = 2_000_000_000
# Entries looked at in one settling version per poll at most (a save of many small files);
# past that the version is read whole by each check that touches it, and by reconcile.
MAX_ENTRIES_PER_POLL = 2_000
# A settling version whose tree has not moved for this many polls is looked at only every
# QUIET_EVERY polls: an abandoned save stays "settling" until it is removed as abandoned.
QUIET_AFTER = 30
QUIET_EVERY = 10
_GONE = (errno.ENOENT, errno.ENOTDIR)

Signature = tuple[int, ...]


def _path_signature(path: str) -> Signature | None:
    """Return what a change to the directory or file ``path`` moves; None if it is gone.

    Inode (a rename over it), mtime and ctime (a write, an entry added or
    removed), size, and link count (a directory's count moves with every
    subdirectory added or removed, whatever the clock's resolution); for a
    symlink (a ``latest`` linked to a file), the same of what it leads to.
    Raise OSError for anything but "gone" (EIO, ESTALE, EMFILE...): the
    caller keeps what it knew and looks again.
    """
    try:
        info = os.lstat(path)
    except OSError as error:
        if error.errno in _GONE:
            return None
        raise
    own = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_nlink)
    if not stat.S_ISLNK(info.st_mode):
        return own
    try:
        target = os.stat(path)
    except OSError:
        return own
    return (*own, target.st_ino, target.st_mtime_ns, target.st_ctime_ns, target.st_size)


def _tree_signature(path: str, limit: int) -> Signature | None:
    """Return one signature for a version's whole tree: entries, newest times, bytes.

    None if ``path`` is gone or no longer a directory (a symlink is never
    followed). Walks at most ``limit`` directories and
    :data:`MAX_ENTRIES_PER_POLL` entries. Raise OSError as
    :func:`_path_signature` does.
    """
    try:
        info = os.lstat(path)
    except OSError as error:
        if error.errno in _GONE:
            return None
        raise
    if not stat.S_ISDIR(info.st_mode):
        return None
    own = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns)
    entries = newest_mtime = newest_ctime = total = 0
    stack = [path]
    walked = 0
    while stack and walked < limit and entries < MAX_ENTRIES_PER_POLL:
        directory = stack.pop()
        walked += 1
        try:
            with os.scandir(directory) as listing:
                for entry in listing:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    entries += 1
                    newest_mtime = max(newest_mtime, info.st_mtime_ns)
                    newest_ctime = max(newest_ctime, info.st_ctime_ns)
                    total += info.st_size
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
                    if entries >= MAX_ENTRIES_PER_POLL:
                        break
        except OSError:
            continue
    return (
        own[0],
        max(own[1], newest_mtime),
        max(own[2], newest_ctime),
        total,
        entries,
    )


def _is_directory(path: str) -> bool:
    """Return whether ``path`` is a directory itself (a symlink to one is not)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _version_listing(path: str) -> dict[str, int] | None:
    """Return the version directories in a name directory, each with its inode and ctime.

    Both, folded into one number: a version removed and saved again under
    its name may get the freed inode back, and a new ctime unless within
    one tick of the filesystem's clock (then the racy look catches it).
    None if the directory cannot be listed now.
    """
    listing: dict[str, int] = {}
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if not (entry.is_dir(follow_symlinks=False) and is_version_entry(entry.name)):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                listing[sys.intern(entry.name)] = hash((info.st_ino, info.st_ctime_ns))
    except OSError:
        return None
    return listing


def _version_names(path: str) -> list[str] | None:
    """Return the version directories in a name directory (no stat); None if unreadable."""
    try:
        with os.scandir(path) as entries:
            return [
                entry.name
                for entry in entries
                if is_version_entry(entry.name) and entry.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return None


def _pointer_content(path: str) -> str | None:
    """Return what a pointer says as it stands (a link's text, or a file's first 4 KiB)."""
    try:
        if os.path.islink(path):
            return "link:" + os.readlink(path) + "\0" + _read_head(path)
        return _read_head(path)
    except OSError:
        return None


def _read_head(path: str) -> str:
    try:
        with open(path, "rb") as pointer:
            return pointer.read(4096).decode("utf-8", "replace")
    except OSError as error:
        return f"unreadable:{error.errno}"


class PollingWatcher:
    """Polls what inotify would watch: the root, kinds, names, pointers and settling versions.

    For filesystems without inotify (NFS), ``schedule.observer: polling``,
    and when inotify cannot even watch the root and kinds. Every
    ``interval`` seconds one thread compares a signature (inode, mtime,
    ctime, size, link count) of the root, each kind directory, each name
    directory and each name's ``latest``, and one of each version still
    settling (its whole tree); whatever moved is recorded as touched, which
    brings a check forward. A settled store of 50,000 versions over 500
    names costs about a thousand ``lstat`` calls a poll, never a walk of the
    whole store: a settled version changed in place is left to reconcile,
    as with inotify.
    """

    name = "PollingWatcher"

    def __init__(
        self,
        recorder: ChangeRecorder,
        root: Path,
        kinds: Iterable[str],
        *,
        settle: Callable[[str, str], float],
        interval: float,
    ) -> None:
        self.recorder = recorder
        self.root = str(root).rstrip("/") or "/"
        self.kinds = tuple(kinds)
        self.settle = settle
        self.interval = interval
        self._lock = threading.Lock()
        # Root, kind and name directories and pointers, with their signatures.
        self._structure: dict[str, Signature | None] = {}
        # Settling versions, with the signature of their whole tree.
        self._versions: dict[str, Signature | None] = {}
        self._racy: set[str] = set()
        # What each racy pointer said when it was found racy: a pointer unchanged in its
        # signature but rewritten in place within a tick says something else at the next look.
        self._said: dict[str, str | None] = {}
        # Polls in a row each settling version's tree has not moved.
        self._quiet: dict[str, int] = {}
        # Each name directory's versions, with their inode and ctime: what a change of the
        # directory added, removed or replaced is touched by itself, as inotify reports it.
        self._listings: dict[str, dict[str, int]] = {}
        self._stopping = threading.Event()
        # A daemon thread: an lstat hung on a hard NFS mount must not hold the process's exit.
        self._thread = threading.Thread(target=self._run, name="storewarden-poll", daemon=True)
        self.polls = 0

    def start(self) -> None:
        """Take the first signatures and start polling; raise OSError if the root is unreadable."""
        os.listdir(self.root)
        self._signatures_of_structure(self.root, 0)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and join the thread."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def watch_count(self) -> int:
        """Return 0: polling holds no kernel watches."""
        return 0

    def polled_paths(self) -> int:
        """Return how many paths each poll looks at (directories, pointers, settling versions)."""
        with self._lock:
            return len(self._structure) + len(self._versions)

    def watched_versions(self) -> set[str]:
        """Return the paths of the settling versions polled now."""
        with self._lock:
            return set(self._versions)

    def follow(self, index: Index, touched: set[Touched], now: datetime) -> None:
        """Poll the versions a check found settling; stop polling the settled."""
        for path in touched_versions(self.root, touched):
            record = _record(index, Path(path))
            if record is not None and settling(record, now, self.settle):
                self._poll_version(record)
        self._expire(index, now)

    def resync(self, index: Index, now: datetime) -> None:
        """After a full census: poll every kind, name and settling version; drop the rest.

        What the census and the listings disagree on (a version saved or
        removed while the census ran, before the first signatures were
        taken) is recorded as touched.
        """
        appeared = self._signatures_of_structure(self.root, 0, only_new=True)
        appeared += self._disagreeing(index)
        if appeared:
            self.recorder.record_paths(appeared)
        for record in (*index.versions.values(), *index.others.values()):
            if settling(record, now, self.settle):
                self._poll_version(record)
        self._expire(index, now)

    def poll(self) -> None:
        """Compare every signature once; record what moved (the thread calls this).

        A path that cannot be looked at now (EIO, ESTALE...) keeps what was
        known of it and is looked at again at the next poll.
        """
        started = time.time_ns()
        with self._lock:
            structure = list(self._structure.items())
            versions = list(self._versions.items())
            racy, self._racy = self._racy, set()
        changed: list[str] = []
        try:
            for path, old in structure:
                try:
                    new = _path_signature(path)
                except OSError:
                    self._retry(path)
                    continue
                if new != old:
                    changed.extend(self._after_structure_change(path, new, started))
                elif path in racy:
                    changed.extend(self._look_again(path, started))
            for path, old in versions:
                if not self._due(path, racy):
                    continue
                try:
                    new = _tree_signature(path, MAX_WATCHES_PER_VERSION)
                except OSError:
                    self._retry(path)
                    continue
                moved = new != old
                with self._lock:
                    self._quiet[path] = 0 if moved else self._quiet.get(path, 0) + 1
                    if path in self._versions:
                        self._versions[path] = new
                if moved or path in racy:
                    changed.append(path)
                    self._note_racy(path, new, started)
            self.polls += 1
        finally:
            if changed:
                self.recorder.record_paths(changed)

    # -- internals ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.poll()
            except Exception as error:  # broad on purpose: the poll thread must live on
                get_logger().error("check_failed", error=f"poller: {type(error).__name__}: {error}")

    def _due(self, path: str, racy: set[str]) -> bool:
        """Return whether a settling version is looked at in this poll (quiet ones less often)."""
        with self._lock:
            quiet = self._quiet.get(path, 0)
        return path in racy or quiet < QUIET_AFTER or self.polls % QUIET_EVERY == 0

    def _retry(self, path: str) -> None:
        with self._lock:
            self._racy.add(path)

    def _look_again(self, path: str, started: int) -> list[str]:
        """A racy path whose signature did not move: look at what it holds; return what changed."""
        depth = self._depth(path)
        if depth == 3:  # a pointer: rewritten in place within one tick says something else
            said = _pointer_content(path)
            with self._lock:
                before = self._said.pop(path, said)
            if said != before:
                return [path]
            return []
        with self._lock:
            signature = self._structure.get(path)
        return self._after_structure_change(path, signature, started)

    def _poll_version(self, record: VersionRecord) -> None:
        """Poll a settling version; if it changed since the census read it, record it now."""
        path = str(record.path)
        with self._lock:
            if path in self._versions:
                return
        try:
            signature = _tree_signature(path, MAX_WATCHES_PER_VERSION)
        except OSError:
            signature = None  # unreadable now: the first poll finds it moved and records it
        with self._lock:
            self._versions.setdefault(path, signature)
        newest = 0 if signature is None else max(signature[1], signature[2])
        if newest / 1e9 > record.last_change.timestamp() + 1e-5:
            self.recorder.record_paths([path])  # written between the census and now

    def _expire(self, index: Index, now: datetime) -> None:
        with self._lock:
            versions = list(self._versions)
        for path in settled(versions, index, now, self.settle):
            with self._lock:
                self._versions.pop(path, None)
                self._quiet.pop(path, None)
                self._racy.discard(path)

    def _disagreeing(self, index: Index) -> list[str]:
        """Return the versions the listings and ``index`` disagree on (one side has them)."""
        with self._lock:
            return disagreeing(index, self._listings)

    def _after_structure_change(self, path: str, new: Signature | None, started: int) -> list[str]:
        """Take in a change of the root, a kind, a name or a pointer; return the paths touched.

        A name directory that changed is listed again, and the versions that
        appeared, went or were replaced in it are touched; a name that went,
        or a pointer, is itself touched. A kind or the root is not (that
        would re-read every version below it); the names and kinds that
        appeared or went are.
        """
        depth = self._depth(path)
        pointer = depth == 3
        with self._lock:
            if new is None and not pointer:
                self._structure.pop(path, None)
                self._listings.pop(path, None)
            elif path in self._structure:
                self._structure[path] = new
        self._note_racy(path, new, started)
        if depth in (1, 2) and new is not None and not _is_directory(path):
            # A kind or name swapped for a symlink (or a file): its listing through the
            # link may look unchanged, but nothing below it is the store's any more.
            return [path, *self._forget_below(path)]
        if depth == 2 and new is not None:
            touched = self._versions_changed_in(path, started)
        else:
            touched = [path] if depth >= 2 else []
        if depth <= 1 and new is not None:
            touched += self._signatures_of_structure(path, depth, only_new=True)
        if new is None or depth <= 1:
            touched += self._forget_gone_below(path)
        return touched

    def _versions_changed_in(self, name_path: str, started: int) -> list[str]:
        """List a name directory again; return the versions that appeared, went or were replaced.

        A listing that fails keeps the last one, and is tried again at the next poll.
        """
        listing = _version_listing(name_path)
        if listing is None:
            self._retry(name_path)
            return []
        with self._lock:
            old = self._listings.get(name_path, {})
            self._listings[name_path] = listing
        return [
            self._join(name_path, entry)
            for entry in old.keys() | listing.keys()
            if old.get(entry) != listing.get(entry)
        ]

    def _forget_gone_below(self, path: str) -> list[str]:
        """Stop polling the kinds, names and pointers below ``path`` that are gone; return them."""
        return self._forget_below(path, gone_only=True)

    def _forget_below(self, path: str, *, gone_only: bool = False) -> list[str]:
        """Stop polling the kinds, names and pointers below ``path``; return them.

        All of them, and ``path``'s own listing; or with ``gone_only``, those gone.
        """
        prefix = path.rstrip("/") + "/"
        with self._lock:
            below = [known for known in self._structure if known.startswith(prefix)]
        if gone_only:
            below = [known for known in below if not os.path.isdir(self._name_of(known))]
        with self._lock:
            for known in below:
                self._structure.pop(known, None)
                self._listings.pop(known, None)
            if not gone_only:
                self._listings.pop(path, None)
        return below

    def _name_of(self, path: str) -> str:
        """Return the directory that must exist for ``path`` to be polled (a pointer's name)."""
        return path.rsplit("/", 1)[0] if self._depth(path) == 3 else path

    def _note_racy(self, path: str, signature: Signature | None, started: int) -> None:
        if signature is None or max(signature[1], signature[2]) <= started - RACY_NS:
            return
        said = _pointer_content(path) if self._depth(path) == 3 else None
        with self._lock:
            self._racy.add(path)
            if self._depth(path) == 3:
                self._said[path] = said

    def _signatures_of_structure(
        self, path: str, depth: int, *, only_new: bool = False
    ) -> list[str]:
        """Take signatures of ``path`` and of the kinds, names and pointers below it.

        With ``only_new``, paths already known keep their signature; return
        those found new (they appeared since: the caller records them).
        """
        started = time.time_ns()
        found: list[str] = [path]
        stack = [(path, depth)]
        while stack:
            directory, level = stack.pop()
            for entry in _subdirectories(directory) if level < 2 else []:
                if entry in self.kinds if level == 0 else is_store_name(entry):
                    child = self._join(directory, entry)
                    found.append(child)
                    if level == 1:
                        found.append(self._join(child, POINTER))
                    stack.append((child, level + 1))
        new: list[str] = []
        for known in found:
            with self._lock:
                if only_new and known in self._structure:
                    continue
            try:
                signature = _path_signature(known)
            except OSError:
                continue  # unreadable now: found new at the next look at its parent
            if signature is None and self._depth(known) != 3:
                continue  # gone already; a pointer is polled while it is missing
            listing = _version_listing(known) if self._depth(known) == 2 else None
            with self._lock:
                self._structure[known] = signature
                if listing is not None:
                    self._listings[known] = listing
            self._note_racy(known, signature, started)
            new.append(known)
        return new

    def _join(self, first: str, *rest: str) -> str:
        return "/".join((first.rstrip("/"), *rest)) if rest else first

    def _depth(self, path: str) -> int:
        return depth_below(self.root, path)


# -- inotify ----------------------------------------------------------------------------------

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000

# Root, kind and name directories: entries appearing, going, and `latest` rewritten
# (in place, by rename, or as a symlink). Not the root's own symlink: it may be one.
STRUCTURE_MASK = (
    IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | IN_MODIFY | IN_ONLYDIR
)
# A version being written, and each directory inside it: every write.
SETTLING_MASK = STRUCTURE_MASK | IN_ATTRIB | IN_DONT_FOLLOW
_EVENT_HEADER = struct.Struct("iIII")
_READ_SIZE = 64 * 1024
# Directories watched inside one settling version at most; what lies beyond is
# seen when the version itself is re-read (each check it is touched) and by reconcile.
MAX_WATCHES_PER_VERSION = 1000


class Inotify:
    """One inotify descriptor, its watches by path, and one thread reading its events.

    Built on libc through ctypes rather than on watchdog's ``InotifyFD``
    (watchdog 7): that class registers a watch the kernel refused with
    EACCES as if it had succeeded (watch descriptor -1), warns from inside
    its reader thread when a moved directory is watched again (the kernel
    hands back the same descriptor), and is absent from the watchdog 4-6
    this package allows. What is needed here is small: add a watch and
    raise the kernel's error, remove one, and hand each event with the
    watched directory's path to one callback.

    ``on_event(directory, mask, name)`` and ``on_gone(directory)`` (the
    kernel dropped a watch: the directory was deleted, or its filesystem
    unmounted) run on the reader thread; ``directory`` is ``""`` for a
    queue overflow, which arrives with ``IN_Q_OVERFLOW`` in ``mask``.
    """

    def __init__(
        self,
        on_event: Callable[[str, int, str], None],
        on_gone: Callable[[str], None],
    ) -> None:
        self._on_event = on_event
        self._on_gone = on_gone
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._init1 = libc.inotify_init1
            self._add = libc.inotify_add_watch
            self._remove = libc.inotify_rm_watch
        except (OSError, AttributeError) as error:
            raise OSError(errno.ENOSYS, f"inotify is not available: {error}") from error
        self._add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self._remove.argtypes = (ctypes.c_int, ctypes.c_int)
        descriptor = self._init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if descriptor < 0:
            number = ctypes.get_errno()
            raise OSError(number, f"inotify_init1: {os.strerror(number)}")
        self.descriptor: int = descriptor
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self._path_of: dict[int, str] = {}
        self._descriptor_of: dict[str, int] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._read_loop, name="storewarden-inotify")

    def add_watch(self, path: str, mask: int) -> None:
        """Watch the directory ``path`` with ``mask``; raise OSError with the kernel's errno."""
        encoded = os.fsencode(path)
        with self._lock:
            watch = self._add(self.descriptor, encoded, mask)
            if watch < 0:
                number = ctypes.get_errno()
                message = os.strerror(number)
                if number == errno.ENOSPC:
                    message = "inotify watch limit reached (fs.inotify.max_user_watches)"
                raise OSError(number, message, path)
            old = self._path_of.get(watch)
            if old is not None and old != path:  # a watched directory moved here
                self._descriptor_of.pop(old, None)
            self._path_of[watch] = path
            self._descriptor_of[path] = watch

    def remove_watch(self, path: str) -> None:
        """Stop watching ``path`` if it is watched."""
        with self._lock:
            watch = self._descriptor_of.pop(path, None)
            if watch is None:
                return
            del self._path_of[watch]
            self._remove(self.descriptor, watch)  # EINVAL if the kernel dropped it already

    def watching(self, path: str) -> bool:
        """Return whether ``path`` is watched."""
        with self._lock:
            return path in self._descriptor_of

    def count(self) -> int:
        """Return how many watches are held."""
        with self._lock:
            return len(self._path_of)

    def start(self) -> None:
        """Start the reader thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop the reader thread, then close the descriptor (which drops every watch); once."""
        if self._stopping:
            return
        self._stopping = True
        os.write(self._wake_write, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        os.close(self.descriptor)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self.descriptor, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while not self._stopping:
            poller.poll()
            if self._stopping:
                return
            try:
                buffer = os.read(self.descriptor, _READ_SIZE)
            except BlockingIOError:
                continue
            self._dispatch(buffer)

    def _dispatch(self, buffer: bytes) -> None:
        offset = 0
        while offset + _EVENT_HEADER.size <= len(buffer):
            watch, mask, _cookie, length = _EVENT_HEADER.unpack_from(buffer, offset)
            start = offset + _EVENT_HEADER.size
            name = os.fsdecode(buffer[start : start + length].rstrip(b"\0"))
            offset = start + length
            try:
                self._handle(watch, mask, name)
            except Exception as error:  # broad on purpose: the reader thread must live on
                get_logger().error(
                    "check_failed", error=f"watcher: {type(error).__name__}: {error}"
                )

    def _handle(self, watch: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self._on_event("", mask, "")
            return
        with self._lock:
            path = self._path_of.get(watch)
            if path is not None and mask & IN_IGNORED:
                del self._path_of[watch]
                if self._descriptor_of.get(path) == watch:
                    del self._descriptor_of[path]
        if path is None:
            return  # a watch removed while its events were queued
        if mask & IN_IGNORED:
            self._on_gone(path)
        else:
            self._on_event(path, mask, name)


@dataclass
class _Failing:
    """A directory whose watch the kernel refused: polled at each check until a watch holds."""

    version: str | None  # the settling version it belongs to, if any
    signature: tuple[int, int] | None  # its (mtime, ctime) in ns when last looked at


def _signature(path: str) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_ctime_ns)


class InotifyWatcher:
    """Watches the root, kinds, names and settling versions on one inotify descriptor.

    A directory's depth below the root says what it is: 1 a kind, 2 a name,
    3 a version, 4 and more a directory inside a version. A new version
    directory is watched the moment its name directory reports it (on the
    reader thread, before anything else is read), with whatever directories
    it already holds; it is unwatched by :meth:`follow` once the index has
    it complete and unchanged for its ``settle`` period.

    A watch the kernel refuses (ENOSPC at ``fs.inotify.max_user_watches``,
    EACCES...) is reported once per directory through ``on_failure(path,
    error)``, tried again at each check, and meanwhile polled: its
    directory's mtime and ctime are compared at each check. The reconcile
    job covers the rest. Only the root's and the kinds' watches are needed
    to start: :meth:`start` raises OSError if one is refused.
    """

    name = "InotifyWatcher"

    def __init__(
        self,
        recorder: ChangeRecorder,
        root: Path,
        kinds: Iterable[str],
        *,
        settle: Callable[[str, str], float],
        on_failure: Callable[[str, OSError], None],
        on_overflow: Callable[[], None],
        inotify_factory: Callable[
            [Callable[[str, int, str], None], Callable[[str], None]], Inotify
        ] = Inotify,
    ) -> None:
        self.recorder = recorder
        self.root = str(root).rstrip("/") or "/"
        self.kinds = tuple(kinds)
        self.settle = settle
        self.on_failure = on_failure
        self.on_overflow = on_overflow
        self._lock = threading.RLock()
        # Each watched settling version's path, with the watched directories inside it.
        self._versions: dict[str, set[str]] = {}
        self._failing: dict[str, _Failing] = {}
        self._reported: set[str] = set()
        self.inotify = inotify_factory(self._on_event, self._on_gone)

    # -- the daemon's side ---------------------------------------------------------------

    def start(self) -> None:
        """Watch the root, each kind and each name directory; start reading.

        Raise OSError (and close the descriptor) if the root or a kind
        directory cannot be watched.
        """
        try:
            self.inotify.add_watch(self.root, STRUCTURE_MASK)
            for kind in self.kinds:
                path = self._join(self.root, kind)
                if os.path.isdir(path):
                    self.inotify.add_watch(path, STRUCTURE_MASK | IN_DONT_FOLLOW)
                    self._watch_names(path)
        except BaseException:
            self.inotify.close()
            raise
        self.inotify.start()

    def stop(self) -> None:
        """Stop the reader thread and drop every watch."""
        self.inotify.close()

    def watch_count(self) -> int:
        """Return how many inotify watches are held."""
        return self.inotify.count()

    def watched_versions(self) -> set[str]:
        """Return the paths of the settling versions watched now."""
        with self._lock:
            return set(self._versions)

    def follow(self, index: Index, touched: set[Touched], now: datetime) -> None:
        """Watch versions the check found settling; unwatch the settled; poll refused watches.

        Costs the number of versions watched or touched (and the versions of
        a touched name), not the store's size.
        """
        for path in touched_versions(self.root, touched):
            record = _record(index, Path(path))
            if record is not None and settling(record, now, self.settle):
                self._watch_tree(path, 3)
        self._expire(index, now)
        self._poll_failing(index, now)

    def resync(self, index: Index, now: datetime) -> None:
        """After a full census: watch every kind, name and settling version; unwatch the rest."""
        for kind in self.kinds:
            path = self._join(self.root, kind)
            if os.path.isdir(path) and not self.inotify.watching(path):
                self._watch_tree(path, 1)
            elif os.path.isdir(path):
                self._watch_names(path)
        for record in (*index.versions.values(), *index.others.values()):
            if settling(record, now, self.settle):
                self._watch_tree(str(record.path), 3)
        # Saved or removed after the census read its name directory and before the
        # watch on it was placed: no event will come, so compare listings now.
        listings: dict[str, Iterable[str]] = {}
        for kind in self.kinds:
            kind_path = self._join(self.root, kind)
            for name in _subdirectories(kind_path):
                if not is_store_name(name):
                    continue  # the census leaves it alone; so does the index
                name_path = self._join(kind_path, name)
                names = _version_names(name_path)
                if names is not None:
                    listings[name_path] = names
        missed = disagreeing(index, listings)
        if missed:
            self.recorder.record_paths(missed)
        self._expire(index, now)
        self._poll_failing(index, now)

    # -- what to watch --------------------------------------------------------------------

    def _expire(self, index: Index, now: datetime) -> None:
        with self._lock:
            versions = list(self._versions)
        for path in settled(versions, index, now, self.settle):
            self._unwatch_version(path)

    def _unwatch_version(self, version: str) -> None:
        with self._lock:
            inside = self._versions.pop(version, set())
            for path in [
                path for path, failing in self._failing.items() if failing.version == version
            ]:
                del self._failing[path]
        for path in inside:
            self.inotify.remove_watch(path)

    def _watch_names(self, kind_path: str) -> None:
        for entry in _subdirectories(kind_path):
            if is_store_name(entry) and not self.inotify.watching(self._join(kind_path, entry)):
                self._add(self._join(kind_path, entry), 2)

    def _watch_tree(self, path: str, depth: int) -> list[str]:
        """Watch ``path`` (at ``depth``), then the directories it already holds, iteratively.

        Below a name directory every version found is watched as a new one
        (the next check unwatches those the index has settled). Return the
        directories newly watched below ``path``: found after their parent's
        watch was in place, so no later change is missed, and recorded as
        touched by the caller so that what happened before is read.
        """
        if self.inotify.watching(path):
            return []
        found: list[str] = []
        stack = [(path, depth)]
        while stack:
            directory, level = stack.pop()
            if not self._add(directory, level):
                continue
            if directory != path:
                found.append(directory)
            stack.extend(
                (self._join(directory, entry), level + 1)
                for entry in _subdirectories(directory)
                if self._wanted(entry, level + 1)
            )
        return found

    def _wanted(self, entry: str, depth: int) -> bool:
        if depth == 1:
            return entry in self.kinds
        if depth == 2:
            return is_store_name(entry)
        if depth == 3:
            return is_version_entry(entry)
        return True

    def _add(self, path: str, depth: int) -> bool:
        """Watch one directory; return whether it is watched. A refusal is reported, not raised."""
        version = self._version_of(path) if depth >= 3 else None
        if version is not None:
            with self._lock:
                watched = self._versions.setdefault(version, set())
                if len(watched) >= MAX_WATCHES_PER_VERSION:
                    error = OSError(
                        errno.ENOSPC,
                        f"more than {MAX_WATCHES_PER_VERSION} directories in one version;"
                        " the rest is read at each check and by reconcile",
                    )
                    self._refused(version, error, version, poll=False)
                    return False
        mask = STRUCTURE_MASK | IN_DONT_FOLLOW if depth <= 2 else SETTLING_MASK
        try:
            self.inotify.add_watch(path, mask)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                return False  # gone already, or not a directory: nothing to watch
            self._refused(path, error, version, poll=True)
            return False
        with self._lock:
            if version is not None:
                self._versions.setdefault(version, set()).add(path)
            self._failing.pop(path, None)
        return True

    def _refused(self, path: str, error: OSError, version: str | None, *, poll: bool) -> None:
        with self._lock:
            if poll and path not in self._failing:
                self._failing[path] = _Failing(version, _signature(path))
            first = path not in self._reported
            self._reported.add(path)
        if first:
            self.on_failure(path, error)

    def _poll_failing(self, index: Index, now: datetime) -> None:
        """Try each refused watch again; record a directory whose mtime or ctime moved."""
        with self._lock:
            failing = dict(self._failing)
        changed: list[str] = []
        for path, entry in failing.items():
            if entry.version is not None:
                record = _record(index, Path(entry.version))
                if record is not None and not settling(record, now, self.settle):
                    with self._lock:
                        self._failing.pop(path, None)
                    continue
            signature = _signature(path)
            if signature is None:
                with self._lock:
                    self._failing.pop(path, None)
                changed.append(path)
                continue
            if self._add(path, self._depth(path)):
                changed.append(path)  # watched from now on; what happened meanwhile is read now
            elif signature != entry.signature:
                entry.signature = signature
                changed.append(path)
        if changed:
            self.recorder.record_paths(changed)

    # -- the reader thread ---------------------------------------------------------------

    def _on_event(self, directory: str, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self.on_overflow()
            return
        path = self._join(directory, name) if name else directory
        touched = [path]
        if name and mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
            depth = self._depth(path)
            if self._wanted(name, depth):
                touched += self._watch_tree(path, depth)
        self.recorder.record_paths(touched)

    def _on_gone(self, directory: str) -> None:
        """The kernel dropped a watch (its directory was deleted): forget it."""
        if self._depth(directory) < 3:
            return
        version = self._version_of(directory)
        with self._lock:
            inside = self._versions.get(version)
            if inside is None:
                return
            inside.discard(directory)
            if directory == version:  # its directories went first: rmdir needs them gone
                del self._versions[version]

    # -- paths ----------------------------------------------------------------------------

    def _join(self, first: str, *rest: str) -> str:
        return "/".join((first.rstrip("/"), *rest))

    def _depth(self, path: str) -> int:
        return depth_below(self.root, path)

    def _version_of(self, path: str) -> str:
        parts = path[len(self.root) + 1 :].split("/")
        return self._join(self.root, *parts[:3])


def _subdirectories(path: str) -> list[str]:
    """Return the names of the directories in ``path`` (not symlinks); [] if unreadable."""
    try:
        with os.scandir(path) as entries:
            return [
                entry.name
                for entry in entries
                if stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
            ]
    except OSError:
        return []


def _record(index: Index, path: Path) -> VersionRecord | None:
    return index.versions.get(path) or index.others.get(path)


def disagreeing(index: Index, listings: Mapping[str, Iterable[str]]) -> list[str]:
    """Return the versions that name directories' listings and ``index`` disagree on.

    ``listings`` maps a name directory's path to the version entries listed
    in it. A version listed but not indexed was saved since the census; one
    indexed but not listed has gone, with its name directory if that is no
    longer a directory.
    """
    indexed = {str(path) for path in (*index.versions, *index.others)}
    listed = {f"{name}/{entry}" for name, entries in listings.items() for entry in entries}
    gone_names: dict[str, bool] = {}
    missing = []
    for path in indexed - listed:
        name = path.rsplit("/", 1)[0]
        if name not in listings and name not in gone_names:
            # Not listed: gone with its last version (BentoML removes the name
            # directory then) or replaced by a file; an unreadable one is not gone.
            gone_names[name] = not _is_directory(name)
        if name in listings or gone_names[name]:
            missing.append(path)
    return sorted(listed - indexed) + sorted(missing)


def depth_below(root: str, path: str) -> int:
    """Return what ``path`` is by its depth below ``root``: 0 the root, 1 a kind, 2 a name..."""
    if path == root:
        return 0
    return path[len(root) + 1 :].count("/") + 1


def settled(
    versions: Iterable[str], index: Index, now: datetime, settle: Callable[[str, str], float]
) -> list[str]:
    """Return which of the watched or polled ``versions`` to let go.

    Those the index has settled, and those gone from the index that are no
    longer a directory (a symlink is none). One not yet read stays: the
    check that reads it decides.
    """
    done = []
    for path in versions:
        record = _record(index, Path(path))
        if record is None:
            if not _is_directory(path):
                done.append(path)
        elif not settling(record, now, settle):
            done.append(path)
    return done


def is_version_entry(entry: str) -> bool:
    """Return whether an entry of a name directory can be a version (not the pointer)."""
    return entry != POINTER and is_valid_tag_part(entry)


def settling(record: VersionRecord, now: datetime, settle: Callable[[str, str], float]) -> bool:
    """Return whether a version is still being written: incomplete, or changed within settle."""
    if not record.complete:
        return True
    return (now - record.last_change).total_seconds() < settle(record.kind, record.name)


def touched_versions(root: str, touched: Iterable[Touched]) -> set[str]:
    """Return the paths of the versions ``touched`` may have changed.

    A touched version is itself; a touched name (or its pointer) is every
    version directory it holds now, since what it holds may have changed.
    """
    base = root.rstrip("/")
    versions: set[str] = set()
    for kind, name, version in touched:
        if name is None:
            continue
        if version is None or version == POINTER:
            directory = f"{base}/{kind}/{name}"
            versions.update(
                f"{directory}/{entry}"
                for entry in _subdirectories(directory)
                if is_version_entry(entry)
            )
        else:
            versions.add(f"{base}/{kind}/{name}/{version}")
    return versions

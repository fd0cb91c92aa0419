"""Watchdog wiring: record what changed in the store, ask for an early check. No pruning here."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

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
from watchdog.observers.polling import PollingObserver

from storewarden.index import Index, Touched

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
        """Record the version, name or kind an event touched; never raises."""
        paths = [event.src_path]
        if getattr(event, "dest_path", ""):
            paths.append(event.dest_path)
        recorded = False
        for raw in paths:
            path = os.fsdecode(raw)
            touched = self._index.touched(path)
            if touched is None:
                root = str(self._index.root).rstrip("/")
                parent = os.path.dirname(path)
                if parent == root and os.path.basename(path) in self._index.watched_kinds:
                    touched = (os.path.basename(path), None, None)
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


def make_observer(kind: str, polling_interval: float = 5.0) -> BaseObserver:
    """Return a watchdog observer: ``inotify``, ``polling``, or ``auto`` (the platform's best)."""
    if kind == "polling":
        return PollingObserver(timeout=polling_interval)
    if kind == "inotify":
        from watchdog.observers.inotify import InotifyObserver  # noqa: PLC0415 - Linux only

        return InotifyObserver()
    from watchdog.observers import Observer  # noqa: PLC0415 - picks the platform's observer

    observer: BaseObserver = Observer()
    return observer


def watch(
    observer: BaseObserver, recorder: ChangeRecorder, root: Path, kinds: tuple[str, ...]
) -> None:
    """Schedule the watches: the root (to see kinds appear) and each kind directory, recursively.

    Raise OSError if the platform refuses a watch (the inotify watch limit).
    """
    observer.schedule(recorder, str(root), recursive=False, event_filter=EVENTS_OF_INTEREST)
    for kind in kinds:
        watch_kind(observer, recorder, root / kind)


def watch_kind(observer: BaseObserver, recorder: ChangeRecorder, directory: Path) -> bool:
    """Watch one kind directory recursively if it exists; return whether it does.

    Raise OSError if the platform refuses the watch.
    """
    if not directory.is_dir():
        return False
    observer.schedule(recorder, str(directory), recursive=True, event_filter=EVENTS_OF_INTEREST)
    return True

"""The daemon's in-memory index of the store, kept current from watcher events.

The index is the source of sizes between rescans: a version is censused when
an event touches it (and so once more when it completes), never on a check.
``store_bytes`` is kept as a running sum so a check with nothing changed costs
a dictionary lookup. Not thread-safe by itself: the daemon serialises access.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from storewarden.store import (
    KINDS,
    POINTER,
    FileSystem,
    Kind,
    Pointer,
    Problem,
    Snapshot,
    VersionRecord,
    census_staging,
    census_version,
    check_targets,
    is_valid_tag_part,
    name_directory_refusal,
    read_pointer,
)
from storewarden.tags import is_store_name

# What an event touched: (kind, name or None, version or None).
Touched = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class Change:
    """One difference the index found: ``added`` (became complete), ``gone``, ``latest``."""

    what: str
    record: VersionRecord | None = None
    kind: str = ""
    name: str = ""
    old: str | None = None
    new: str | None = None


@dataclass
class Index:
    """Versions and pointers of one store, by path.

    ``versions`` are those of the managed ``kinds``; ``others`` the bentos of
    a store whose config manages models only, kept for the models they need.
    """

    root: Path
    kinds: tuple[Kind, ...]
    filesystem: FileSystem = field(default_factory=FileSystem)
    versions: dict[Path, VersionRecord] = field(default_factory=dict)
    others: dict[Path, VersionRecord] = field(default_factory=dict)
    pointers: dict[tuple[str, str], Pointer] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    linked: frozenset[Path] = frozenset()
    store_bytes: int = 0
    # Running totals per kind, kept with every change, so that a check (and the
    # metrics it updates) reads them in O(1) however large the store is.
    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    versions_by_kind: dict[str, int] = field(default_factory=dict)
    # Bytes of managed versions that appeared or grew (written) and that left or shrank
    # (freed), summed per version over every change seen: the history's gross flows,
    # read as differences between two samples in O(1) instead of a pass over the store.
    written: int = 0
    freed: int = 0

    @property
    def watched_kinds(self) -> tuple[Kind, ...]:
        """Return the kinds whose events matter: the managed ones, and bentos always."""
        return tuple(kind for kind in KINDS if kind in self.kinds or kind == "bentos")

    def _holder(self, kind: str) -> dict[Path, VersionRecord]:
        return self.versions if kind in self.kinds else self.others

    def _count(self, record: VersionRecord, sign: int) -> None:
        if record.kind not in self.kinds:
            return
        self.store_bytes += sign * record.bytes
        self.bytes_by_kind[record.kind] = (
            self.bytes_by_kind.get(record.kind, 0) + sign * record.bytes
        )
        self.versions_by_kind[record.kind] = self.versions_by_kind.get(record.kind, 0) + sign

    def _flow(self, kind: str, before: int, after: int) -> None:
        if kind not in self.kinds:
            return
        if after > before:
            self.written += after - before
        else:
            self.freed += before - after

    def load(self, snapshot: Snapshot) -> tuple[int, int, int]:
        """Replace the index with a census; return (added, gone, changed) against the old one."""
        fresh = {record.path: record for record in snapshot.versions}
        for path, record in fresh.items():
            old = self.versions.get(path)
            self._flow(record.kind, old.bytes if old is not None else 0, record.bytes)
        for path, old in self.versions.items():
            if path not in fresh:
                self._flow(old.kind, old.bytes, 0)
        added = sum(1 for path in fresh if path not in self.versions)
        gone = sum(1 for path in self.versions if path not in fresh)
        changed = sum(
            1
            for path, record in fresh.items()
            if path in self.versions and _differs(self.versions[path], record)
        )
        self.versions = fresh
        self.others = {record.path: record for record in snapshot.others}
        self.pointers = dict(snapshot.pointers)
        self.problems = snapshot.problems
        self.linked = snapshot.linked
        self.store_bytes = 0
        self.bytes_by_kind = dict.fromkeys(self.kinds, 0)
        self.versions_by_kind = dict.fromkeys(self.kinds, 0)
        for record in fresh.values():
            self._count(record, +1)
        return added, gone, changed

    def snapshot(self) -> Snapshot:
        """Return the index as a Snapshot for the planner (bentos being built read afresh)."""
        base = Snapshot(self.root, tuple(self.versions.values()), self.pointers, linked=self.linked)
        return Snapshot(
            self.root,
            base.versions,
            check_targets(base),
            self.problems,
            others=tuple(self.others.values()),
            staging=census_staging(self.root, self.filesystem),
            linked=self.linked,
        )

    def touched(self, path: str) -> Touched | None:
        """Map an event path to what it touched, or None if it is outside the watched kinds."""
        root = str(self.root).rstrip("/") + "/"
        if not path.startswith(root):
            return None
        parts = path[len(root) :].split("/")
        if parts[0] not in self.watched_kinds:
            return None
        name = parts[1] if len(parts) > 1 and parts[1] else None
        if name is not None and not is_store_name(name) and is_valid_tag_part(name):
            return None  # a version the warden itself is removing in place
        version = parts[2] if len(parts) > 2 and parts[2] else None
        return (parts[0], name, version)

    def forget(self, path: Path) -> None:
        """Drop a version the daemon itself removed (no event logged for it)."""
        record = self.versions.pop(path, None) or self.others.pop(path, None)
        if record is not None:
            self._count(record, -1)
            self._flow(record.kind, record.bytes, 0)

    def record_pointer(self, kind: str, name: str, target: str | None) -> None:
        """Record a pointer change the daemon itself made, so its event is not reported again."""
        if kind not in self.kinds:
            return
        key = (kind, name)
        old = self.pointers.get(key)
        if target is None:
            self.pointers.pop(key, None)
            return
        path = self.root / kind / name / POINTER
        form = old.form if old is not None else "file"
        self.pointers[key] = Pointer(_kind(kind), name, path, form, target)

    def refresh(self, touched: Iterable[Touched]) -> list[Change]:
        """Re-read what events touched; return the changes found."""
        # A bind mount keeps the device: only the table tells it (re-read only if changed).
        self.filesystem.refresh_mounts(self.root)
        changes: list[Change] = []
        names: set[tuple[str, str]] = set()
        kinds: set[str] = set()
        versions: set[tuple[str, str, str]] = set()
        for kind, name, version in touched:
            if name is None:
                kinds.add(kind)
            elif version is None or version == POINTER:
                names.add((kind, name))
            else:
                versions.add((kind, name, version))
        for kind in kinds:
            names.update(self._names_under(kind))
        readable: dict[tuple[str, str], bool] = {}  # per name, once per refresh
        for kind, name in sorted(names):
            versions.update(self._versions_under(kind, name))
            if kind in self.kinds:
                changes.extend(self.refresh_pointer(kind, name, readable))
        for kind, name, version in sorted(versions):
            change = self._refresh_version(kind, name, version, readable)
            if change is not None:
                changes.append(change)
        return changes

    def _names_under(self, kind: str) -> set[tuple[str, str]]:
        """Every name on disk or in the index under one kind."""
        found = {key for key in self.pointers if key[0] == kind}
        found |= {
            (record.kind, record.name)
            for record in self._holder(kind).values()
            if record.kind == kind
        }
        try:
            entries = self.filesystem.scandir(self.root / kind)
        except OSError:
            entries = []
        found |= {(kind, entry.name) for entry in entries if is_store_name(entry.name)}
        return found

    def _versions_under(self, kind: str, name: str) -> set[tuple[str, str, str]]:
        """Every version of a name on disk or in the index."""
        found: set[tuple[str, str, str]] = {
            (record.kind, name, record.version)
            for record in self._holder(kind).values()
            if record.kind == kind and record.name == name
        }
        try:
            entries = self.filesystem.scandir(self.root / kind / name)
        except OSError:
            entries = []
        found |= {
            (kind, name, entry.name)
            for entry in entries
            if entry.name != POINTER and is_valid_tag_part(entry.name)
        }
        return found

    def _refresh_version(
        self, kind: str, name: str, version: str, readable: dict[tuple[str, str], bool]
    ) -> Change | None:
        path = self.root / kind / name / version
        holder = self._holder(kind)
        old = holder.get(path)
        record: VersionRecord | None = None
        try:
            info = os.lstat(path)
        except OSError:
            info = None
        if (
            info is not None
            and stat.S_ISDIR(info.st_mode)
            and is_valid_tag_part(version)
            and self._reads_name(kind, name, readable)
        ):
            record = census_version(_kind(kind), name, path, self.filesystem)
        if record is None:
            if old is None:
                return None
            self.forget(path)
            return Change("gone", old) if kind in self.kinds else None
        if old is not None:
            self._count(old, -1)
            if old.arrived is not None and old.arrived != record.arrived:
                record = replace(record, arrived=old.arrived)  # first seen stays first seen
        holder[path] = record
        self._count(record, +1)
        self._flow(kind, old.bytes if old is not None else 0, record.bytes)
        if kind in self.kinds and record.complete and (old is None or not old.complete):
            return Change("added", record)
        return None

    def _reads_name(self, kind: str, name: str, readable: dict[tuple[str, str], bool]) -> bool:
        """Return whether the census reads this name directory (see store.name_refusal).

        An event or a listing may point into a name the census leaves alone
        (``Iris``, a symlink, a filesystem mounted there): nothing in it is
        the store's, so nothing in it may be indexed, let alone removed.
        ``readable`` holds the answers of this refresh, by name.
        """
        key = (kind, name)
        if key not in readable:
            readable[key] = name_directory_refusal(self.root, kind, name, self.filesystem) is None
        return readable[key]

    def refresh_pointer(
        self, kind: str, name: str, readable: dict[tuple[str, str], bool] | None = None
    ) -> list[Change]:
        """Re-read the pointer of a name; return a ``latest`` change if its target moved."""
        key = (kind, name)
        path = self.root / kind / name / POINTER
        old = self.pointers.get(key)
        pointer: Pointer | None = None
        try:
            if self._reads_name(kind, name, {} if readable is None else readable):
                info = os.lstat(path)
                pointer = read_pointer(_kind(kind), name, path, self.filesystem, info)
        except OSError:
            pointer = None
        if pointer is None:
            self.pointers.pop(key, None)
        else:
            self.pointers[key] = pointer
        old_target = old.target if old is not None else None
        new_target = pointer.target if pointer is not None else None
        if old_target == new_target:
            return []
        return [Change("latest", kind=kind, name=name, old=old_target, new=new_target)]


def _kind(text: str) -> Kind:
    return "bentos" if text == "bentos" else "models"


def _differs(old: VersionRecord, new: VersionRecord) -> bool:
    return (old.bytes, old.complete, old.creation_time) != (
        new.bytes,
        new.complete,
        new.creation_time,
    )

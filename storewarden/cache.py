"""A cache of census records, so a restart does not re-read every descriptor.

Each complete version's record (bytes, creation time, labels, last change)
is kept in ``<state>/census-cache.json`` with the version directory's inode,
mtime and ctime. A record is reused only while all three still match: any
entry added, removed or renamed in the version directory, or a chmod, moves
its mtime or ctime. A file rewritten in place inside a subdirectory does not;
such a stale size only affects planning, because every removal re-walks its
victim first. A cache that is missing, corrupt, of another format or of
another store is ignored and rebuilt, never trusted.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storewarden import durable
from storewarden.store import Kind, Stamp, VersionRecord, is_valid_tag_part, shared_labels

# 2: a bento's record holds the model tags it needs. 3: an arrival keeps its stamp.
FORMAT = 4
FILE_NAME = "census-cache.json"
_ROW_LENGTH = 11


def _texts(values: object) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise TypeError("expected a list of text")
    return tuple(values)


def _record(
    kind: Kind,
    name: str,
    version: str,
    path: Path,
    row: list[Any],
    arrived: datetime | None = None,
) -> VersionRecord:
    _inode, _mtime, _ctime, size, created, estimated, changed, labels, needs, needs_problems, _ = (
        row
    )
    return VersionRecord(
        kind=kind,
        name=name,
        version=version,
        path=path,
        creation_time=datetime.fromtimestamp(float(created), tz=UTC),
        creation_time_estimated=bool(estimated),
        labels=shared_labels({str(key): str(value) for key, value in dict(labels).items()}),
        bytes=_detached(int(size)),
        last_change=datetime.fromtimestamp(float(changed), tz=UTC),
        complete=True,
        problem="no usable creation_time; directory mtime used" if estimated else None,
        references=_texts(needs) if kind == "bentos" else (),
        reference_problems=_texts(needs_problems) if kind == "bentos" else (),
        arrived=arrived,
    )


def _detached(number: int) -> int:
    """Return ``number`` as an int object of its own, not the parsed document's.

    The record keeps its size for as long as the version lives. The document's
    own int would hold the memory pool it shares with hundreds of the
    document's numbers long after the document is gone (over 30 MiB at 50,000
    versions); a sum is always a new object (or a shared small int).
    """
    return number + 0


class CensusCache:
    """Census records by ``kind/name/version``, each valid for one directory stamp.

    One object serves one census: :meth:`load`, then the census's lookups,
    stores and arrivals, then :meth:`save`.

    What the census finds is not kept as Python objects per version until
    :meth:`save`: rows it reuses are marked seen in the loaded ones, and new
    rows go straight into their JSON text. Objects allocated per version
    during a census, and freed only at its end, lie between the records the
    daemon keeps and leave the interpreter's memory pools half empty for good
    (some 45 MiB at 50,000 versions; docs/performance.md).
    """

    def __init__(self, path: Path, root: Path, *, saving: bool = True) -> None:
        self.path = path
        self.root = root
        # False for a census whose cache is never saved (a read-only command's):
        # it still reads rows, but writes none but the bentos' (kept by only()).
        self.saving = saving
        self._rows: dict[str, list[Any]] = {}
        # When each version was first seen in this store: [inode, mtime_ns, ctime_ns,
        # seconds], the stamp its directory had when last seen with it.
        self._arrivals: dict[str, list[float]] = {}
        # Loaded rows this census has not met as they are (yet): left out of the save.
        self._unseen: set[str] = set()
        self._unseen_arrivals: set[str] = set()
        # New rows, as the JSON members ``"key":[...],`` they are saved as (by kind). A
        # bytearray is one buffer; io.StringIO (before 3.12) keeps each written string.
        self._written: dict[str, bytearray] = {}
        self._written_arrivals = bytearray()
        self._dirty = False
        self.hits = 0
        self.misses = 0
        # Narrowed to one kind (:meth:`only`), or written already: never written (again).
        self._closed = False

    def load(self) -> None:
        """Read the cache file; anything wrong with it means starting empty."""
        self._rows = {}
        self._arrivals = {}
        self._unseen = set()
        self._unseen_arrivals = set()
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or data.get("root") != str(self.root)
            or not isinstance(data.get("entries"), dict)
        ):
            return
        self._rows = {
            key: row
            for key, row in data["entries"].items()
            if isinstance(key, str) and isinstance(row, list) and len(row) == _ROW_LENGTH
        }
        arrivals = data.get("arrivals")
        if isinstance(arrivals, dict):
            self._arrivals = {
                key: value
                for key, value in arrivals.items()
                if isinstance(key, str)
                and isinstance(value, list)
                and len(value) == 4
                and all(isinstance(item, int | float) and math.isfinite(item) for item in value)
            }
        self._unseen = set(self._rows)
        self._unseen_arrivals = set(self._arrivals)

    def lookup(
        self,
        kind: Kind,
        name: str,
        version: str,
        path: Path,
        stamp: Stamp,
        arrived: datetime | None = None,
    ) -> VersionRecord | None:
        """Return the cached record of a version if its directory still has ``stamp``.

        ``arrived`` goes into the record as it is built (no copy afterwards).
        """
        key = f"{kind}/{name}/{version}"
        row = self._rows.get(key)
        if (
            row is None
            or stamp.descriptor is None
            or row[:3] != [stamp.inode, stamp.mtime_ns, stamp.ctime_ns]
            or row[10] != list(stamp.descriptor)
        ):
            self.misses += 1
            return None
        try:
            record = _record(kind, name, version, path, row, arrived)
        except (TypeError, ValueError, OverflowError, OSError, AttributeError):
            self.misses += 1
            return None
        self._unseen.discard(key)
        self.hits += 1
        return record

    def store(self, record: VersionRecord, stamp: Stamp) -> None:
        """Remember a complete version's record under its directory stamp."""
        if (
            not record.complete
            or stamp.descriptor is None
            or record.references is None
            or not is_valid_tag_part(record.version)
        ):
            return
        if not self.saving and record.kind != "bentos":
            return  # never saved, and only() keeps the bentos' rows alone
        key = f"{record.kind}/{record.name}/{record.version}"
        row = [
            stamp.inode,
            stamp.mtime_ns,
            stamp.ctime_ns,
            record.bytes,
            record.creation_time.timestamp(),
            record.creation_time_estimated,
            record.last_change.timestamp(),
            dict(record.labels),
            list(record.references),
            list(record.reference_problems),
            list(stamp.descriptor),
        ]
        old = self._rows.get(key)
        if old is not None:
            self._unseen.add(key)  # replaced by the row written here
        self._dirty = self._dirty or old != row
        self._written.setdefault(record.kind, bytearray()).extend(_member(key, row))

    def arrival(self, kind: Kind, name: str, version: str, stamp: Stamp) -> datetime:
        """Return when a version was first seen here; the first time, its directory's ctime.

        Only while its directory keeps the stamp it had: one that changed may
        be another directory under the same tag (deleted and imported again,
        perhaps on the same inode), so its arrival moves on to the new ctime,
        never back. Later is the safe side: min_age and max_age count from it.
        """
        key = f"{kind}/{name}/{version}"
        row = self._arrivals.get(key)
        ctime = stamp.ctime_ns / 1e9
        if row is not None and row[:3] == [stamp.inode, stamp.mtime_ns, stamp.ctime_ns]:
            seen = row[3]
            self._unseen_arrivals.discard(key)  # kept as it was
        else:
            # A loaded row stays unseen: replaced by the one written here.
            seen = ctime if row is None else max(row[3], ctime)
            self._dirty = True
            if self.saving:
                self._written_arrivals.extend(
                    _member(key, [stamp.inode, stamp.mtime_ns, stamp.ctime_ns, seen])
                )
        try:
            return datetime.fromtimestamp(seen, tz=UTC)
        except (OverflowError, ValueError, OSError):
            return datetime.fromtimestamp(0, tz=UTC)

    def only(self, kind: Kind) -> CensusCache:
        """Return a copy that looks up the records of ``kind`` only, and never saves.

        What outlives a census (the re-read of bentos before a model goes)
        needs the bentos' rows alone; the parsed rows and arrivals of 50,000
        model versions are tens of MB. ``hits`` and ``misses`` are carried over.
        """
        narrowed = CensusCache(self.path, self.root)
        prefix = f"{kind}/"
        narrowed._rows = {
            key: row
            for key, row in self._rows.items()
            if key.startswith(prefix) and key not in self._unseen
        }
        written = self._written.get(kind)
        if written is not None:
            narrowed._rows.update(json.loads(_object({}, written)))
        narrowed.hits, narrowed.misses = self.hits, self.misses
        narrowed._closed = True
        return narrowed

    def changed(self) -> bool:
        """Return whether the census found anything the file does not hold."""
        if self._closed:
            return False
        return self._dirty or bool(self._unseen) or bool(self._unseen_arrivals)

    def save(self) -> None:
        """Write what this census found (temp file + rename); a failure is not an error."""
        if not self.saving or not self.changed():
            return
        kept = {key: row for key, row in self._rows.items() if key not in self._unseen}
        arrivals = {
            key: row for key, row in self._arrivals.items() if key not in self._unseen_arrivals
        }
        written = b"".join(self._written.values())
        document = b"".join(
            (
                f'{{"format":{FORMAT},"root":{json.dumps(str(self.root))},"entries":'.encode(),
                _object(kept, written),
                b',"arrivals":',
                _object(arrivals, self._written_arrivals),
                b"}",
            )
        )
        try:
            # No fsync: a cache lost to a power cut is rebuilt, never trusted half-written.
            durable.replace_file(self.path, document, 0o600, sync=False)
        except OSError:
            return  # a read-only state dir or a full disk: the cache is an optimisation only
        self._closed = True


def _member(key: str, row: list[Any]) -> bytes:
    """Return ``"key":row,``: one member of a JSON object, written as it is saved."""
    return f"{json.dumps(key)}:{json.dumps(row, separators=(',', ':'))},".encode()


def _object(kept: dict[str, Any], written: bytes | bytearray) -> bytes:
    """Return the JSON object of ``kept`` and the members already ``written``."""
    members = json.dumps(kept, separators=(",", ":"))[1:-1].encode()
    return b"{" + b",".join(part for part in (members, written.rstrip(b",")) if part) + b"}"

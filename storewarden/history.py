"""The usage history: one sample per check, in the state directory, for the fill forecast.

``<state>/history.jsonl`` holds a header line and then one JSON array per
sample: ``[time, elapsed, used, free, total, store, written, freed,
protected]``. Each check appends one line (``O_APPEND``, fsync: a crash
cuts at most the last line short, which the reader ignores); when the
file passes :data:`MAX_BYTES` it is rewritten atomically with its older
half downsampled (pairs merged, their written and freed bytes summed), so
the total written stays exact however old. Appends and rewrites hold
``<state>/history.lock``.

``written`` is the gross growth since the previous sample: the bytes of
versions that appeared or grew, from the census or the daemon's index, not
the change in usage, so a prune never looks like the store shrinking.
``freed`` is the bytes of versions that left or shrank. ``elapsed`` is the
monotonic time since the previous sample of the same process (``null``
after a start), so a clock that jumps does not bend the time axis.

A history that cannot be read is renamed aside (``history.jsonl.unreadable``)
with a ``history_unreadable`` event and started afresh: never fatal.
Read-only commands read it and never write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from storewarden import durable
from storewarden.logs import get_logger
from storewarden.store import VersionRecord
from storewarden.usage import Usage

HISTORY_FILE = "history.jsonl"
LOCK_FILE = "history.lock"
ASIDE_SUFFIX = ".unreadable"
HEADER = {"format": "storewarden-history", "version": 1}
# About a week and a half of one-minute checks at full resolution, then coarser.
MAX_BYTES = 1024 * 1024
# The rewrite keeps this share of MAX_BYTES, so it happens about once per half a budget.
COMPACT_TO = 0.5


class HistoryError(Exception):
    """The history file is not one the warden wrote."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One check's measurement (see the module docstring for the fields)."""

    time: float
    elapsed: float | None
    used: int
    free: int
    total: int
    store: int
    written: int
    freed: int
    protected: int | None = None

    def encode(self) -> bytes:
        """Return the sample as one line."""
        elapsed = None if self.elapsed is None else round(self.elapsed, 3)
        fields = [round(self.time, 3), elapsed, self.used, self.free, self.total, self.store]
        fields += [self.written, self.freed, self.protected]
        return (json.dumps(fields, separators=(",", ":")) + "\n").encode()

    @classmethod
    def decode(cls, value: object) -> Sample:
        """Return the sample a parsed line holds; raise HistoryError if it holds none."""
        if not isinstance(value, list) or len(value) != 9:
            raise HistoryError("a sample must be a list of 9 fields")
        time_, elapsed, *counts, protected = value
        if not _number(time_) or not (elapsed is None or _number(elapsed)):
            raise HistoryError("a sample's time must be a number")
        if not all(_count(item) for item in counts) or not (protected is None or _count(protected)):
            raise HistoryError("a sample's sizes must be non-negative integers")
        used, free, total, store, written, freed = counts
        return cls(float(time_), elapsed, used, free, total, store, written, freed, protected)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse(data: bytes) -> list[Sample]:
    """Return the samples of a history file's bytes; raise HistoryError if it is not one.

    A last line without its newline is a write a crash cut short: ignored.
    """
    # The last element is empty after the final newline, or a line a crash cut short.
    complete = data.split(b"\n")[:-1]
    if not complete:
        return []
    try:
        header = json.loads(complete[0])
    except ValueError as error:
        raise HistoryError(f"the header is not JSON: {error}") from None
    if header != HEADER:
        raise HistoryError(f"the header is {complete[0][:80]!r}, not storewarden's history")
    samples = []
    for number, line in enumerate(complete[1:], start=2):
        try:
            samples.append(Sample.decode(json.loads(line)))
        except (ValueError, HistoryError) as error:
            raise HistoryError(f"line {number}: {error}") from None
    return samples


def growth(
    previous: Mapping[Path, int] | None,
    since: float | None,
    records: Iterable[VersionRecord],
) -> tuple[int, int]:
    """Return (written, freed) bytes between the previous sample and ``records`` now.

    With ``previous`` (each version's bytes at the previous sample, as the
    same process saw them): written is what appeared or grew, freed what
    left or shrank. Without it (the first sample of a process), written is
    the bytes of versions that arrived after ``since`` (the last sample's
    time; none when there is no history) and freed is 0: what left in
    between is unknown.
    """
    written = freed = 0
    if previous is None:
        if since is not None:
            written = sum(
                record.bytes
                for record in records
                if record.arrived is not None and record.arrived.timestamp() > since
            )
        return written, 0
    seen = set()
    for record in records:
        seen.add(record.path)
        before = previous.get(record.path, 0)
        if record.bytes > before:
            written += record.bytes - before
        else:
            freed += before - record.bytes
    freed += sum(size for path, size in previous.items() if path not in seen)
    return written, freed


def merge(older: Sample, newer: Sample) -> Sample:
    """Return one sample standing for two in a row: the newer's state, the sums of their flows."""
    both = older.elapsed is not None and newer.elapsed is not None
    return replace(
        newer,
        # A gap measured on the wall clock (a restart) cannot be added to monotonic time.
        elapsed=(older.elapsed or 0.0) + (newer.elapsed or 0.0) if both else None,
        written=older.written + newer.written,
        freed=older.freed + newer.freed,
    )


def downsample(samples: Sequence[Sample], keep: int) -> list[Sample]:
    """Return at most ``keep`` samples: the older half merged in pairs, again until they fit.

    The newest samples keep their full resolution; the sum of ``written``
    and ``freed`` is unchanged, so the cumulative series keeps its points.
    """
    result = list(samples)
    while len(result) > max(keep, 2):
        half = max(2, len(result) // 2)
        older, newer = result[:half], result[half:]
        merged = [
            merge(older[index], older[index + 1]) if index + 1 < len(older) else older[index]
            for index in range(0, len(older), 2)
        ]
        result = merged + newer
    return result


def encode(samples: Sequence[Sample]) -> bytes:
    """Return a whole history file holding ``samples``."""
    header = (json.dumps(HEADER, separators=(",", ":")) + "\n").encode()
    return header + b"".join(sample.encode() for sample in samples)


class History:
    """The history file of one state directory, and what this process last saw."""

    def __init__(self, state_dir: Path, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = state_dir / HISTORY_FILE
        self.max_bytes = max_bytes
        self.lock_path = state_dir / LOCK_FILE
        self.samples: list[Sample] | None = None
        self.previous: dict[Path, int] | None = None
        self._last_monotonic: float | None = None
        self._failed: str | None = None
        # The file as this process last wrote it: (inode, size, mtime); None when unknown.
        self._stamp: tuple[int, int, int] | None = None
        self.log = get_logger()

    def read(self) -> list[Sample]:
        """Return the samples on disk (none if there is no file); raise HistoryError, OSError."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return parse(data)

    def load(self) -> list[Sample]:
        """Return the samples, from memory once read; an unreadable file is set aside."""
        if self.samples is None:
            try:
                self.samples = self.read()
            except (HistoryError, OSError) as error:
                self._set_aside(error)
                self.samples = []
        return self.samples

    def _set_aside(self, error: Exception) -> None:
        aside = self.path.with_name(self.path.name + ASIDE_SUFFIX)
        text = str(error) if isinstance(error, HistoryError) else f"{type(error).__name__}: {error}"
        moved: str | None = str(aside)
        try:
            os.replace(self.path, aside)
            durable.fsync_directory(self.path.parent)
        except OSError:
            moved = None
        self.log.warning("history_unreadable", path=str(self.path), error=text, moved_to=moved)

    def record(
        self,
        now: datetime,
        usage: Usage,
        records: Iterable[VersionRecord],
        *,
        protected: int | None = None,
        flows: tuple[int, int] | None = None,
    ) -> Sample | None:
        """Append one sample for ``usage`` and the versions now; return it (None if unwritten).

        ``flows`` is (written, freed) since this process's previous sample
        when the caller keeps them (the daemon's index does); without it they
        are worked out from ``records`` (see :func:`growth`). The samples are
        read again only when the file is not as this process left it.

        A failure to write (a full disk, a read-only state directory) is
        logged once per distinct error as ``history_failed``; the daemon and
        the prune go on without it.
        """
        records = [] if flows is not None else list(records)
        try:
            with self._locked():
                if self._stamp is None or self._stamp != self._stamp_now():
                    self.samples = None  # another process appended or replaced it since
                samples = self.load()
                since = samples[-1].time if samples else None
                written, freed = flows or growth(self.previous, since, records)
                tick = time.monotonic()
                elapsed = None if self._last_monotonic is None else tick - self._last_monotonic
                sample = Sample(  # rounded as written, so the sample returned is the one read
                    round(now.timestamp(), 3),
                    None if elapsed is None else round(elapsed, 3),
                    usage.used,
                    usage.free,
                    usage.total,
                    usage.store_bytes,
                    written,
                    freed,
                    protected,
                )
                samples.append(sample)
                self._write(samples, sample)
                self._stamp = self._stamp_now()
        except OSError as error:
            # What is in memory may hold the sample that was not written: read again next time.
            self.samples, self._stamp = None, None
            message = f"{type(error).__name__}: {error.strerror or error}"
            if message != self._failed:
                self.log.warning("history_failed", path=str(self.path), error=message)
            self._failed = message
            return None
        self._failed = None
        self._last_monotonic = tick
        self.previous = None if flows is not None else {r.path: r.bytes for r in records}
        return sample

    def _stamp_now(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _write(self, samples: list[Sample], sample: Sample) -> None:
        size = self.path.stat().st_size if self.path.exists() else 0
        line = sample.encode()
        if size and size + len(line) <= self.max_bytes:
            durable.append_line(self.path, line)
            return
        budget = int(self.max_bytes * COMPACT_TO) if size else self.max_bytes
        keep = max(2, budget // max(1, len(line)))
        compact = downsample(samples, keep)
        data = encode(compact)
        while len(data) > budget and len(compact) > 2:
            compact = downsample(compact, len(compact) * 3 // 4)
            data = encode(compact)
        durable.replace_file(self.path, data, 0o644)
        self.samples = compact

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

"""Reports over the JSON-lines audit trail: what went, why, and what went wrong.

Pure functions over lines of text: :func:`summarize` reads lines (a
``log.file``, or ``journalctl -u storewarden -o cat`` piped in) into a
:class:`Report`; :func:`report_data` and :func:`render_text` present it.
A line that is not a JSON object with an ``event`` is counted as
unparseable and skipped; a known event whose fields have the wrong types is
counted as malformed and skipped. Neither stops the report: a journal holds
tracebacks and other programs' lines too.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from storewarden.config import human_bytes, parse_duration

# A line longer than this is not one of ours (the longest event is a few KiB).
MAX_LINE = 1024 * 1024
# Stands for a line too long to read whole; it parses as nothing, so it is counted unparseable.
_OVERSIZED = "<a line longer than MAX_LINE>"
# Terminal control characters a hostile line could carry into a report meant for people.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), *range(127, 160))}


@dataclass(frozen=True)
class Removed:
    """One ``version_removed`` (or, in a dry run, ``would_remove``) event."""

    timestamp: datetime
    store: str
    kind: str
    name: str
    version: str
    bytes: int
    reason: str
    run_id: str
    recovered: bool = False


@dataclass(frozen=True)
class PointerChange:
    """A ``latest_changed``, ``latest_removed`` or ``pointer_repaired`` event."""

    timestamp: datetime
    event: str
    kind: str
    name: str
    old: str | None
    new: str | None
    reason: str


@dataclass(frozen=True)
class MissedTarget:
    """A ``prune_finished`` whose target was not reached."""

    timestamp: datetime
    run_id: str
    shortfall_bytes: int
    used_percent_after: float
    removed: int
    dry_run: bool


@dataclass(frozen=True)
class Failure:
    """An error-level event, with what it was about when it says."""

    timestamp: datetime
    event: str
    error: str
    kind: str | None = None
    name: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Gone:
    """A ``version_gone``: a version that left the store without the warden removing it."""

    timestamp: datetime
    kind: str
    name: str
    version: str


@dataclass(frozen=True)
class RunStart:
    """A ``prune_started``: what started a run."""

    timestamp: datetime
    run_id: str
    triggers: tuple[str, ...]
    used_percent: float | None
    dry_run: bool


@dataclass
class Report:
    """What an audit trail says, in the order the lines came."""

    since: datetime | None = None
    lines: int = 0
    events: int = 0
    unparseable: int = 0
    malformed: int = 0
    before_since: int = 0
    first: datetime | None = None
    last: datetime | None = None
    counts: Counter[str] = field(default_factory=Counter)
    removed: list[Removed] = field(default_factory=list)
    would_remove: list[Removed] = field(default_factory=list)
    pointer_changes: list[PointerChange] = field(default_factory=list)
    missed_targets: list[MissedTarget] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    gone: list[Gone] = field(default_factory=list)
    runs: dict[str, RunStart] = field(default_factory=dict)
    prune_runs: int = 0
    dry_runs: int = 0
    # (store, kind, name, version, run_id) of each removal, to know a recovery's repeat.
    removal_keys: set[tuple[str, str, str, str, str]] = field(default_factory=set, repr=False)


class MalformedEventError(Exception):
    """A known event whose fields are missing or of the wrong type."""


# -- reading ------------------------------------------------------------------------------


def parse_since(text: str, now: datetime) -> datetime:
    """Given ``24h``, ``7d`` (ago from ``now``) or an ISO 8601 time, return the aware moment.

    A time without a zone is UTC, as the audit log's are. Raise ValueError.
    """
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a duration like 24h or 7d, or a time like 2026-11-26T12:00Z, got {text!r}"
        ) from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def open_trail(path: Path) -> IO[bytes]:
    """Open an audit log file for reading; one that logrotate compressed (gzip) is unpacked."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def read_lines(stream: IO[bytes]) -> Iterator[str]:
    """Yield the lines of a binary stream as text, never holding more than MAX_LINE bytes.

    Bytes that are not UTF-8 are replaced (the line then fails to parse, or
    parses with U+FFFD in a string); a longer line is skipped to its end and
    stands as one unparseable line.
    """
    while True:
        chunk = stream.readline(MAX_LINE + 1)
        if not chunk:
            return
        if len(chunk) > MAX_LINE and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):
                chunk = stream.readline(MAX_LINE)
            yield _OVERSIZED
            continue
        yield chunk.decode("utf-8", errors="replace")


def parse_line(line: str) -> dict[str, Any] | None:
    """Return the event a line holds, or None if it holds none.

    The JSON object may follow a prefix (``journalctl`` without ``-o cat``
    prints a date, host and unit before it).
    """
    text = line.strip()
    if not text or len(text) > MAX_LINE or text == _OVERSIZED:
        return None
    start = text.find("{")
    if start < 0:
        return None
    try:
        value = json.loads(text[start:])
    except (ValueError, RecursionError):  # RecursionError: '[[[[...' thousands deep
        return None
    if not isinstance(value, dict) or not isinstance(value.get("event"), str):
        return None
    return value


def parse_time(value: object) -> datetime:
    """Return an event's ``timestamp`` as an aware UTC datetime; raise MalformedEventError."""
    if not isinstance(value, str):
        raise MalformedEventError("timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedEventError("timestamp") from None
    if moment.tzinfo is None:  # the schema says UTC; a naive stamp can only mean that
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _text(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str):
        raise MalformedEventError(key)
    return value


def _optional_text(event: Mapping[str, Any], key: str) -> str | None:
    value = event.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedEventError(key)
    return value


def _count(event: Mapping[str, Any], key: str) -> int:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedEventError(key)
    return value


def _number(event: Mapping[str, Any], key: str) -> float:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedEventError(key)
    return float(value)


def _flag(event: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = event.get(key, default)
    if not isinstance(value, bool):
        raise MalformedEventError(key)
    return value


def _removed(event: Mapping[str, Any], moment: datetime) -> Removed:
    return Removed(
        timestamp=moment,
        store=str(event.get("store", "")),
        kind=_text(event, "kind"),
        name=_text(event, "name"),
        version=_text(event, "version"),
        bytes=_count(event, "bytes"),
        reason=_text(event, "reason"),
        run_id=_text(event, "run_id"),
        recovered=_flag(event, "recovered"),
    )


def _run_start(event: Mapping[str, Any], moment: datetime) -> RunStart:
    triggers = event.get("triggers")
    usage = event.get("usage")
    used = usage.get("used_percent") if isinstance(usage, dict) else None
    if not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers):
        raise MalformedEventError("triggers")
    return RunStart(
        moment,
        _text(event, "run_id"),
        tuple(triggers),
        float(used) if isinstance(used, int | float) and not isinstance(used, bool) else None,
        _flag(event, "dry_run"),
    )


def _error_text(event: Mapping[str, Any]) -> str:
    error = event.get("error")
    if isinstance(error, str):
        return error
    problems = event.get("problems")
    if isinstance(problems, list):
        return "; ".join(str(problem) for problem in problems)
    return ""


def _add(report: Report, event: Mapping[str, Any], moment: datetime) -> None:
    """Add one event to the report; raise MalformedEventError, adding nothing, on a bad field."""
    name = event["event"]
    failure = None
    if event.get("level") == "error":
        failure = Failure(
            timestamp=moment,
            event=name,
            error=_error_text(event),
            kind=_optional_text(event, "kind"),
            name=_optional_text(event, "name"),
            version=_optional_text(event, "version"),
        )
    if name == "version_removed":
        item = _removed(event, moment)
        key = (item.store, item.kind, item.name, item.version, item.run_id)
        # A run killed between its version_removed and dropping its intent is logged
        # again, recovered, at the next start: one removal, not two.
        if not (item.recovered and key in report.removal_keys):
            report.removed.append(item)
            report.removal_keys.add(key)
    elif name == "would_remove":
        report.would_remove.append(_removed(event, moment))
    elif name in ("latest_changed", "latest_removed", "pointer_repaired"):
        report.pointer_changes.append(
            PointerChange(
                timestamp=moment,
                event=name,
                kind=_text(event, "kind"),
                name=_text(event, "name"),
                old=_optional_text(event, "old"),
                new=_optional_text(event, "new"),
                reason=_text(event, "problem" if name == "pointer_repaired" else "reason"),
            )
        )
    elif name == "prune_finished":
        dry_run = _flag(event, "dry_run")
        reached = _flag(event, "target_reached", default=True)
        if not reached:
            report.missed_targets.append(
                MissedTarget(
                    timestamp=moment,
                    run_id=_text(event, "run_id"),
                    shortfall_bytes=_count(event, "shortfall_bytes"),
                    used_percent_after=_number(event, "used_percent_after"),
                    removed=_count(event, "removed"),
                    dry_run=dry_run,
                )
            )
        if dry_run:
            report.dry_runs += 1
        else:
            report.prune_runs += 1
    elif name == "prune_started":
        start = _run_start(event, moment)
        report.runs[start.run_id] = start
    elif name == "version_gone":
        report.gone.append(
            Gone(moment, _text(event, "kind"), _text(event, "name"), _text(event, "version"))
        )
    if failure is not None:
        report.failures.append(failure)


def summarize(lines: Iterable[str], *, since: datetime | None = None) -> Report:
    """Given the lines of an audit trail, return its Report.

    ``since`` (aware) leaves out events stamped before it. Lines are read
    one at a time, so a long journal never has to fit in memory as text.
    """
    report = Report(since=since)
    for line in lines:
        if not line.strip():
            continue  # a blank line is no event and no damage either
        report.lines += 1
        event = parse_line(line)
        if event is None:
            report.unparseable += 1
            continue
        try:
            moment = parse_time(event.get("timestamp"))
        except MalformedEventError:
            report.malformed += 1
            continue
        if since is not None and moment < since:
            report.before_since += 1
            continue
        try:
            _add(report, event, moment)
        except MalformedEventError:
            report.malformed += 1
            continue
        report.events += 1
        report.counts[event["event"]] += 1
        report.first = moment if report.first is None else min(report.first, moment)
        report.last = moment if report.last is None else max(report.last, moment)
    return report


def departures(report: Report, kind: str | None, name: str, version: str) -> list[dict[str, Any]]:
    """Return how ``kind/name:version`` left the store, as the trail tells it, oldest first.

    Each removal by the warden (``version_removed``) comes with the run that
    started it (``prune_started``: its triggers and usage; none for a
    ``delete``) and the pointer change that moved ``latest`` off it (the
    last ``latest_changed`` or ``latest_removed`` of its name naming it as
    ``old``, at or before the removal). A version that left without the
    warden (``version_gone``) has no bytes, reason or run. ``kind`` None: either kind.
    """
    found: list[dict[str, Any]] = []

    def wanted(item_kind: str, item_name: str, item_version: str) -> bool:
        return (kind in (None, item_kind)) and item_name == name and item_version == version

    for item in report.removed:
        if not wanted(item.kind, item.name, item.version):
            continue
        run = report.runs.get(item.run_id)
        pointer = next(
            (
                change
                for change in reversed(report.pointer_changes)
                if change.event in ("latest_changed", "latest_removed")
                and (change.kind, change.name, change.old) == (item.kind, item.name, item.version)
                and change.timestamp <= item.timestamp
            ),
            None,
        )
        found.append(
            {
                "timestamp": _stamp(item.timestamp),
                "event": "version_removed",
                "kind": item.kind,
                "name": item.name,
                "version": item.version,
                "bytes": item.bytes,
                "reason": item.reason,
                "run_id": item.run_id,
                "recovered": item.recovered,
                "run": (
                    {
                        "timestamp": _stamp(run.timestamp),
                        "triggers": list(run.triggers),
                        "used_percent": run.used_percent,
                    }
                    if run is not None
                    else None
                ),
                "pointer": (
                    {
                        "timestamp": _stamp(pointer.timestamp),
                        "old": pointer.old,
                        "new": pointer.new,
                        "reason": pointer.reason,
                    }
                    if pointer is not None
                    else None
                ),
            }
        )
    for gone in report.gone:
        if wanted(gone.kind, gone.name, gone.version):
            found.append(
                {
                    "timestamp": _stamp(gone.timestamp),
                    "event": "version_gone",
                    "kind": gone.kind,
                    "name": gone.name,
                    "version": gone.version,
                    "bytes": None,
                    "reason": None,
                    "run_id": None,
                    "recovered": False,
                    "run": None,
                    "pointer": None,
                }
            )
    return sorted(found, key=lambda item: str(item["timestamp"]))


def last_latest(report: Report, kind: str | None, name: str) -> str | None:
    """Return the version ``name:latest`` last named before its pointer was removed, if it was."""
    for change in reversed(report.pointer_changes):
        if change.event == "latest_removed" and change.name == name and kind in (None, change.kind):
            return change.old
    return None


# -- presenting ---------------------------------------------------------------------------


def _stamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class NameRemovals:
    """The removals of one name."""

    store: str
    kind: str
    name: str
    removed: list[Removed] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Return the bytes its removals freed."""
        return sum(item.bytes for item in self.removed)

    @property
    def reasons(self) -> dict[str, int]:
        """Return how many removals each reason accounts for, most first."""
        return dict(Counter(item.reason for item in self.removed).most_common())


def removals_by_name(removed: Iterable[Removed]) -> list[NameRemovals]:
    """Group removals by store, kind and name; the names that freed the most bytes first."""
    groups: dict[tuple[str, str, str], NameRemovals] = {}
    for item in sorted(removed, key=lambda item: item.timestamp):
        key = (item.store, item.kind, item.name)
        groups.setdefault(key, NameRemovals(*key)).removed.append(item)
    return sorted(groups.values(), key=lambda group: (-group.bytes, group.kind, group.name))


def dry_runs_by_run(would_remove: Iterable[Removed]) -> list[tuple[str, list[Removed]]]:
    """Group dry-run ``would_remove`` events by run, in the order the runs came."""
    runs: dict[str, list[Removed]] = {}
    for item in would_remove:
        runs.setdefault(item.run_id, []).append(item)
    return list(runs.items())


def _removed_data(item: Removed) -> dict[str, Any]:
    return {
        "timestamp": _stamp(item.timestamp),
        "version": item.version,
        "bytes": item.bytes,
        "reason": item.reason,
        "run_id": item.run_id,
        "recovered": item.recovered,
    }


def report_data(report: Report) -> dict[str, Any]:
    """Return the report as plain data for ``--json``."""
    groups = removals_by_name(report.removed)
    return {
        "since": _stamp(report.since),
        "first": _stamp(report.first),
        "last": _stamp(report.last),
        "lines": report.lines,
        "events": report.events,
        "unparseable": report.unparseable,
        "malformed": report.malformed,
        "before_since": report.before_since,
        "counts": dict(sorted(report.counts.items())),
        "prune_runs": report.prune_runs,
        "dry_runs": report.dry_runs,
        "removed": {
            "versions": len(report.removed),
            "bytes": sum(item.bytes for item in report.removed),
        },
        "removals": [
            {
                "store": group.store,
                "kind": group.kind,
                "name": group.name,
                "versions": len(group.removed),
                "bytes": group.bytes,
                "reasons": group.reasons,
                "removed": [_removed_data(item) for item in group.removed],
            }
            for group in groups
        ],
        "pointer_changes": [
            {
                "timestamp": _stamp(change.timestamp),
                "event": change.event,
                "kind": change.kind,
                "name": change.name,
                "old": change.old,
                "new": change.new,
                "reason": change.reason,
            }
            for change in report.pointer_changes
        ],
        "missed_targets": [
            {
                "timestamp": _stamp(missed.timestamp),
                "run_id": missed.run_id,
                "shortfall_bytes": missed.shortfall_bytes,
                "used_percent_after": missed.used_percent_after,
                "removed": missed.removed,
                "dry_run": missed.dry_run,
            }
            for missed in report.missed_targets
        ],
        "dry_run_plans": [
            {
                "run_id": run_id,
                "timestamp": _stamp(items[0].timestamp),
                "versions": len(items),
                "bytes": sum(item.bytes for item in items),
                "would_remove": [
                    {"kind": item.kind, "name": item.name} | _removed_data(item) for item in items
                ],
            }
            for run_id, items in dry_runs_by_run(report.would_remove)
        ],
        "errors": [
            {
                "timestamp": _stamp(failure.timestamp),
                "event": failure.event,
                "error": failure.error,
                "kind": failure.kind,
                "name": failure.name,
                "version": failure.version,
            }
            for failure in report.failures
        ],
        "gone": [
            {
                "timestamp": _stamp(gone.timestamp),
                "kind": gone.kind,
                "name": gone.name,
                "version": gone.version,
            }
            for gone in report.gone
        ],
    }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _tag(kind: str | None, name: str | None, version: str | None) -> str:
    if name is None:
        return ""
    return f"{kind or '?'}/{name}" + (f":{version}" if version else "")


def _header(report: Report) -> list[str]:
    window = f" from {_stamp(report.first)} to {_stamp(report.last)}" if report.first else ""
    head = f"{_plural(report.events, 'event')}{window} in {_plural(report.lines, 'line')}"
    if report.since is not None:
        head += f" (since {_stamp(report.since)}; {report.before_since} earlier left out)"
    out = [head]
    skipped = []
    if report.unparseable:
        skipped.append(f"{_plural(report.unparseable, 'line')} not JSON events")
    if report.malformed:
        skipped.append(f"{_plural(report.malformed, 'event')} with malformed fields")
    if skipped:
        out.append("skipped: " + ", ".join(skipped))
    if report.lines and not report.events and report.unparseable == report.lines:
        out.append("no JSON events found: is log.format json? (journalctl needs -o cat)")
    out.append(
        f"prune runs: {report.prune_runs}, dry runs: {report.dry_runs},"
        f" missed target: {len(report.missed_targets)}"
    )
    return out


def _removals(report: Report) -> list[str]:
    groups = removals_by_name(report.removed)
    stores = {group.store for group in groups}
    total = sum(item.bytes for item in report.removed)
    out = [f"removed: {_plural(len(report.removed), 'version')}, {human_bytes(total)}"]
    for group in groups:
        where = f" in {group.store}" if len(stores) > 1 else ""
        reasons = ", ".join(f"{reason} {count}" for reason, count in group.reasons.items())
        out.append(
            f"  {group.kind}/{group.name}{where}: {_plural(len(group.removed), 'version')},"
            f" {human_bytes(group.bytes)} ({reasons})"
        )
        for item in group.removed:
            note = " (finished by recovery)" if item.recovered else ""
            out.append(
                f"    {_stamp(item.timestamp)}  {item.version}  {human_bytes(item.bytes)}"
                f"  {item.reason}  run {item.run_id}{note}"
            )
    return out


def _pointer_changes(report: Report) -> list[str]:
    return [f"pointer changes: {len(report.pointer_changes)}"] + [
        f"  {_stamp(change.timestamp)}  {change.kind}/{change.name} latest"
        f" {change.old or '-'} -> {change.new or '-'}  ({change.reason})"
        for change in report.pointer_changes
    ]


def _missed_targets(report: Report) -> list[str]:
    return [f"runs that missed their target: {len(report.missed_targets)}"] + [
        f"  {_stamp(missed.timestamp)}  run {missed.run_id}"
        f"{' (dry run)' if missed.dry_run else ''}: removed {missed.removed},"
        f" {human_bytes(missed.shortfall_bytes)} short,"
        f" {missed.used_percent_after:.1f}% used after"
        for missed in report.missed_targets
    ]


def _dry_runs(report: Report) -> list[str]:
    runs = dry_runs_by_run(report.would_remove)
    out = [f"dry-run plans: {len(runs)}"]
    for run_id, items in runs:
        out.append(
            f"  {_stamp(items[0].timestamp)}  run {run_id}: would remove"
            f" {_plural(len(items), 'version')}, {human_bytes(sum(i.bytes for i in items))}"
        )
        out.extend(
            f"    {item.kind}/{item.name}:{item.version}  {human_bytes(item.bytes)}  {item.reason}"
            for item in items
        )
    return out


def _failures(report: Report) -> list[str]:
    out = [f"errors: {len(report.failures)}"]
    for failure in report.failures:
        about = _tag(failure.kind, failure.name, failure.version)
        out.append(
            f"  {_stamp(failure.timestamp)}  {failure.event}"
            f"{' ' + about if about else ''}: {failure.error}"
        )
    return out


def _gone(report: Report) -> list[str]:
    if not report.gone:
        return []
    return [f"gone without the warden (version_gone): {len(report.gone)}"] + [
        f"  {_stamp(gone.timestamp)}  {gone.kind}/{gone.name}:{gone.version}"
        for gone in report.gone
    ]


def printable(text: str) -> str:
    """Return ``text`` with terminal control characters escaped (``\\x1b``)."""
    return text.translate(_CONTROL)


def render_text(report: Report) -> list[str]:
    """Return the report as lines for people: totals first, then a section each, blank-separated."""
    out = _header(report)
    for section in (_removals, _pointer_changes, _missed_targets, _dry_runs, _failures, _gone):
        lines = section(report)
        if lines:
            out.extend(["", *lines])
    # Names and errors come from the lines read: no escape sequence reaches the terminal.
    return [line.translate(_CONTROL) for line in out]

"""The one removal loop: prune, delete, retention, abandoned and --force all run through it.

For each planned version, in order: a last look at it and at the store
(:func:`storewarden.policy.recheck` decides, from facts read right now), its
archive if ``archive.dir`` is set, then a second look when archiving took
time, then the crash-safe removal (:meth:`storewarden.prune.Pruner.remove`).
What a ``delete`` or ``--force`` changes is which blockers count (the
:class:`~storewarden.policy.Mode`), not which code runs.

Whatever goes wrong with one version stays with that version: any exception
while reading, archiving or removing it (an ``OSError``, a ``RecursionError``
from a hostile tree, a bug of ours) is logged as ``removal_failed`` and the
loop goes on with the next version. A version that fails three cycles in a
row is quarantined: skipped for a back-off that doubles up to a day, logged
once as ``version_quarantined``. A removal that hits a full disk (ENOSPC) is
tried again once, at the end, after the others have freed space.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storewarden import durable, policy
from storewarden.archive import ArchiveError
from storewarden.inuse import Inode
from storewarden.policy import Mode, Removal, Target
from storewarden.prune import NoSettledLatestError, RemovalOutcome
from storewarden.store import (
    MOUNTED_HERE,
    FileSystem,
    VersionRecord,
    census_version,
    name_directory_refusal,
)
from storewarden.usage import Usage

if TYPE_CHECKING:
    from storewarden.engine import Engine

QUARANTINE_FILE = "quarantine.json"
# Failures in consecutive cycles before a version is set aside.
QUARANTINE_AFTER = 3
FIRST_BACKOFF = timedelta(minutes=15)
LONGEST_BACKOFF = timedelta(days=1)


class Step(StrEnum):
    """What became of one planned removal."""

    REMOVED = "removed"
    SKIPPED = "skipped"  # a protection holds now (or the version is gone)
    FAILED = "failed"
    DEFERRED = "deferred"  # ENOSPC: tried again once the others freed space
    QUARANTINED = "quarantined"  # failed too often lately: left alone for a while
    WOULD_REMOVE = "would_remove"  # a dry run


@dataclass(frozen=True)
class Attempt:
    """One planned removal and what became of it."""

    removal: Removal
    step: Step
    record: VersionRecord
    reasons: tuple[str, ...] = ()
    error: str | None = None
    outcome: RemovalOutcome | None = None


@dataclass
class Quarantine:
    """Versions whose removal keeps failing, kept in ``<state>/quarantine.json``.

    Each entry counts the cycles in a row that failed on a version and, once
    quarantined, until when it is left alone. An unreadable file starts
    empty (a quarantine is a courtesy to the log, never a protection).
    """

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def load(self) -> Quarantine:
        """Read the file; anything wrong with it means an empty quarantine."""
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            data = {}
        entries = data.get("entries") if isinstance(data, dict) else None
        self.entries = {
            key: value
            for key, value in (entries or {}).items()
            if isinstance(key, str)
            and isinstance(value, dict)
            and isinstance(value.get("failures"), int)
            and isinstance(value.get("until"), int | float)
        }
        return self

    def save(self) -> None:
        """Write the file (atomically); a failure to write is not an error."""
        data = json.dumps({"format": 1, "entries": self.entries}, indent=1).encode()
        try:
            durable.replace_file(self.path, data, 0o600)
        except OSError:
            return

    def holds(self, key: str, now: datetime) -> bool:
        """Return whether ``key`` is quarantined at ``now``."""
        entry = self.entries.get(key)
        return entry is not None and entry["until"] > now.timestamp()

    def failed(self, key: str, now: datetime) -> datetime | None:
        """Count a failed cycle; return until when it is quarantined if it now is."""
        entry = self.entries.setdefault(key, {"failures": 0, "until": 0, "backoff": 0})
        entry["failures"] += 1
        if entry["failures"] < QUARANTINE_AFTER:
            return None
        previous = timedelta(seconds=float(entry.get("backoff") or 0))
        backoff = min(LONGEST_BACKOFF, previous * 2 if previous else FIRST_BACKOFF)
        entry["backoff"] = backoff.total_seconds()
        until = now + backoff
        entry["until"] = until.timestamp()
        entry["failures"] = 0
        return until

    def succeeded(self, key: str) -> None:
        """Forget a version that went (or that no longer fails)."""
        self.entries.pop(key, None)

    def current(self, now: datetime) -> dict[str, datetime]:
        """Return every quarantined version key with the time it is released."""
        return {
            key: datetime.fromtimestamp(entry["until"], tz=now.tzinfo)
            for key, entry in self.entries.items()
            if entry["until"] > now.timestamp()
        }


def version_key(record: VersionRecord) -> str:
    """Return ``kind/name:version``."""
    return f"{record.kind}/{record.tag}"


@dataclass
class Run:
    """One pass of the loop over a plan: what it was given and what it did."""

    run_id: str
    mode: Mode
    target: Target | None
    usage: Usage
    store_bytes: int
    dry_run: bool
    attempts: list[Attempt] = field(default_factory=list)


class Executor:
    """Runs planned removals for an engine, one version at a time, in order."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.log = engine.log

    # -- the loop -------------------------------------------------------------------

    def run(
        self,
        run: Run,
        removals: Iterable[Removal],
        *,
        reserve: Iterable[Removal] = (),
        mandatory: frozenset[int] = frozenset(),
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Run:
        """Work through ``removals`` then ``reserve`` and return the run with its attempts.

        A pressure removal (not in ``mandatory``, by ``id``) is skipped once
        the re-measured usage meets ``run.target``; ``should_stop`` is asked
        between versions, never during one.
        """
        engine = self.engine
        queue = [*removals, *reserve]
        reserved = {id(removal) for removal in reserve}
        deferred: set[int] = set()
        quarantine = Quarantine(engine.state_dir / QUARANTINE_FILE).load()
        engine.forget_process_table()  # the first look reads the process table afresh
        changed_quarantine = False
        for removal in queue:  # grows while iterating: a removal deferred for ENOSPC goes last
            pressure = id(removal) not in mandatory
            if (
                pressure
                and run.target is not None
                and not run.target.helps(run.usage, removal.version.kind)
            ):
                continue  # the target holds (on this version's filesystem, at least)
            if should_stop():
                break
            if run.dry_run:
                if pressure and id(removal) in reserved:
                    break  # the projection reached the target; the reserve is for real runs
                run.attempts.append(self._would_remove(run, removal))
                continue
            key = version_key(removal.version)
            if quarantine.holds(key, engine.clock()):
                run.attempts.append(
                    Attempt(removal, Step.QUARANTINED, removal.version, (policy.QUARANTINED,))
                )
                continue
            attempt = self._attempt(run, removal, retry_enospc=id(removal) not in deferred)
            if attempt.step is Step.DEFERRED:
                deferred.add(id(removal))
                queue.append(removal)
                continue
            run.attempts.append(attempt)
            changed_quarantine |= self._account(quarantine, attempt, run)
        if changed_quarantine:
            quarantine.save()
        return run

    def _account(self, quarantine: Quarantine, attempt: Attempt, run: Run) -> bool:
        """Update the quarantine after one attempt; return whether it changed."""
        key = version_key(attempt.record)
        if attempt.step is Step.FAILED:
            until = quarantine.failed(key, self.engine.clock())
            if until is not None:
                self.log.warning(
                    "version_quarantined",
                    run_id=run.run_id,
                    kind=attempt.record.kind,
                    name=attempt.record.name,
                    version=attempt.record.version,
                    until=until.isoformat(),
                    error=attempt.error,
                )
            return True
        if key in quarantine.entries:
            quarantine.succeeded(key)
            return True
        return False

    # -- one version ----------------------------------------------------------------

    def _attempt(self, run: Run, removal: Removal, *, retry_enospc: bool) -> Attempt:
        """Try one removal; whatever goes wrong is this version's alone, as a value."""
        record = removal.version
        try:
            return self._go(run, removal)
        except ArchiveError as error:
            self.log.error(
                "archive_failed",
                run_id=run.run_id,
                kind=record.kind,
                name=record.name,
                version=record.version,
                error=str(error),
            )
            return Attempt(removal, Step.FAILED, record, error=f"archive failed: {error}")
        except NoSettledLatestError as error:  # latest cannot move now: the version waits
            return self._skipped(run, removal, record, [error.reason], str(error))
        except OSError as error:
            if retry_enospc and error.errno == errno.ENOSPC:
                return Attempt(removal, Step.DEFERRED, record)
            return self._failed(run, removal, error)
        except Exception as error:
            return self._failed(run, removal, error)

    def _go(self, run: Run, removal: Removal) -> Attempt:
        """Look at one version again, archive it, look again, remove it."""
        fresh, reasons = self.last_look(removal, run.mode)
        archiver = self.engine.archiver
        if fresh is not None and not reasons and archiver and removal.reason != policy.ABANDONED:
            archiver.write(fresh, run_id=run.run_id)
            # Archiving can take minutes: a bento built, a pin made, a process
            # started meanwhile must still protect it. The archive stays.
            self.engine.forget_process_table()
            fresh, reasons = self.last_look(removal, run.mode)
        if fresh is None or reasons:
            return self._skipped(run, removal, fresh or removal.version, reasons)
        outcome, after = self._remove(run, fresh, removal.reason)
        run.store_bytes = max(0, run.store_bytes - fresh.bytes)
        run.usage = after if after is not None else self.engine.usage(run.store_bytes)
        return Attempt(removal, Step.REMOVED, fresh, outcome=outcome)

    def last_look(self, removal: Removal, mode: Mode) -> tuple[VersionRecord | None, list[str]]:
        """Read the version and the store afresh; return it and what protects it now."""
        engine = self.engine
        record = removal.version
        inodes: set[Inode] = set()
        filesystem = engine.filesystem or FileSystem()
        filesystem.refresh_mounts(engine.root)  # a bind mount made since the census
        refusal = name_directory_refusal(engine.root, record.kind, record.name, filesystem)
        if refusal is not None:
            # Swapped for a symlink to elsewhere, or a mount, since the census (an
            # archive takes minutes): what is there now is not the store's.
            return None, [policy.MOUNTED if refusal == MOUNTED_HERE else policy.GONE]
        fresh = census_version(record.kind, record.name, record.path, filesystem, inodes=inodes)
        if fresh is None:
            return None, [policy.GONE]
        if fresh.mounted:  # not even --force: a filesystem mounted inside is never touched
            return fresh, [policy.MOUNTED]
        now = engine.clock()
        references = (
            engine.current_references(now) if fresh.kind == "models" else policy.NO_REFERENCES
        )
        if mode is Mode.FORCE:
            holders = references.holders(fresh)
            if holders:
                engine.broken[fresh.path] = tuple(bento.tag for bento in holders)
            return fresh, []
        _form, target = engine.pruner.read_pointer(fresh.kind, fresh.name)
        facts = policy.Facts(
            in_use=engine.scan_in_use([fresh], reuse=True, inodes={fresh.path: inodes}).holders,
            pins=tuple(engine.pins()),
            references=references,
            pointer_target=target,
            latest_can_move=target != fresh.version or engine.latest_can_move(fresh),
        )
        reasons = policy.recheck(
            fresh, removal.reason, mode, config=engine.config, now=now, facts=facts
        )
        return fresh, reasons

    def _remove(
        self, run: Run, record: VersionRecord, reason: str
    ) -> tuple[RemovalOutcome, Usage | None]:
        """Remove one version; return what it freed and the usage measured once it had gone.

        The usage is measured once, when the version's files are gone, for its
        ``version_removed`` line and for the loop's next decision alike.
        """
        engine = self.engine
        if engine.progress is not None:
            engine.progress.removing(record)
        store_bytes = run.store_bytes
        measured: list[Usage] = []

        def announce(outcome: RemovalOutcome) -> None:
            measured.append(engine.usage(max(0, store_bytes - record.bytes)))
            engine.log_removed(record, reason, run.run_id, outcome, measured[-1])

        outcome = engine.pruner.remove(
            record,
            reason=reason,
            run_id=run.run_id,
            announce=announce,
            force=run.mode is Mode.FORCE,
        )
        return outcome, measured[-1] if measured else None

    def _skipped(
        self,
        run: Run,
        removal: Removal,
        record: VersionRecord,
        reasons: list[str],
        detail: str | None = None,
    ) -> Attempt:
        self.log.info(
            "removal_skipped",
            run_id=run.run_id,
            kind=record.kind,
            name=record.name,
            version=record.version,
            reasons=reasons,
            **({"detail": detail} if detail else {}),
        )
        return Attempt(removal, Step.SKIPPED, record, tuple(reasons), error=detail)

    def _failed(self, run: Run, removal: Removal, error: BaseException) -> Attempt:
        record = removal.version
        message = f"{type(error).__name__}: {_describe(error)}"
        self.log.error(
            "removal_failed",
            run_id=run.run_id,
            kind=record.kind,
            name=record.name,
            version=record.version,
            error=message,
            error_type=type(error).__name__,
            used_percent=round(run.usage.used_percent, 2),
        )
        return Attempt(removal, Step.FAILED, record, error=message)

    def _would_remove(self, run: Run, removal: Removal) -> Attempt:
        """Log a dry run's ``would_remove`` and project the usage after it."""
        after = run.usage.after_freeing(removal.bytes)
        self.log.info(
            "would_remove",
            **self.engine.version_fields(removal.version, removal.reason),
            run_id=run.run_id,
            used_percent_before=round(run.usage.used_percent, 2),
            used_percent_after=round(after.used_percent, 2),
        )
        run.usage = after
        return Attempt(removal, Step.WOULD_REMOVE, removal.version)


def _describe(error: BaseException) -> str:
    """Return an error's message, short: a hostile tree's path can be kilobytes long."""
    if isinstance(error, OSError):
        where = f" ({str(error.filename)[:200]})" if error.filename else ""
        return f"{error.strerror or error}{where}"
    return str(error)[:500]

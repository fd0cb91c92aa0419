"""One prune cycle: census -> plan -> execute, the same code for the CLI and the daemon.

:class:`Engine` owns the wiring (store root, state directory, lock, clock,
process scanner, usage meter), all injectable; the decisions live in
:mod:`storewarden.policy` and the deletions in :mod:`storewarden.prune`.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from storewarden import explain, inuse, policy, usage
from storewarden import forecast as forecasting
from storewarden import usage as usage_module
from storewarden.archive import Archiver, ensure_archive_dir
from storewarden.cache import FILE_NAME as CACHE_FILE
from storewarden.cache import CensusCache
from storewarden.config import Config
from storewarden.execute import QUARANTINE_FILE, Attempt, Executor, Quarantine, Run, Step
from storewarden.history import History, HistoryError, Sample
from storewarden.layout import spans
from storewarden.logs import check_log_file, get_logger
from storewarden.paths import state_directory
from storewarden.pins import PinReader, pin_reader
from storewarden.policy import Mode, Plan, Removal
from storewarden.prune import (
    STATE_MARKER,
    Operations,
    Pruner,
    Recovery,
    RemovalOutcome,
    StoreLock,
)
from storewarden.store import (
    BentoScan,
    FileSystem,
    Kind,
    Snapshot,
    VersionRecord,
    census,
    census_staging,
    census_version,
)
from storewarden.usage import Usage

if TYPE_CHECKING:
    from storewarden.restore import Restored

# At most this many model tags are listed in one bento_reference_missing event.
MAX_LISTED = 10

# How long the re-check before each removal may reuse a process table.
IN_USE_REUSE_SECONDS = 1.0


def utc_now() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(tz=UTC)


def _pins_from_state_dir() -> Sequence[str]:
    """Stand-in default of Engine.pins: replaced by a reader of ``<state>/pins.json``."""
    return ()


class Progress(Protocol):
    """Told about a prune's or a delete's removals as they happen (the terminal's progress bar)."""

    def planned(self, versions: int, total_bytes: int) -> None:
        """The removals about to start: how many versions and bytes are planned."""

    def removing(self, record: VersionRecord) -> None:
        """One version is about to be archived (if set) and removed."""

    def removed(self, record: VersionRecord) -> None:
        """One version left the store."""


class UnknownTagError(Exception):
    """``delete`` was given tags the store does not hold."""


class PreflightError(Exception):
    """A start or reload would fail: a path the config names cannot be used."""


def _check_writable(what: str, path: Path, *, parents: bool) -> None:
    """Raise PreflightError unless ``path`` (a file) can be written: it, or its directory.

    ``parents``: missing directories above it are created when it is written.
    """
    if path.exists():
        if path.is_dir() or not os.access(path, os.W_OK):
            raise PreflightError(f"{what} {path} is not a writable file")
        return
    parent = path.parent
    while parents and not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PreflightError(f"{what} {path}: cannot create it, {parent} is not writable")


class AmbiguousTagError(Exception):
    """``delete`` was given a tag that names a model and a bento, and no ``--kind``."""


class RefusedError(Exception):
    """``delete`` refused a version that is pinned, in use or being written."""


@dataclass(frozen=True)
class PlanView:
    """A plan with what it was made from."""

    plan: Plan
    snapshot: Snapshot
    in_use: inuse.InUseScan
    now: datetime


@dataclass(frozen=True)
class WhyView:
    """One version of the store, explained, with the plan it was explained against."""

    record: VersionRecord
    explanation: explain.Explanation
    view: PlanView


@dataclass(frozen=True)
class CycleResult:
    """What one prune cycle (or delete) did."""

    run_id: str
    plan: Plan
    dry_run: bool
    removed: tuple[RemovalOutcome, ...] = ()
    would_remove: tuple[Removal, ...] = ()
    skipped: tuple[tuple[VersionRecord, tuple[str, ...]], ...] = ()
    failed: tuple[tuple[VersionRecord, str], ...] = ()
    usage_after: Usage | None = None
    seconds: float = 0.0
    quarantined: tuple[VersionRecord, ...] = ()
    attempts: tuple[Attempt, ...] = ()

    @classmethod
    def of(cls, run: Run, plan: Plan, seconds: float) -> CycleResult:
        """Return the result of a run of the removal loop over ``plan``."""

        def each(step: Step) -> list[Attempt]:
            return [attempt for attempt in run.attempts if attempt.step is step]

        return cls(
            run.run_id,
            plan,
            run.dry_run,
            removed=tuple(
                attempt.outcome for attempt in each(Step.REMOVED) if attempt.outcome is not None
            ),
            would_remove=tuple(attempt.removal for attempt in each(Step.WOULD_REMOVE)),
            skipped=tuple((attempt.record, attempt.reasons) for attempt in each(Step.SKIPPED)),
            failed=tuple((attempt.record, attempt.error or "") for attempt in each(Step.FAILED)),
            usage_after=run.usage,
            seconds=seconds,
            quarantined=tuple(attempt.record for attempt in each(Step.QUARANTINED)),
            attempts=tuple(run.attempts),
        )

    @property
    def bytes_freed(self) -> int:
        """Return the bytes the removals freed."""
        return sum(outcome.bytes_freed for outcome in self.removed)

    @property
    def target_reached(self) -> bool:
        """Return whether the usage after the cycle meets the target (True when no pressure)."""
        if not self.plan.triggers:
            return True
        after = self.usage_after or self.plan.projected
        return self.plan.target.holds(after)

    @property
    def shortfall_bytes(self) -> int:
        """Return the bytes still to free to reach the target."""
        if not self.plan.triggers:
            return 0
        return policy.bytes_needed(self.usage_after or self.plan.projected, self.plan.target)


@dataclass
class Engine:
    """The warden for one store. Every collaborator is injectable for tests."""

    config: Config
    operations: Operations | None = None
    filesystem: FileSystem | None = None
    clock: Callable[[], datetime] = utc_now
    processes: Callable[[], Iterable[inuse.ProcessView]] = inuse.inspect_processes
    measure: Callable[[Path, int], Usage] = usage.measure
    pins: Callable[[], Sequence[str]] = _pins_from_state_dir
    progress: Progress | None = None
    # status, plan, why, check: never write into the store, not even the census cache.
    read_only: bool = False
    root: Path = field(init=False)
    state_dir: Path = field(init=False)
    pruner: Pruner = field(init=False)
    lock: StoreLock = field(init=False)
    archiver: Archiver | None = field(init=False)
    _reported: set[tuple[str, ...]] = field(default_factory=set, init=False)
    _table: inuse.ProcessTable | None = field(default=None, init=False)
    _table_at: float = field(default=0.0, init=False)
    _cache: CensusCache | None = field(default=None, init=False)
    _bentos: BentoScan | None = field(default=None, init=False)
    _snapshot: Snapshot | None = field(default=None, init=False)
    # The models of ``_snapshot`` as a snapshot of their own (see current_references).
    _models: tuple[Snapshot | None, Snapshot] | None = field(default=None, init=False)
    # Per removal of a cycle: the bentos that --force left without a model they need.
    broken: dict[Path, tuple[str, ...]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        # A store root that is a symlink (~/bentoml -> /data/bentoml) is resolved
        # once; everything the warden touches must then lie under the real root.
        self.root = Path(os.path.realpath(self.config.store))
        self.state_dir = state_directory(self.root, self.config.state_dir)
        self.pruner = Pruner(
            self.root,
            self.state_dir,
            kinds=self.config.kinds,
            operations=self.operations,
            filesystem=self.filesystem,
            settle=lambda kind, name: policy.effective(self.config, kind, name).settle,
            clock=self.clock,
        )
        self.lock = StoreLock(self.state_dir / "lock")
        self.history = History(self.state_dir)
        self.log = get_logger()
        if self.pins is _pins_from_state_dir:
            # Read on every call: `storewarden pin` holds from the daemon's next check.
            self.pins = pin_reader(self.state_dir, self.clock)
        archive = self.config.archive
        self.archiver = (
            Archiver(
                archive.dir,
                store=self.root,
                state_dir=self.state_dir,
                max_size=archive.max_size,
                archive_format=archive.format,
            )
            if archive.dir is not None
            else None
        )

    # -- before anything runs --------------------------------------------------------

    def preflight(self, *, create: bool = True, warn: bool = False) -> list[str]:
        """Run every check a start or a reload makes; return warnings; raise what would fail.

        ``storewarden check`` calls it with ``create`` false (nothing is
        written), the daemon at start and before it takes a reloaded config,
        with ``create`` true. Raise UnsafeStateDirError, UnsafeArchiveDirError,
        LogFileError or PreflightError with one clear line. A store that does not exist
        yet is no error (the daemon waits for it); its checks are then made
        once it appears. With ``warn``, also census the store and return a
        warning for each pin, label pair or rule that matches nothing.
        """
        if self.archiver is not None:
            ensure_archive_dir(self.archiver.directory, create=create)
        if self.config.log.file is not None:
            check_log_file(self.config.log.file, store=self.root, state_dir=self.state_dir)
            _check_writable("log.file", self.config.log.file, parents=True)
        warnings = []
        if self.config.metrics.textfile is not None:
            # Not fatal: the daemon logs it once and writes the file once it can.
            try:
                _check_writable("metrics.textfile", self.config.metrics.textfile, parents=False)
            except PreflightError as error:
                warnings.append(f"{error}; until it is, no textfile is written")
        if not self.root.is_dir():
            return warnings
        self.pruner.prepare(create=create)
        for place in self.pruner.places[1:]:
            kinds = ", ".join(f"{kind}/" for kind in place.kinds)
            warnings.append(
                f"{kinds} is a mount of its own: it is measured on its own, and its versions"
                " are removed in place (descriptor last) since nothing can be renamed out of"
                " a mount; a version latest names there goes only as its name's last"
            )
        return warnings + (self._unmatched_rules() if warn else [])

    def _unmatched_rules(self) -> list[str]:
        """Return a warning for each pin, label pair or rule that matches nothing in the store."""
        try:
            snapshot = self.census()
        except OSError:
            return []
        records = snapshot.versions
        warnings = [
            f"protect.pins: {pin!r} matches no version in the store now"
            for pin in self.config.protect.pins
            if not any(policy.is_pinned(record, (pin,)) for record in records)
        ]
        for key, pattern in self.config.protect.labels.items():
            if not any(policy.has_protected_label(record, {key: pattern}) for record in records):
                warnings.append(
                    f"protect.labels: {key}: {pattern!r} matches no version in the store now"
                )
        names = {(record.kind, record.name) for record in records}
        for position, rule in enumerate(self.config.rules):
            if not any(rule.matches(kind, name) for kind, name in names):
                warnings.append(
                    f"rules[{position}]: match {rule.match!r} matches no name in the store now"
                )
        return warnings

    # -- reading ------------------------------------------------------------------

    def census(self) -> Snapshot:
        """Return a fresh census of the store; raise FileNotFoundError if it is missing.

        Records of unchanged versions come from the census cache in the state
        directory; the cache is written back only where that directory already
        exists (a read-only command never creates it, nor its owner).
        """
        # Only by a command that writes anyway, and only into the warden's own directory.
        saving = not self.read_only and (self.state_dir / STATE_MARKER).is_file()
        cache = CensusCache(self.state_dir / CACHE_FILE, self.root, saving=saving)
        cache.load()
        snapshot = census(self.root, self.config.kinds, self.filesystem, cache)
        cache.save()
        # Kept for the re-read of bentos (current_references) only: the rows of every
        # model version need not outlive the census.
        self._cache = cache.only("bentos")
        for problem in snapshot.problems:
            self._report_once(
                "store_problem",
                (str(problem.path), problem.reason),
                path=str(problem.path),
                problem=problem.reason,
            )
        return snapshot

    def _report_once(self, event: str, key: tuple[str, ...], **fields: object) -> None:
        """Log a warning about a lasting condition once in this process's life."""
        if (event, *key) in self._reported:
            return
        self._reported.add((event, *key))
        self.log.warning(event, **fields)

    def _report_references(self, snapshot: Snapshot, plan: Plan) -> None:
        """Log each bento.yaml entry that names no model, and each model a bento lacks, once."""
        if not self.config.protect.bento_references:
            return
        for bento in snapshot.dependents():
            for problem in bento.reference_problems:
                self._report_once(
                    "bento_reference_invalid",
                    (str(bento.path), problem),
                    bento=bento.tag,
                    path=str(bento.path),
                    problem=problem,
                )
        missing: dict[Path, tuple[VersionRecord, list[str]]] = {}
        for bento, model in plan.references.missing:
            missing.setdefault(bento.path, (bento, []))[1].append(model)
        for path, (bento, models) in missing.items():
            self._report_once(
                "bento_reference_missing",
                (str(path), ",".join(models[:MAX_LISTED]), str(len(models))),
                bento=bento.tag,
                path=str(path),
                models=models[:MAX_LISTED],
                missing=len(models),
            )

    def usage(self, store_bytes: int) -> Usage:
        """Return the usage of the store's filesystems with ``store_bytes`` as the store's size.

        A store whose ``models/`` or ``bentos/`` is a filesystem of its own is
        measured on each (see :class:`storewarden.usage.Usage`).
        """
        layout = spans(self.root, self.config.kinds)
        if len(layout) < 2:
            return self.measure(self.root, store_bytes)
        return usage_module.measure(self.root, store_bytes, layout)

    def scan_in_use(
        self,
        records: Iterable[VersionRecord],
        *,
        reuse: bool = False,
        inodes: Mapping[Path, set[inuse.Inode]] | None = None,
    ) -> inuse.InUseScan:
        """Return which of ``records`` running processes hold (nothing when in_use is off).

        Reading every process's fds and maps costs ~30 ms. With ``reuse`` (the
        re-check before each removal of a cycle) a process table read less than
        IN_USE_REUSE_SECONDS ago is used again, so a prune of many small
        versions is not dominated by rescans; the window this leaves is of the
        same order as the scan itself. ``inodes`` (the files of versions
        walked just now) lets a process that reached them by another path (a
        bind mount, a container) be seen.
        """
        if not self.config.protect.in_use:
            return inuse.InUseScan()
        now = time.monotonic()
        if not reuse or self._table is None or now - self._table_at > IN_USE_REUSE_SECONDS:
            self._table = inuse.index_processes(self.root, self.processes())
            self._table_at = time.monotonic()
        return inuse.holders_in(self._table, records, inodes)

    def make_plan(self, snapshot: Snapshot | None = None) -> PlanView:
        """Return the plan for the store now (scanning processes only if something would go)."""
        snapshot = snapshot if snapshot is not None else self.census()
        now = self.clock()
        current = self.usage(snapshot.store_bytes)
        pins = self.pins()
        draft = policy.plan(snapshot, current, self.config, now, pins=pins)
        scan = inuse.InUseScan()
        if draft.removals or draft.reserve:
            scan = self.scan_in_use(snapshot.versions)
            if scan.uninspectable or scan.holders:
                # info when something is held, debug otherwise: as root a kernel or
                # zombie process is always uninspectable and would log every plan.
                (self.log.info if scan.holders else self.log.debug)(
                    "in_use_scan",
                    processes=scan.processes,
                    uninspectable=scan.uninspectable,
                    versions_in_use=len(scan.holders),
                )
        # Pure: with nothing in use the final plan is the draft. Planning it again would
        # cost a second set of Kept records alive at once (MBs at 50,000 versions).
        final = (
            policy.plan(snapshot, current, self.config, now, in_use=scan.holders, pins=pins)
            if scan.holders
            else draft
        )
        self._snapshot = snapshot
        self._report_references(snapshot, final)
        return PlanView(final, snapshot, scan, now)

    def blocked_by_unknown_references(self, view: PlanView) -> list[VersionRecord]:
        """Return the model versions the plan would remove but for bentos being written.

        Planning again without those bentos is cheap, and happens only while
        one is being written.
        """
        plan = view.plan
        if not plan.references.unknown:
            return []
        unblocked = policy.plan(
            view.snapshot,
            plan.usage,
            self.config,
            view.now,
            in_use=view.in_use.holders,
            pins=self.pins(),
            references=replace(plan.references, unknown=()),
        )
        removed = {removal.version.path for removal in plan.removals}
        return [
            removal.version
            for removal in unblocked.removals
            if removal.version.kind == "models" and removal.version.path not in removed
        ]

    def current_references(self, now: datetime) -> policy.References:
        """Return which bentos need which models as the store is now (the re-check's view).

        Bentos are listed afresh; those unchanged since they were last read
        are not read again.
        """
        if not self.config.protect.bento_references:
            return policy.NO_REFERENCES
        if self._bentos is None:
            self._bentos = BentoScan(self.root, self.filesystem, self._cache)
        longest_settle = max(
            [self.config.protect.settle]
            + [rule.settle for rule in self.config.rules if rule.settle is not None]
        )
        changed_since = now - timedelta(seconds=longest_settle)
        bentos = self._bentos.read(changed_since)
        if self._models is None or self._models[0] is not self._snapshot:
            # The plan's models, indexed once per plan rather than once per removal.
            pointers = self._snapshot.pointers if self._snapshot is not None else {}
            models = (
                tuple(record for record in self._snapshot.versions if record.kind == "models")
                if self._snapshot is not None
                else ()
            )
            self._models = (self._snapshot, Snapshot(self.root, models, pointers))
        now_view = self._models[1].with_dependents(
            bentos, census_staging(self.root, self.filesystem)
        )
        return policy.references_of(now_view, self.config, now)

    # -- writing ------------------------------------------------------------------

    def recover(self) -> Recovery:
        """Finish interrupted removals, empty the trash, repair pointers (caller holds the lock)."""
        return self.pruner.recover(lambda: self.usage(0).used_percent, self.census)

    def record_history(
        self,
        records: Iterable[VersionRecord],
        current: Usage,
        *,
        protected: int | None,
        flows: tuple[int, int] | None = None,
    ) -> Sample | None:
        """Append one usage sample to the history (never for a read-only command).

        Only into the warden's own marked state directory: a dry run that
        never made one does not make one for this.
        """
        if self.read_only or not (self.state_dir / STATE_MARKER).is_file():
            return None
        return self.history.record(self.clock(), current, records, protected=protected, flows=flows)

    def forecast(self, plan: Plan) -> tuple[forecasting.Forecast | None, str | None]:
        """Return the fill forecast from the history on disk, or None and what is wrong with it.

        Read-only: an unreadable history is reported, not set aside (the
        daemon or the next prune does that).
        """
        try:
            samples = self.history.read()
        except (HistoryError, OSError) as error:
            return None, str(error)
        protected = sum(kept.version.bytes for kept in plan.kept)
        found = forecasting.forecast(samples, plan.usage, self.config, protected_bytes=protected)
        return found, None

    def latest_can_move(self, record: VersionRecord) -> bool:
        """Return whether ``latest``, naming ``record``, has a settled version to move to.

        When the name has no other version, the pointer goes with it. On a
        kind directory that is a mount of its own, the pointer cannot be
        rewritten atomically, so it can only go with the name's last version.
        """
        try:
            if self.pruner.in_place(record.path):
                return not self.pruner.others_remain(record.kind, record.name, record.version)
        except OSError:
            return False
        if self.pruner.newest_settled(record.kind, record.name, excluding=record.version):
            return True
        return not self.pruner.others_remain(record.kind, record.name, record.version)

    @property
    def pins_unreadable(self) -> bool:
        """Return whether the last plan could not read the pins file (and pinned everything)."""
        return isinstance(self.pins, PinReader) and self.pins.unreadable

    def quarantined(self) -> dict[str, datetime]:
        """Return the versions set aside after failing removals, with when they are tried again."""
        return Quarantine(self.state_dir / QUARANTINE_FILE).load().current(self.clock())

    def forget_process_table(self) -> None:
        """Make the next in-use scan read the process table afresh."""
        self._table = None

    def version_fields(self, record: VersionRecord, reason: str) -> dict[str, object]:
        """Return the fields every removal event carries about its version."""
        return {
            "kind": record.kind,
            "name": record.name,
            "version": record.version,
            "path": str(record.path),
            "bytes": record.bytes,
            "creation_time": record.creation_time.isoformat(),
            "reason": reason,
        }

    def _log_blocked(self, view: PlanView, run_id: str) -> None:
        """Log ``references_unknown`` for each bento being written that holds removals back."""
        blocked = self.blocked_by_unknown_references(view)
        if not blocked:
            return
        for bento in view.plan.references.unknown:
            settle = policy.effective(self.config, "bentos", bento.name).settle
            waited = (view.now - bento.last_change).total_seconds()
            self.log.warning(
                "references_unknown",
                run_id=run_id,
                bento=bento.tag,
                path=str(bento.path),
                reason=bento.problem or "being written",
                blocked_versions=len(blocked),
                blocked_bytes=sum(record.bytes for record in blocked),
                seconds_left=round(max(0.0, settle - waited), 1) if bento.readable else None,
            )

    def cycle(
        self,
        *,
        dry_run: bool | None = None,
        snapshot: Snapshot | None = None,
        recover: bool = False,
        lock_wait: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> CycleResult:
        """Run one prune cycle under the store lock and return what it did.

        ``recover`` first finishes interrupted work (a command's start);
        ``should_stop`` is asked between removals (a stopping daemon never
        stops half-way through one). Raise StoreBusyError if the lock stays
        taken for ``lock_wait`` seconds.
        """
        dry_run = self.config.dry_run if dry_run is None else dry_run
        started = time.monotonic()
        run_id = uuid.uuid4().hex[:12]
        try:
            if dry_run:
                view = self.make_plan(snapshot)
                return self._execute(
                    view, run_id, dry_run=True, started=started, should_stop=should_stop
                )
            self.pruner.prepare()
            with self.lock.held(lock_wait):
                if recover:
                    # Recovery's own census serves the plan unless recovery changed the store.
                    snapshot = self.recover().snapshot
                view = self.make_plan(snapshot)
                return self._execute(
                    view, run_id, dry_run=False, started=started, should_stop=should_stop
                )
        finally:
            # The plan's snapshot serves this cycle's re-checks only. Kept until the next
            # plan, it held every version again, by name (0.8 MiB at 50,000 versions).
            self._snapshot = None

    def _execute(
        self,
        view: PlanView,
        run_id: str,
        *,
        dry_run: bool,
        started: float,
        should_stop: Callable[[], bool],
    ) -> CycleResult:
        plan = view.plan
        self._log_blocked(view, run_id)
        if not plan.removals and not plan.triggers:
            return CycleResult(run_id, plan, dry_run, usage_after=plan.usage)
        self.log.info(
            "prune_started",
            run_id=run_id,
            triggers=list(plan.triggers),
            usage=plan.usage.as_dict(),
            target=plan.target.as_dict(),
            dry_run=dry_run,
            planned=len(plan.removals),
            planned_bytes=plan.bytes_to_free,
        )
        if self.progress is not None and not dry_run:
            self.progress.planned(len(plan.removals), plan.bytes_to_free)
        mandatory = frozenset(
            id(removal) for removal in plan.removals if removal.reason not in plan.triggers
        )
        run = Executor(self).run(
            Run(run_id, Mode.PRUNE, plan.target, plan.usage, view.snapshot.store_bytes, dry_run),
            plan.removals,
            reserve=plan.reserve,
            mandatory=mandatory,
            should_stop=should_stop,
        )
        result = CycleResult.of(run, plan, time.monotonic() - started)
        self.log.info(
            "prune_finished",
            run_id=run_id,
            removed=len(result.removed) if not dry_run else len(result.would_remove),
            bytes_freed=(
                result.bytes_freed if not dry_run else sum(r.bytes for r in result.would_remove)
            ),
            used_percent_after=round(run.usage.used_percent, 2),
            shortfall_bytes=result.shortfall_bytes,
            target_reached=result.target_reached,
            seconds=round(result.seconds, 3),
            dry_run=dry_run,
            skipped=len(result.skipped),
            failed=len(result.failed),
            quarantined=len(result.quarantined),
        )
        return result

    def log_removed(
        self,
        record: VersionRecord,
        reason: str,
        run_id: str,
        outcome: RemovalOutcome,
        after: Usage,
    ) -> None:
        freed_percent_before = after.used + outcome.bytes_freed
        capacity = after.used + after.free
        before_percent = 100.0 * freed_percent_before / capacity if capacity else 0.0
        broken = self.broken.pop(record.path, ())
        extra: dict[str, object] = {"broken_bentos": list(broken)} if broken else {}
        self.log.info(
            "version_removed",
            **self.version_fields(record, reason),
            run_id=run_id,
            used_percent_before=round(before_percent, 2),
            used_percent_after=round(after.used_percent, 2),
            **extra,
        )
        if broken:
            self.log.warning(
                "bentos_broken",
                run_id=run_id,
                model=record.tag,
                bentos=list(broken),
                message=(
                    f"--force removed {record.tag}, which {', '.join(broken)} need:"
                    " they cannot be served or containerized until it is back"
                ),
            )
        if self.progress is not None:
            self.progress.removed(record)

    # -- explicit delete ------------------------------------------------------------

    def resolve(self, snapshot: Snapshot, tag: str, kind: Kind | None) -> list[VersionRecord]:
        """Return the versions ``tag`` (``name:version`` or ``name:latest``) names in the store.

        Tags are lower-cased first, as BentoML reads them.
        """
        name, _, version = tag.lower().partition(":")
        kinds = (kind,) if kind is not None else self.config.kinds
        found = []
        for each in kinds:
            wanted = version
            if version == "latest":
                wanted = snapshot.pointer_target(each, name) or ""
            record = snapshot.find(each, name, wanted)
            if record is not None:
                found.append(record)
        return found

    def why(self, tag: str, kind: Kind | None = None) -> WhyView | None:
        """Explain the version ``tag`` names in the store now; None if it names none.

        Read-only and lock-free, as ``status`` and ``plan`` are: the census, the
        pins, a process scan and the planner. Raise AmbiguousTagError if the
        tag names a model and a bento and ``kind`` is not given.
        """
        snapshot = self.census()
        matches = self.resolve(snapshot, tag, kind)
        if len(matches) > 1:
            raise AmbiguousTagError(
                f"{tag} names "
                + " and ".join(f"{record.kind}/{record.tag}" for record in matches)
                + ": give --kind models or --kind bentos"
            )
        if not matches:
            return None
        record = matches[0]
        now = self.clock()
        current = self.usage(snapshot.store_bytes)
        pins = self.pins()
        scan = self.scan_in_use(snapshot.versions)
        plan = policy.plan(snapshot, current, self.config, now, in_use=scan.holders, pins=pins)
        found = explain.explain(
            record,
            snapshot,
            current,
            self.config,
            now,
            in_use=scan.holders,
            pins=pins,
            plan=plan,
        )
        return WhyView(record, found, PlanView(plan, snapshot, scan, now))

    def delete(
        self,
        tags: Sequence[str],
        *,
        kind: Kind | None = None,
        force: bool = False,
        dry_run: bool = False,
        lock_wait: float = 0.0,
    ) -> CycleResult:
        """Delete the versions named by ``tags``, pointer handled as in a prune.

        Raise UnknownTagError (nothing deleted) if any tag names nothing, and
        RefusedError (nothing deleted) if any is pinned, in use or still being
        written and ``force`` is not set.
        """
        started = time.monotonic()
        run_id = uuid.uuid4().hex[:12]
        if not dry_run:
            self.pruner.prepare()
        # A dry run, like a prune's, reads without the lock: it writes nothing, not even that.
        with contextlib.nullcontext() if dry_run else self.lock.held(lock_wait):
            if not dry_run:
                self.recover()
            snapshot = self.census()
            self._snapshot = snapshot
            records = self._resolve_all(snapshot, tags, kind)
            records = list({record.path: record for record in records}.values())
            # Bentos first: a model a bento of this same delete needs may go after it.
            records.sort(key=lambda record: record.kind != "bentos")
            current = self.usage(snapshot.store_bytes)
            if not force:
                self._refuse_protected(snapshot, records)
            removals = tuple(Removal(record, policy.EXPLICIT) for record in records)
            plan = Plan(
                (),
                current,
                policy.target_of(self.config),
                removals,
                (),
                (),
                current.after_freeing(sum(r.bytes for r in removals)),
                0,
            )
            if self.progress is not None and not dry_run:
                self.progress.planned(len(removals), plan.bytes_to_free)
            run = Executor(self).run(
                Run(
                    run_id,
                    Mode.FORCE if force else Mode.EXPLICIT,
                    None,
                    current,
                    snapshot.store_bytes,
                    dry_run,
                ),
                removals,
                mandatory=frozenset(id(removal) for removal in removals),
            )
            return CycleResult.of(run, plan, time.monotonic() - started)

    def restore(self, archive: Path, *, lock_wait: float = 0.0) -> Restored:
        """Put the version an archive holds back into the store, under the lock, after recovery.

        Raise RestoreError if it cannot be (see :func:`storewarden.restore.restore`).
        """
        from storewarden.restore import restore  # noqa: PLC0415 - tarfile only when restoring

        self.pruner.prepare()
        with self.lock.held(lock_wait):
            self.recover()
            return restore(archive, self.pruner, self.config.kinds)

    def _resolve_all(
        self, snapshot: Snapshot, tags: Sequence[str], kind: Kind | None
    ) -> list[VersionRecord]:
        """Return the versions ``tags`` name; raise if any names nothing, or two kinds."""
        records: list[VersionRecord] = []
        unknown = []
        ambiguous = []
        for tag in tags:
            matches = self.resolve(snapshot, tag, kind)
            if not matches or ":" not in tag:
                unknown.append(tag)
            if len({record.kind for record in matches}) > 1:
                ambiguous.append(
                    f"{tag} names "
                    + " and ".join(f"{record.kind}/{record.tag}" for record in matches)
                )
            records.extend(matches)
        if unknown:
            raise UnknownTagError(
                "no such version in the store: "
                + ", ".join(unknown)
                + " (give name:version; `storewarden status` lists them)"
            )
        if ambiguous:
            # BentoML's own delete works on one kind at a time; so does this one.
            raise AmbiguousTagError(
                "; ".join(ambiguous) + ": give --kind models or --kind bentos (nothing was deleted)"
            )
        return records

    def _refuse_protected(self, snapshot: Snapshot, records: Sequence[VersionRecord]) -> None:
        """Raise RefusedError naming every version of ``records`` a delete must not touch.

        Bentos being deleted together with a model no longer count as needing it.
        """
        deleted = {record.path for record in records}
        now = self.clock()
        references = policy.references_of(
            replace(
                snapshot,
                versions=tuple(
                    record for record in snapshot.versions if record.path not in deleted
                ),
                others=tuple(record for record in snapshot.others if record.path not in deleted),
            ),
            self.config,
            now,
        )
        inodes: dict[Path, set[inuse.Inode]] = {}
        for record in records:
            census_version(
                record.kind,
                record.name,
                record.path,
                self.filesystem,
                inodes=inodes.setdefault(record.path, set()),
            )
        scan = self.scan_in_use(records, inodes=inodes)
        refusals = []
        for record in records:
            blockers = policy.explicit_blockers(
                record,
                config=self.config,
                now=now,
                in_use=scan.holders,
                pins=self.pins(),
                references=references,
            )
            _form, target = self.pruner.read_pointer(record.kind, record.name)
            if target == record.version and not self.latest_can_move(record):
                blockers.append(policy.NO_SETTLED_LATEST)
            if not blockers:
                continue
            details = []
            if record.path in scan.holders:
                details.append(scan.holders[record.path])
            holders = references.holders(record)
            if holders:
                details.append(
                    "used by the following bentos: " + ", ".join(bento.tag for bento in holders)
                )
            if policy.NO_SETTLED_LATEST in blockers:
                details.append(
                    "latest names it, and every other version is still being written:"
                    " latest would have nothing whole to name"
                )
            if policy.REFERENCES_UNKNOWN in blockers:
                details.append(
                    "a bento being written may need it: "
                    + ", ".join(str(bento.path) for bento in references.unknown)
                )
            refusals.append(
                f"{record.kind}/{record.tag}: {', '.join(blockers)}"
                + (f" ({'; '.join(details)})" if details else "")
            )
        if refusals:
            raise RefusedError(
                "refusing to delete (use --force to override): " + "; ".join(refusals)
            )

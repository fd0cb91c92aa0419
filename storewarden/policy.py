"""The pruning policy: pure, no I/O, no clock, no logging.

:func:`plan` turns a snapshot, the filesystem usage, the config and ``now``
into an ordered :class:`Plan`. Every removal carries its reason and every
protected version carries why it stays, so ``storewarden plan`` can explain
itself and tests can hold the planner to its invariants.
"""

from __future__ import annotations

import fnmatch
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from storewarden.config import Config
from storewarden.store import Snapshot, VersionRecord
from storewarden.usage import Usage

# What an explicit delete does not override (``--force`` does).
EXPLICIT_BLOCKERS = ("pinned", "in_use", "settle", "referenced", "references_unknown")

# Reasons a version is removed.
ABANDONED = "abandoned"
MAX_AGE = "max_age"
MAX_VERSIONS = "max_versions"
EXPLICIT = "explicit"
TRIGGERS = ("high_percent", "min_free", "max_store_size")

# Reasons a version stays.
LATEST = "latest"
KEEP_LAST = "keep_last"
MIN_AGE = "min_age"
SETTLE = "settle"
INCOMPLETE = "incomplete"
UNREADABLE = "unreadable"
PINNED = "pinned"
LABEL = "label"
IN_USE = "in_use"
REFERENCED = "referenced"
REFERENCES_UNKNOWN = "references_unknown"
# The version latest names, with no other complete and settled version for latest to
# move to (only versions still being written): it waits for one.
NO_SETTLED_LATEST = "no_settled_latest"
# The same, on a kind directory that is a mount of its own: latest cannot be rewritten
# atomically there, so the version it names goes only as its name's last.
LATEST_ON_OWN_MOUNT = "latest_on_own_mount"
# latest exists but cannot be read (another user's 0600 file): any version of its
# name may be the one it names, so none goes.
LATEST_UNREADABLE = "latest_unreadable"
# Every reason a plan keeps a version, in the order the README's table lists them.
PROTECTIONS = (
    LATEST,
    LATEST_UNREADABLE,
    KEEP_LAST,
    MIN_AGE,
    SETTLE,
    INCOMPLETE,
    UNREADABLE,
    PINNED,
    LABEL,
    IN_USE,
    REFERENCED,
    REFERENCES_UNKNOWN,
)

# A bento.yaml that changed this recently may be mid-copy: even one that parses
# may be cut short, so what it lists is not yet all it needs.
REFERENCE_QUIET_SECONDS = 2.0


T = TypeVar("T")


def _pick(rule_value: T | None, default: T) -> T:
    return default if rule_value is None else rule_value


@dataclass(frozen=True, slots=True)
class Effective:
    """The protect and retention settings that apply to one name after rules."""

    keep_latest: bool
    keep_last: int
    min_age: float
    settle: float
    abandoned_after: float
    max_versions: int | None
    max_age: float | None


def effective(config: Config, kind: str, name: str) -> Effective:
    """Return the settings for ``kind``/``name``: the first matching rule over the defaults."""
    protect, retention = config.protect, config.retention
    rule = config.rule_for(kind, name)

    if rule is None:
        return Effective(
            protect.keep_latest,
            protect.keep_last,
            protect.min_age,
            protect.settle,
            protect.abandoned_after,
            retention.max_versions,
            retention.max_age,
        )
    return Effective(
        keep_latest=_pick(rule.keep_latest, protect.keep_latest),
        keep_last=_pick(rule.keep_last, protect.keep_last),
        min_age=_pick(rule.min_age, protect.min_age),
        settle=_pick(rule.settle, protect.settle),
        abandoned_after=_pick(rule.abandoned_after, protect.abandoned_after),
        max_versions=rule.max_versions if rule.max_versions is not None else retention.max_versions,
        max_age=rule.max_age if rule.max_age is not None else retention.max_age,
    )


@dataclass(frozen=True, slots=True)
class Removal:
    """A version the plan removes, and why."""

    version: VersionRecord
    reason: str

    @property
    def bytes(self) -> int:
        """Return the bytes the removal should free."""
        return self.version.bytes


@dataclass(frozen=True, slots=True)
class Kept:
    """A version the plan keeps although it might have been a candidate, and why.

    ``referenced_by`` names the bentos that need it (``referenced``).
    """

    version: VersionRecord
    reasons: tuple[str, ...]
    referenced_by: tuple[str, ...] = ()


ModelKey = tuple[str, str]


@dataclass(frozen=True)
class References:
    """Which bentos need which model versions, as one plan or re-check sees them.

    ``needed_by`` maps a model's ``(name, version)`` to the bentos that need
    it; ``needs`` maps a bento's path to the model keys it needs (``latest``
    resolved). ``unknown`` are the bentos whose needs cannot be known (being
    written within ``settle``, or a ``bento.yaml`` that cannot be read):
    while any exists, no model version may go. ``missing`` pairs a bento with
    a model tag it needs that the store lacks.
    """

    needed_by: Mapping[ModelKey, tuple[VersionRecord, ...]] = field(default_factory=dict)
    needs: Mapping[Path, tuple[ModelKey, ...]] = field(default_factory=dict)
    unknown: tuple[VersionRecord, ...] = ()
    missing: tuple[tuple[VersionRecord, str], ...] = ()

    def holders(self, record: VersionRecord) -> tuple[VersionRecord, ...]:
        """Return the bentos that need ``record`` (none for a bento)."""
        if record.kind != "models":
            return ()
        return self.needed_by.get((record.name, record.version), ())

    def protections(self, record: VersionRecord) -> list[str]:
        """Return the reference protections of ``record``: referenced, references_unknown."""
        if record.kind != "models":
            return []
        reasons = []
        if self.holders(record):
            reasons.append(REFERENCED)
        if self.unknown:
            reasons.append(REFERENCES_UNKNOWN)
        return reasons


NO_REFERENCES = References()


def _importing(bento: VersionRecord, snapshot: Snapshot, config: Config, now: datetime) -> bool:
    """Return whether a bento without bento.yaml may be an import still copying its models.

    ``bentoml import`` makes the bento's (empty) directory first, then copies
    the models it carries into the store, and only then the bento itself:
    while a model that came after the bento's directory is still being
    written, the bento may need any model. (Bounded by ``abandoned_after``.)
    """
    since = bento.arrived or bento.last_change
    return any(
        record.kind == "models"
        and (record.arrived or record.last_change) >= since
        and _age(now, record.last_change) < effective(config, "models", record.name).settle
        for record in snapshot.versions
    )


def references_of(snapshot: Snapshot, config: Config, now: datetime) -> References:
    """Return which bentos of the snapshot need which models, at ``now``.

    A bento's needs are unknown while it has no ``bento.yaml`` that parses
    (or one changed in the last REFERENCE_QUIET_SECONDS, which may be cut
    short mid-copy). Within its ``settle`` such a bento may need any model; after
    it, it is a crashed build that BentoML cannot load, and needs nothing.
    A bento whose ``bento.yaml`` cannot be read (EACCES, EIO) stays unknown
    for as long as that lasts: failing safe, as for unreadable pins. A
    directory ``bentoml build`` left under ``tmp/`` counts only while settling.
    """
    if not config.protect.bento_references:
        return NO_REFERENCES
    staging = {record.path for record in snapshot.staging}
    needed_by: dict[ModelKey, list[VersionRecord]] = {}
    needs: dict[Path, tuple[ModelKey, ...]] = {}
    unknown: list[VersionRecord] = []
    missing: list[tuple[VersionRecord, str]] = []
    models_managed = "models" in config.kinds
    for bento in sorted(snapshot.dependents(), key=lambda record: record.path):
        quiet = _age(now, bento.last_change)
        settings = effective(config, "bentos", bento.name)
        settling = quiet < settings.settle
        if bento.references is None or (settling and quiet < REFERENCE_QUIET_SECONDS):
            if (
                settling
                or (bento.references is None and not bento.readable)
                or (quiet < settings.abandoned_after and _importing(bento, snapshot, config, now))
            ):
                unknown.append(bento)
            continue
        if bento.path in staging and not settling:
            continue  # left behind by a build that crashed: nothing will use it
        keys = []
        for tag in bento.references:
            name, _, version = tag.partition(":")
            if version == "latest":
                version = snapshot.pointer_target("models", name) or ""
            if models_managed and (not version or snapshot.find("models", name, version) is None):
                missing.append((bento, tag))
            if version:
                keys.append((name, version))
                needed_by.setdefault((name, version), []).append(bento)
        needs[bento.path] = tuple(keys)
    return References(
        {key: tuple(bentos) for key, bentos in needed_by.items()},
        needs,
        tuple(unknown),
        tuple(missing),
    )


@dataclass(frozen=True, slots=True)
class Target:
    """Where a prune stops: every condition must hold."""

    low_percent: float
    min_free: int | None
    max_store_size: int | None

    def holds(self, usage: Usage) -> bool:
        """Return whether ``usage`` meets the target (on every filesystem of the store)."""
        return bytes_needed(usage, self) == 0

    def helps(self, usage: Usage, kind: str) -> bool:
        """Return whether removing a version of ``kind`` brings ``usage`` closer to the target.

        On a store that spans several filesystems, a version helps only the
        one it is on, and the store-size target.
        """
        if self.max_store_size is not None and usage.store_bytes > self.max_store_size:
            return True
        return any(
            _filesystem_need(part, self) > 0 for part in usage.filesystems() if kind in part.kinds
        )

    def as_dict(self) -> dict[str, float | int | None]:
        """Return the target as plain data."""
        return {
            "low_percent": self.low_percent,
            "min_free": self.min_free,
            "max_store_size": self.max_store_size,
        }


@dataclass(frozen=True)
class Plan:
    """An ordered plan.

    ``removals`` are executed in order: first those required regardless of
    pressure (abandoned, retention), then pressure victims oldest first,
    as many as the projection says reach the target. ``reserve`` holds the
    further eligible victims, oldest first, for the executor to continue
    with when the re-measured usage is still above target.
    """

    triggers: tuple[str, ...]
    usage: Usage
    target: Target
    removals: tuple[Removal, ...]
    reserve: tuple[Removal, ...]
    kept: tuple[Kept, ...]
    projected: Usage
    shortfall_bytes: int
    references: References = NO_REFERENCES

    @property
    def bytes_to_free(self) -> int:
        """Return the bytes the planned removals free."""
        return sum(removal.bytes for removal in self.removals)


def triggers_holding(usage: Usage, config: Config) -> tuple[str, ...]:
    """Return the names of the triggers that hold for ``usage`` (on any of its filesystems)."""
    trigger = config.trigger
    held = []
    filesystems = usage.filesystems()
    if any(part.used_percent >= trigger.high_percent for part in filesystems):
        held.append("high_percent")
    if trigger.min_free is not None and any(part.free < trigger.min_free for part in filesystems):
        held.append("min_free")
    if trigger.max_store_size is not None and usage.store_bytes > trigger.max_store_size:
        held.append("max_store_size")
    return tuple(held)


def _filesystem_need(usage: Usage, target: Target) -> int:
    """Return the bytes one filesystem must free for its low_percent and min_free."""
    capacity = usage.used + usage.free
    allowed_used = int(capacity * target.low_percent / 100.0)
    needed = max(0, usage.used - allowed_used)
    if target.min_free is not None:
        needed = max(needed, target.min_free - usage.free)
    return needed


def bytes_needed(usage: Usage, target: Target) -> int:
    """Return how many bytes must be freed before ``usage`` meets ``target``.

    On a store spanning several filesystems: the most any one of them (or
    the store-size target) still needs.
    """
    needed = max(_filesystem_need(part, target) for part in usage.filesystems())
    if target.max_store_size is not None:
        needed = max(needed, usage.store_bytes - target.max_store_size)
    return needed


def target_of(config: Config) -> Target:
    """Return the prune target the config sets."""
    trigger = config.trigger
    return Target(trigger.low_percent, trigger.min_free, trigger.max_store_size)


def _age(now: datetime, moment: datetime) -> float:
    return (now - moment) / timedelta(seconds=1)


def _pin_matches(record: VersionRecord, pin: str) -> bool:
    return fnmatch.fnmatchcase(record.tag, pin) or fnmatch.fnmatchcase(
        f"{record.kind}/{record.tag}", pin
    )


def is_pinned(record: VersionRecord, pins: Iterable[str]) -> bool:
    """Return whether any pin glob (``name:version``, ``name:*``) matches the version's tag.

    A glob may name the kind first (``bentos/svc:*``, as ``storewarden pin
    --kind`` records it) to pin that kind only.
    """
    return any(_pin_matches(record, pin) for pin in pins)


def matching_pins(record: VersionRecord, pins: Iterable[str]) -> list[str]:
    """Return the pin globs of ``pins`` that match the version (see :func:`is_pinned`)."""
    return [pin for pin in dict.fromkeys(pins) if _pin_matches(record, pin)]


def _label_matches(record: VersionRecord, key: str, pattern: str) -> bool:
    return key in record.labels and fnmatch.fnmatchcase(record.labels[key], pattern)


def has_protected_label(record: VersionRecord, labels: Mapping[str, str]) -> bool:
    """Return whether any ``key: value`` pair (value may be a glob) matches the version's labels."""
    return any(_label_matches(record, key, pattern) for key, pattern in labels.items())


def matching_labels(record: VersionRecord, labels: Mapping[str, str]) -> dict[str, str]:
    """Return the protected ``key: pattern`` pairs the version's labels match."""
    return {key: pattern for key, pattern in labels.items() if _label_matches(record, key, pattern)}


def standing_protections(
    record: VersionRecord,
    *,
    config: Config,
    settings: Effective,
    now: datetime,
    in_use: Mapping[Path, str],
    pins: Iterable[str],
) -> list[str]:
    """Return the protections of a version that do not depend on its siblings.

    These are re-checked right before each removal: pins, labels, in use,
    settle, and for complete versions min_age.
    """
    reasons = []
    if is_pinned(record, (*config.protect.pins, *pins)):
        reasons.append(PINNED)
    if has_protected_label(record, config.protect.labels):
        reasons.append(LABEL)
    if record.path in in_use:
        reasons.append(IN_USE)
    if _age(now, record.last_change) < settings.settle:
        reasons.append(SETTLE)
    if record.complete and _age(now, record.age_basis) < settings.min_age:
        reasons.append(MIN_AGE)
    return reasons


@dataclass(frozen=True, slots=True)
class _Conditional:
    """A model only the bentos in ``waiting`` keep: it may go once they all have gone.

    ``reason`` is why it would go then: a retention or abandoned reason, or
    None for a pressure candidate.
    """

    version: VersionRecord
    reason: str | None
    holders: tuple[VersionRecord, ...]


@dataclass
class _Sorting:
    """The planner's working lists while it classifies versions."""

    mandatory: list[Removal]
    candidates: list[VersionRecord]
    kept: list[Kept]
    conditional: dict[ModelKey, _Conditional] = field(default_factory=dict)


def _keep_or_wait(
    record: VersionRecord,
    reasons: list[str],
    reason_if_free: str | None,
    references: References,
    into: _Sorting,
) -> None:
    """Keep a version for ``reasons``, or, if bentos that may go are all that keep it, wait.

    A bento can only be removed in this plan if it is a managed version of
    the store; bentos being built, or of a kind the config leaves alone,
    keep their models for as long as they are there.
    """
    holders = references.holders(record)
    if reasons == [REFERENCED]:
        into.conditional[(record.name, record.version)] = _Conditional(
            record, reason_if_free, holders
        )
        return
    into.kept.append(Kept(record, tuple(reasons), tuple(bento.tag for bento in holders)))


def _classify_incomplete(
    record: VersionRecord,
    reasons: list[str],
    settings: Effective,
    now: datetime,
    references: References,
    into: _Sorting,
) -> None:
    """Sort a version without a usable descriptor: protected, or abandoned (removed)."""
    if not record.readable:
        into.kept.append(Kept(record, (UNREADABLE, *reasons)))
        return
    if _age(now, record.last_change) < settings.abandoned_after:
        into.kept.append(Kept(record, (INCOMPLETE, *reasons)))
        return
    # A writer still at work (settle) blocks too, even where abandoned_after < settle.
    blockers = [
        reason
        for reason in reasons
        if reason in (PINNED, IN_USE, SETTLE, REFERENCED, REFERENCES_UNKNOWN)
    ]
    if blockers == [REFERENCED]:
        _keep_or_wait(record, blockers, ABANDONED, references, into)
    elif blockers:
        into.kept.append(
            Kept(
                record,
                (INCOMPLETE, *blockers),
                tuple(bento.tag for bento in references.holders(record)),
            )
        )
    else:
        into.mandatory.append(Removal(record, ABANDONED))


@dataclass(frozen=True, slots=True)
class NameFacts:
    """What the rules that depend on a version's siblings need to know about its name.

    ``newest_complete`` are the name's complete versions, newest first;
    ``keep_last`` and ``retained`` the versions ``keep_last`` and
    ``max_versions`` keep (``retained`` None: no limit).
    """

    settings: Effective
    pointer_target: str | None
    pointer_unreadable: bool
    newest_complete: tuple[VersionRecord, ...]
    keep_last: frozenset[str]
    retained: frozenset[str] | None


def name_facts(snapshot: Snapshot, kind: str, name: str, config: Config) -> NameFacts:
    """Return the facts about ``kind``/``name`` its versions' protections depend on."""
    records = snapshot.versions_of(kind, name)
    settings = effective(config, kind, name)
    pointer = snapshot.pointers.get((kind, name))
    newest_first = tuple(record for record in reversed(records) if record.complete)
    return NameFacts(
        settings=settings,
        pointer_target=snapshot.pointer_target(kind, name),
        pointer_unreadable=pointer is not None and pointer.unreadable,
        newest_complete=newest_first,
        keep_last=frozenset(record.version for record in newest_first[: settings.keep_last]),
        retained=(
            frozenset(record.version for record in newest_first[: settings.max_versions])
            if settings.max_versions is not None
            else None
        ),
    )


def protections_of(
    record: VersionRecord,
    facts: NameFacts,
    *,
    config: Config,
    now: datetime,
    in_use: Mapping[Path, str],
    pins: tuple[str, ...],
    references: References,
) -> list[str]:
    """Return every protection that applies to ``record``, in the order the plan lists them.

    For a version without a usable descriptor these are the raw reasons; the
    planner then decides whether it is kept as ``incomplete``/``unreadable``
    or removed as abandoned.
    """
    reasons = standing_protections(
        record, config=config, settings=facts.settings, now=now, in_use=in_use, pins=pins
    )
    reasons.extend(references.protections(record))
    if not record.complete or not record.readable:
        return reasons
    if facts.settings.keep_latest and record.version == facts.pointer_target:
        reasons.insert(0, LATEST)
    if facts.pointer_unreadable:
        reasons.insert(0, LATEST_UNREADABLE)
    if record.version in facts.keep_last:
        reasons.append(KEEP_LAST)
    return reasons


def retention_reason(record: VersionRecord, facts: NameFacts, now: datetime) -> str | None:
    """Return why retention removes a complete ``record`` without pressure, or None."""
    settings = facts.settings
    if settings.max_age is not None and _age(now, record.age_basis) > settings.max_age:
        return MAX_AGE
    if facts.retained is not None and record.version not in facts.retained:
        return MAX_VERSIONS
    return None


def _classify_name(
    snapshot: Snapshot,
    kind: str,
    name: str,
    *,
    config: Config,
    now: datetime,
    in_use: Mapping[Path, str],
    pins: tuple[str, ...],
    references: References,
    into: _Sorting,
) -> None:
    """Sort the versions of one name into kept, retention removals and pressure candidates."""
    facts = name_facts(snapshot, kind, name, config)
    for record in snapshot.versions_of(kind, name):
        reasons = protections_of(
            record,
            facts,
            config=config,
            now=now,
            in_use=in_use,
            pins=pins,
            references=references,
        )
        if not record.complete or not record.readable:
            _classify_incomplete(record, reasons, facts.settings, now, references, into)
            continue
        reason = retention_reason(record, facts, now)
        if reasons:
            _keep_or_wait(record, reasons, reason, references, into)
        elif reason is not None:
            into.mandatory.append(Removal(record, reason))
        else:
            into.candidates.append(record)


def _oldest_first(record: VersionRecord) -> tuple[datetime, str, str, str]:
    return (record.age_basis, record.kind, record.name, record.version)


class _Queue:
    """Versions in oldest-first order, where removing a bento frees the models it kept.

    A model that only bentos kept joins the queue when the last of them is
    taken: at its own place in the order (it is older than they are, so it
    comes next), and always after them.
    """

    def __init__(self, sorting: _Sorting, references: References) -> None:
        self._heap: list[tuple[tuple[datetime, str, str, str], int, VersionRecord, str | None]] = []
        self._count = 0
        self._sorting = sorting
        self._references = references
        self._waiting = {
            key: {bento.path for bento in conditional.holders}
            for key, conditional in sorting.conditional.items()
        }

    def push(self, record: VersionRecord, reason: str | None) -> None:
        """Add a version, with the reason it goes if it is not a pressure candidate."""
        self._count += 1
        heapq.heappush(self._heap, (_oldest_first(record), self._count, record, reason))

    def __bool__(self) -> bool:
        return bool(self._heap)

    def pop(self) -> tuple[VersionRecord, str | None, list[_Conditional]]:
        """Take the oldest version; return it, its reason, and the models it freed."""
        _key, _count, record, reason = heapq.heappop(self._heap)
        freed = []
        for key in self._references.needs.get(record.path, ()) if record.kind == "bentos" else ():
            waiting = self._waiting.get(key)
            if waiting is None:
                continue
            waiting.discard(record.path)
            if not waiting:
                del self._waiting[key]
                freed.append(self._sorting.conditional.pop(key))
        return record, reason, freed


def _could_help(usage: Usage, target: Target, kind: str) -> bool:
    """Return whether a version of ``kind`` may be worth removing at all under ``usage``.

    A version on a filesystem that is under no pressure frees nothing that
    counts (unless the store-size target does): it is not even in reserve.
    """
    return target.helps(usage, kind)


def _take_mandatory(queue: _Queue, sorting: _Sorting) -> list[Removal]:
    """Return the retention and abandoned removals, oldest first, bentos before their models.

    A model only removed bentos kept joins them if a retention rule would
    remove it anyway; otherwise it becomes a pressure candidate.
    """
    for removal in sorting.mandatory:
        queue.push(removal.version, removal.reason)
    mandatory: list[Removal] = []
    while queue:
        record, reason, freed = queue.pop()
        mandatory.append(Removal(record, reason or ABANDONED))
        for conditional in freed:
            if conditional.reason is not None:
                queue.push(conditional.version, conditional.reason)
            else:
                sorting.candidates.append(conditional.version)
    return mandatory


def plan(
    snapshot: Snapshot,
    usage: Usage,
    config: Config,
    now: datetime,
    *,
    in_use: Mapping[Path, str] | None = None,
    pins: Iterable[str] = (),
    references: References | None = None,
) -> Plan:
    """Given a census, the usage, the config and ``now``, return the ordered Plan.

    ``in_use`` maps version paths to what holds them; ``pins`` adds pin globs
    to the config's (pins made from the command line); ``references``
    replaces what :func:`references_of` finds in the snapshot. Pure: the same
    inputs give the same plan. A model a bento needs goes only in a plan
    that removes every bento needing it, and after them.
    """
    if references is None:
        references = references_of(snapshot, config, now)
    sorting = _Sorting([], [], [])
    for kind, name in snapshot.names():
        _classify_name(
            snapshot,
            kind,
            name,
            config=config,
            now=now,
            in_use=in_use or {},
            pins=tuple(pins),
            references=references,
            into=sorting,
        )
    queue = _Queue(sorting, references)
    mandatory = _take_mandatory(queue, sorting)
    target = target_of(config)
    triggers = triggers_holding(usage, config)
    projected = usage
    for removal in mandatory:
        projected = projected.after_freeing(removal.bytes, removal.version.kind)
    pressure: list[Removal] = []
    reserve: list[Removal] = []
    if triggers:
        for record in sorting.candidates:
            queue.push(record, None)
        while queue:
            record, _reason, freed = queue.pop()
            for conditional in freed:
                # Its bento goes for pressure, so it does too: a retention reason of
                # its own would only have applied had its bentos gone without pressure.
                queue.push(conditional.version, None)
            removal = Removal(record, triggers[0])
            if target.helps(projected, record.kind):
                pressure.append(removal)
                projected = projected.after_freeing(record.bytes, record.kind)
            elif _could_help(usage, target, record.kind):
                reserve.append(removal)
    for conditional in sorting.conditional.values():
        sorting.kept.append(
            Kept(
                conditional.version,
                (INCOMPLETE, REFERENCED) if not conditional.version.complete else (REFERENCED,),
                tuple(bento.tag for bento in conditional.holders),
            )
        )
    return Plan(
        triggers=triggers,
        usage=usage,
        target=target,
        removals=(*mandatory, *pressure),
        reserve=tuple(reserve),
        kept=tuple(sorting.kept),
        projected=projected,
        shortfall_bytes=bytes_needed(projected, target) if triggers else 0,
        references=references,
    )


def explicit_blockers(
    record: VersionRecord,
    *,
    config: Config,
    now: datetime,
    in_use: Mapping[Path, str],
    pins: Iterable[str] = (),
    references: References = NO_REFERENCES,
) -> list[str]:
    """Return why an explicit ``delete`` of a version must be refused (empty: go ahead).

    An operator's explicit delete overrides age and count protections but not
    a pin, a process using the version, a writer still at work, or a bento
    that needs the model (BentoML's own ``bentoml models delete`` refuses
    that too).
    """
    settings = effective(config, record.kind, record.name)
    reasons = standing_protections(
        record, config=config, settings=settings, now=now, in_use=in_use, pins=pins
    )
    reasons.extend(references.protections(record))
    return [reason for reason in reasons if reason in EXPLICIT_BLOCKERS]


# -- the last look before each removal -------------------------------------------------


class Mode(StrEnum):
    """Which blockers count right before a removal: what delete and --force change."""

    PRUNE = "prune"  # every protection (prune, retention, abandoned)
    EXPLICIT = "explicit"  # storewarden delete: EXPLICIT_BLOCKERS only
    FORCE = "force"  # storewarden delete --force: nothing but the version being gone


COMPLETED = "completed"
GONE = "gone"
MOUNTED = "mounted"
QUARANTINED = "quarantined"
# What still blocks the removal of an abandoned (half-written) version.
ABANDONED_BLOCKERS = (PINNED, IN_USE, SETTLE, REFERENCED, REFERENCES_UNKNOWN)


@dataclass(frozen=True)
class Facts:
    """What the last look at the store right before one removal found.

    ``pointer_target`` is what ``latest`` of the version's name names on disk
    now; ``latest_can_move`` whether another complete, settled version is
    there for it to move to (or none at all is left, and the pointer goes).
    """

    in_use: Mapping[Path, str] = field(default_factory=dict)
    pins: tuple[str, ...] = ()
    references: References = NO_REFERENCES
    pointer_target: str | None = None
    latest_can_move: bool = True


def recheck(
    record: VersionRecord,
    reason: str,
    mode: Mode,
    *,
    config: Config,
    now: datetime,
    facts: Facts,
) -> list[str]:
    """Given a version as it is now, return why it may not go after all (empty: it may).

    The plan was made from an earlier census; right before each removal the
    version is read again and these rules decide. ``reason`` is the plan's
    (``abandoned`` versions are judged as half-written ones). Pure.
    """
    if mode is Mode.FORCE:
        return []
    latest_stuck = facts.pointer_target == record.version and not facts.latest_can_move
    if mode is Mode.EXPLICIT:
        reasons = explicit_blockers(
            record,
            config=config,
            now=now,
            in_use=facts.in_use,
            pins=facts.pins,
            references=facts.references,
        )
        return [*reasons, NO_SETTLED_LATEST] if latest_stuck else reasons
    settings = effective(config, record.kind, record.name)
    reasons = standing_protections(
        record, config=config, settings=settings, now=now, in_use=facts.in_use, pins=facts.pins
    )
    reasons.extend(facts.references.protections(record))
    if reason == ABANDONED:
        reasons = [reason for reason in reasons if reason in ABANDONED_BLOCKERS]
        if record.complete:
            reasons.append(COMPLETED)
        elif not record.readable:
            reasons.append(UNREADABLE)
        elif latest_stuck:
            reasons.append(NO_SETTLED_LATEST)
        return reasons
    if not record.readable:
        reasons.append(UNREADABLE)
    elif not record.complete:
        reasons.append(INCOMPLETE)
    elif facts.pointer_target == record.version:
        # The pointer as it is on disk now, not as the plan saw it: someone may
        # have pointed latest back at this version since.
        if settings.keep_latest:
            reasons.append(LATEST)
        elif latest_stuck:
            reasons.append(NO_SETTLED_LATEST)
    return reasons

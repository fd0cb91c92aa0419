"""The pruning policy: pure, no I/O, no clock, no logging.

:func:`plan` turns a snapshot, the filesystem usage, the config and ``now``
into an ordered :class:`Plan`. Every removal carries its reason and every
protected version carries why it stays, so ``storewarden plan`` can explain
itself and tests can hold the planner to its invariants.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from storewarden.config import Config
from storewarden.store import Snapshot, VersionRecord
from storewarden.usage import Usage

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
    """A version the plan keeps although it might have been a candidate, and why."""

    version: VersionRecord
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a prune stops: every condition must hold."""

    low_percent: float
    min_free: int | None
    max_store_size: int | None

    def holds(self, usage: Usage) -> bool:
        """Return whether ``usage`` meets the target."""
        return bytes_needed(usage, self) == 0

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

    @property
    def bytes_to_free(self) -> int:
        """Return the bytes the planned removals free."""
        return sum(removal.bytes for removal in self.removals)


def triggers_holding(usage: Usage, config: Config) -> tuple[str, ...]:
    """Return the names of the triggers that hold for ``usage``."""
    trigger = config.trigger
    held = []
    if usage.used_percent >= trigger.high_percent:
        held.append("high_percent")
    if trigger.min_free is not None and usage.free < trigger.min_free:
        held.append("min_free")
    if trigger.max_store_size is not None and usage.store_bytes > trigger.max_store_size:
        held.append("max_store_size")
    return tuple(held)


def bytes_needed(usage: Usage, target: Target) -> int:
    """Return how many bytes must be freed before ``usage`` meets ``target``."""
    capacity = usage.used + usage.free
    allowed_used = int(capacity * target.low_percent / 100.0)
    needed = max(0, usage.used - allowed_used)
    if target.min_free is not None:
        needed = max(needed, target.min_free - usage.free)
    if target.max_store_size is not None:
        needed = max(needed, usage.store_bytes - target.max_store_size)
    return needed


def target_of(config: Config) -> Target:
    """Return the prune target the config sets."""
    trigger = config.trigger
    return Target(trigger.low_percent, trigger.min_free, trigger.max_store_size)


def _age(now: datetime, moment: datetime) -> float:
    return (now - moment) / timedelta(seconds=1)


def is_pinned(record: VersionRecord, pins: Iterable[str]) -> bool:
    """Return whether any pin glob (``name:version``, ``name:*``) matches the version's tag.

    A glob may name the kind first (``bentos/svc:*``, as ``storewarden pin
    --kind`` records it) to pin that kind only.
    """
    qualified = f"{record.kind}/{record.tag}"
    return any(
        fnmatch.fnmatchcase(record.tag, pin) or fnmatch.fnmatchcase(qualified, pin) for pin in pins
    )


def has_protected_label(record: VersionRecord, labels: Mapping[str, str]) -> bool:
    """Return whether any ``key: value`` pair (value may be a glob) matches the version's labels."""
    return any(
        key in record.labels and fnmatch.fnmatchcase(record.labels[key], pattern)
        for key, pattern in labels.items()
    )


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
    if record.complete and _age(now, record.creation_time) < settings.min_age:
        reasons.append(MIN_AGE)
    return reasons


@dataclass
class _Sorting:
    """The planner's working lists while it classifies versions."""

    mandatory: list[Removal]
    candidates: list[VersionRecord]
    kept: list[Kept]


def _classify_incomplete(
    record: VersionRecord, reasons: list[str], settings: Effective, now: datetime, into: _Sorting
) -> None:
    """Sort a version without a usable descriptor: protected, or abandoned (removed)."""
    if not record.readable:
        into.kept.append(Kept(record, (UNREADABLE, *reasons)))
        return
    if _age(now, record.last_change) < settings.abandoned_after:
        into.kept.append(Kept(record, (INCOMPLETE, *reasons)))
        return
    # A writer still at work (settle) blocks too, even where abandoned_after < settle.
    blockers = [reason for reason in reasons if reason in (PINNED, IN_USE, SETTLE)]
    if blockers:
        into.kept.append(Kept(record, (INCOMPLETE, *blockers)))
    else:
        into.mandatory.append(Removal(record, ABANDONED))


def _classify_name(
    snapshot: Snapshot,
    kind: str,
    name: str,
    *,
    config: Config,
    now: datetime,
    in_use: Mapping[Path, str],
    pins: tuple[str, ...],
    into: _Sorting,
) -> None:
    """Sort the versions of one name into kept, retention removals and pressure candidates."""
    records = snapshot.versions_of(kind, name)
    settings = effective(config, kind, name)
    pointer_target = snapshot.pointer_target(kind, name)
    newest_first = [record for record in reversed(records) if record.complete]
    keep_last = {record.version for record in newest_first[: settings.keep_last]}
    retained = (
        {record.version for record in newest_first[: settings.max_versions]}
        if settings.max_versions is not None
        else None
    )
    for record in records:
        reasons = standing_protections(
            record, config=config, settings=settings, now=now, in_use=in_use, pins=pins
        )
        if not record.complete or not record.readable:
            _classify_incomplete(record, reasons, settings, now, into)
            continue
        if settings.keep_latest and record.version == pointer_target:
            reasons.insert(0, LATEST)
        if record.version in keep_last:
            reasons.append(KEEP_LAST)
        if reasons:
            into.kept.append(Kept(record, tuple(reasons)))
        elif settings.max_age is not None and _age(now, record.creation_time) > settings.max_age:
            into.mandatory.append(Removal(record, MAX_AGE))
        elif retained is not None and record.version not in retained:
            into.mandatory.append(Removal(record, MAX_VERSIONS))
        else:
            into.candidates.append(record)


def _oldest_first(record: VersionRecord) -> tuple[datetime, str, str, str]:
    return (record.creation_time, record.kind, record.name, record.version)


def plan(
    snapshot: Snapshot,
    usage: Usage,
    config: Config,
    now: datetime,
    *,
    in_use: Mapping[Path, str] | None = None,
    pins: Iterable[str] = (),
) -> Plan:
    """Given a census, the usage, the config and ``now``, return the ordered Plan.

    ``in_use`` maps version paths to what holds them; ``pins`` adds pin globs
    to the config's (pins made from the command line). Pure: the same inputs
    give the same plan.
    """
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
            into=sorting,
        )
    mandatory = sorted(sorting.mandatory, key=lambda removal: _oldest_first(removal.version))
    target = target_of(config)
    triggers = triggers_holding(usage, config)
    projected = usage.after_freeing(sum(removal.bytes for removal in mandatory))
    pressure: list[Removal] = []
    reserve: list[Removal] = []
    if triggers:
        needed = bytes_needed(projected, target)
        for record in sorted(sorting.candidates, key=_oldest_first):
            if needed > 0:
                pressure.append(Removal(record, triggers[0]))
                needed -= record.bytes
                projected = projected.after_freeing(record.bytes)
            else:
                reserve.append(Removal(record, triggers[0]))
    return Plan(
        triggers=triggers,
        usage=usage,
        target=target,
        removals=(*mandatory, *pressure),
        reserve=tuple(reserve),
        kept=tuple(sorting.kept),
        projected=projected,
        shortfall_bytes=bytes_needed(projected, target) if triggers else 0,
    )


def explicit_blockers(
    record: VersionRecord,
    *,
    config: Config,
    now: datetime,
    in_use: Mapping[Path, str],
    pins: Iterable[str] = (),
) -> list[str]:
    """Return why an explicit ``delete`` of a version must be refused (empty: go ahead).

    An operator's explicit delete overrides age and count protections but not
    a pin, a process using the version, or a writer still at work.
    """
    settings = effective(config, record.kind, record.name)
    reasons = standing_protections(
        record, config=config, settings=settings, now=now, in_use=in_use, pins=pins
    )
    return [reason for reason in reasons if reason in (PINNED, IN_USE, SETTLE)]

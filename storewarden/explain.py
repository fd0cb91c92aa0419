"""Why a version is still in the store, and at what usage a prune would take it: pure.

Everything here is derived from :mod:`storewarden.policy`, never decided
again: each rule's verdict comes from the planner's own protection functions
(:func:`policy.protections_of`, :func:`policy.retention_reason`), the
removal order from the planner run under full pressure, and the usage at
which a version goes from that order and the planner's stopping rule (a
prune removes oldest first until every target holds). No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from storewarden import policy
from storewarden.config import Config, TriggerConfig
from storewarden.forecast import first_used_at
from storewarden.store import Snapshot, VersionRecord
from storewarden.usage import Usage

# Every rule ``why`` reports on, in the order it lists them: the protections
# first (as the README's table), then the retention rules that remove without pressure.
RULES = (*policy.PROTECTIONS, policy.MAX_AGE, policy.MAX_VERSIONS)
# Protections that end by themselves with time; the others hold until someone acts.
TIMED = frozenset({policy.MIN_AGE, policy.SETTLE, policy.INCOMPLETE})
# What the in-use scan says of a holder: "pid 123 (python) has ... open".
_HOLDER = re.compile(r"^pid (\d+) \(([^)]*)\)")


@dataclass(frozen=True)
class Verdict:
    """One rule's verdict on a version: whether it holds, and the facts behind it."""

    rule: str
    holds: bool
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Place:
    """A version's place in the oldest-first order of pressure removals.

    ``position`` counts from 1 among the ``of`` versions a prune may remove
    under pressure; ``bytes_before`` are the bytes of those that go first
    (on its filesystem), ``mandatory_bytes`` those every prune removes
    anyway before pressure counts (retention, abandoned).
    """

    position: int
    of: int
    bytes_before: int
    mandatory_bytes: int


@dataclass(frozen=True)
class GoingPoint:
    """The usage at which a prune would remove a version.

    ``used_bytes`` of its filesystem (of ``capacity_bytes``), as
    ``used_percent``; ``more_bytes`` to be written before then. ``after``:
    not before this time (a protection that runs out first).
    """

    used_bytes: int
    capacity_bytes: int
    more_bytes: int
    after: datetime | None = None

    @property
    def used_percent(self) -> float:
        """Return the usage in percent, as ``df`` shows it."""
        return 100.0 * self.used_bytes / self.capacity_bytes if self.capacity_bytes else 0.0


@dataclass(frozen=True)
class Explanation:
    """What the planner says of one version, and why.

    ``outcome`` is ``removed_now`` (the plan at the current usage removes
    it, ``reason`` saying why), ``reserve`` (eligible, but the target is met
    before it), ``kept`` (protected: ``protected_by``) or ``candidate``
    (nothing protects it; no pressure now). ``going`` is the usage at which
    a prune takes it; ``never`` the protections that hold with no end in
    time (it never goes automatically while they do); ``beyond`` is true
    when even a full disk would not reach it in one prune.
    """

    record: VersionRecord
    verdicts: tuple[Verdict, ...]
    outcome: str
    reason: str | None
    protected_by: tuple[str, ...]
    place: Place | None
    going: GoingPoint | None
    never: tuple[str, ...]
    protected_until: datetime | None
    beyond: bool = False
    mandatory_at: datetime | None = None


def verdicts(
    record: VersionRecord,
    snapshot: Snapshot,
    config: Config,
    now: datetime,
    *,
    in_use: Mapping[Path, str],
    pins: Sequence[str],
    references: policy.References,
) -> tuple[Verdict, ...]:
    """Given a version and what a plan is made from, return every rule's verdict on it.

    Whether a rule holds is what :func:`policy.protections_of` says (and,
    for a version without a usable descriptor, its flags); the detail
    gives the facts: the pointer, the position among the newest, the times,
    the matching pins and labels, the holding process, the bentos.
    """
    facts = policy.name_facts(snapshot, record.kind, record.name, config)
    settings = facts.settings
    all_pins = (*config.protect.pins, *pins)
    reasons = set(
        policy.protections_of(
            record,
            facts,
            config=config,
            now=now,
            in_use=in_use,
            pins=tuple(pins),
            references=references,
        )
    )
    usable = record.complete and record.readable
    retention = policy.retention_reason(record, facts, now) if usable else None
    position = next(
        (
            index + 1
            for index, other in enumerate(facts.newest_complete)
            if other.version == record.version
        ),
        None,
    )
    holder = in_use.get(record.path)
    process = _HOLDER.match(holder) if holder else None
    seconds = timedelta(seconds=1)
    in_store = (now - record.age_basis) / seconds
    details: dict[str, dict[str, Any]] = {
        policy.LATEST: {
            "keep_latest": settings.keep_latest,
            "latest": facts.pointer_target,
        },
        policy.LATEST_UNREADABLE: {"latest_unreadable": facts.pointer_unreadable},
        policy.KEEP_LAST: {
            "keep_last": settings.keep_last,
            "position": position,
            "complete_versions": len(facts.newest_complete),
        },
        policy.MIN_AGE: {
            "min_age_seconds": settings.min_age,
            "in_store_since": record.age_basis,
            "age_seconds": round(in_store, 3),
            "until": record.age_basis + timedelta(seconds=settings.min_age),
        },
        policy.SETTLE: {
            "settle_seconds": settings.settle,
            "last_change": record.last_change,
            "until": record.last_change + timedelta(seconds=settings.settle),
        },
        policy.INCOMPLETE: {
            "complete": record.complete,
            "problem": record.problem,
            "abandoned_after_seconds": settings.abandoned_after,
            "abandoned_at": (
                None
                if record.complete
                else record.last_change + timedelta(seconds=settings.abandoned_after)
            ),
        },
        policy.UNREADABLE: {"readable": record.readable, "problem": record.problem},
        policy.PINNED: {"globs": policy.matching_pins(record, all_pins)},
        policy.LABEL: {
            "labels": dict(record.labels),
            "matching": policy.matching_labels(record, config.protect.labels),
        },
        policy.IN_USE: {
            "holder": holder,
            "pid": int(process.group(1)) if process else None,
            "command": process.group(2) if process else None,
        },
        policy.REFERENCED: {"bentos": [bento.tag for bento in references.holders(record)]},
        policy.REFERENCES_UNKNOWN: {
            "bentos": [bento.tag for bento in references.unknown] if record.kind == "models" else []
        },
        policy.MAX_AGE: {
            "max_age_seconds": settings.max_age,
            "age_seconds": round(in_store, 3),
        },
        policy.MAX_VERSIONS: {
            "max_versions": settings.max_versions,
            "position": position,
        },
    }
    holds = {
        **{rule: rule in reasons for rule in RULES},
        policy.INCOMPLETE: record.readable and not record.complete,
        policy.UNREADABLE: not record.readable,
        policy.MAX_AGE: retention == policy.MAX_AGE,
        policy.MAX_VERSIONS: retention == policy.MAX_VERSIONS,
    }
    return tuple(Verdict(rule, holds[rule], details[rule]) for rule in RULES)


def _full_pressure(config: Config) -> Config:
    """Return ``config`` with a trigger that always holds and a target never reached."""
    return config.model_copy(update={"trigger": TriggerConfig(high_percent=100.0, low_percent=0.0)})


def removal_order(
    snapshot: Snapshot,
    config: Config,
    now: datetime,
    *,
    in_use: Mapping[Path, str],
    pins: Sequence[str],
    references: policy.References | None = None,
) -> tuple[tuple[policy.Removal, ...], tuple[policy.Removal, ...]]:
    """Return the removals every prune makes and the pressure removals in the order they go.

    The planner itself is run on a full disk with a target it can never
    reach, so it lists every version it may remove under pressure, oldest
    first, with the models that only departing bentos kept right after them.
    """
    capacity = snapshot.store_bytes + 1
    full = Usage(total=capacity, used=capacity, free=0, store_bytes=snapshot.store_bytes)
    plan = policy.plan(
        snapshot,
        full,
        _full_pressure(config),
        now,
        in_use=in_use,
        pins=pins,
        references=references,
    )
    mandatory = tuple(removal for removal in plan.removals if removal.reason not in plan.triggers)
    pressure = tuple(removal for removal in plan.removals if removal.reason in plan.triggers)
    return mandatory, pressure


def _filesystem_of(usage: Usage, kind: str) -> Usage:
    return next((part for part in usage.filesystems() if kind in part.kinds), usage)


def going_point(
    usage: Usage,
    config: Config,
    kind: str,
    *,
    freed_first: int,
    store_freed_first: int,
) -> int:
    """Return the used bytes of a version's filesystem at which a prune removes it.

    A prune starts when a trigger holds and removes oldest first while a
    target is unmet: the version goes once usage reaches the trigger AND the
    bytes above the target exceed ``freed_first``, what the prune frees
    before it on its filesystem (``store_freed_first`` in the whole store,
    for ``max_store_size``). Others' writes raise usage; the store's size
    stays. The result may exceed the capacity: not in one prune.
    """
    trigger = config.trigger
    disk = _filesystem_of(usage, kind)
    capacity = disk.used + disk.free
    if capacity <= 0:
        return 0
    store_trigger = (
        trigger.max_store_size is not None and usage.store_bytes > trigger.max_store_size
    )
    store_helps = (
        trigger.max_store_size is not None
        and usage.store_bytes - store_freed_first > trigger.max_store_size
    )
    starts = [first_used_at(capacity, trigger.high_percent)]
    helps = [int(capacity * trigger.low_percent / 100.0) + freed_first + 1]
    if trigger.min_free is not None:
        starts.append(capacity - trigger.min_free + 1)
        helps.append(capacity - trigger.min_free + freed_first + 1)
    start = 0 if store_trigger else min(starts)
    help_from = 0 if store_helps else min(helps)
    return max(0, start, help_from)


def _place_of(
    record: VersionRecord,
    mandatory: Sequence[policy.Removal],
    pressure: Sequence[policy.Removal],
    usage: Usage,
) -> tuple[Place, int, int] | None:
    """Return the version's place in ``pressure``, with the bytes going first (fs, store)."""
    index = next(
        (i for i, removal in enumerate(pressure) if removal.version.path == record.path), None
    )
    if index is None:
        return None
    kinds = _filesystem_of(usage, record.kind).kinds if usage.parts else None

    def here(removal: policy.Removal) -> bool:
        return kinds is None or removal.version.kind in kinds

    before = sum(removal.bytes for removal in pressure[:index] if here(removal))
    forced = sum(removal.bytes for removal in mandatory if here(removal))
    store_first = sum(removal.bytes for removal in (*mandatory, *pressure[:index]))
    return Place(index + 1, len(pressure), before, forced), before + forced, store_first


def _plan_outcome(
    plan: policy.Plan, record: VersionRecord
) -> tuple[str, str | None, tuple[str, ...]]:
    for removal in plan.removals:
        if removal.version.path == record.path:
            return "removed_now", removal.reason, ()
    for removal in plan.reserve:
        if removal.version.path == record.path:
            return "reserve", None, ()
    for kept in plan.kept:
        if kept.version.path == record.path:
            return "kept", None, kept.reasons
    return "candidate", None, ()


def explain(
    record: VersionRecord,
    snapshot: Snapshot,
    usage: Usage,
    config: Config,
    now: datetime,
    *,
    in_use: Mapping[Path, str],
    pins: Sequence[str],
    plan: policy.Plan | None = None,
) -> Explanation:
    """Given a version and what a plan is made from, return why it stays or goes, and when.

    ``plan`` is the plan at ``usage`` and ``now`` (made here when None).
    A version protected only for a while (``min_age``, ``settle``, or a
    half-written one until it counts as abandoned) is placed as the planner
    would place it once the last of those runs out.
    """
    references = policy.references_of(snapshot, config, now)
    if plan is None:
        plan = policy.plan(
            snapshot, usage, config, now, in_use=in_use, pins=pins, references=references
        )
    found = verdicts(record, snapshot, config, now, in_use=in_use, pins=pins, references=references)
    outcome, reason, protected_by = _plan_outcome(plan, record)
    holding = [verdict for verdict in found if verdict.holds and verdict.rule in policy_reasons()]
    lasting = tuple(verdict.rule for verdict in holding if verdict.rule not in TIMED)
    until: datetime | None = None
    if outcome == "kept" and not lasting:
        ends = [_ends(verdict) for verdict in holding]
        until = max((end for end in ends if end is not None), default=None)
    if outcome == "kept" and until is None:
        return Explanation(record, found, outcome, reason, protected_by, None, None, lasting, None)
    moment = now if until is None else until + timedelta(microseconds=1)
    later_references = (
        references if until is None else policy.references_of(snapshot, config, moment)
    )
    mandatory, pressure = removal_order(
        snapshot, config, moment, in_use=in_use, pins=pins, references=later_references
    )
    if any(removal.version.path == record.path for removal in mandatory):
        return Explanation(
            record,
            found,
            outcome,
            reason,
            protected_by,
            None,
            None,
            (),
            until,
            mandatory_at=moment if until is not None else now,
        )
    placed = _place_of(record, mandatory, pressure, usage)
    if placed is None:
        # Protected again once the timed protections end (a rule's keep_last
        # counts complete versions only): what holds then has no end.
        later = verdicts(
            record,
            snapshot,
            config,
            moment,
            in_use=in_use,
            pins=pins,
            references=later_references,
        )
        still = tuple(v.rule for v in later if v.holds and v.rule in policy_reasons())
        return Explanation(record, found, outcome, reason, protected_by, None, None, still, until)
    place, freed_first, store_freed_first = placed
    used = going_point(
        usage,
        config,
        record.kind,
        freed_first=freed_first,
        store_freed_first=store_freed_first,
    )
    disk = _filesystem_of(usage, record.kind)
    capacity = disk.used + disk.free
    going = GoingPoint(used, capacity, max(0, used - disk.used), until)
    return Explanation(
        record,
        found,
        outcome,
        reason,
        protected_by,
        place,
        going,
        (),
        until,
        beyond=used > capacity,
    )


def policy_reasons() -> frozenset[str]:
    """Return the rules that protect (the retention rules remove instead)."""
    return frozenset(RULES) - {policy.MAX_AGE, policy.MAX_VERSIONS}


def _ends(verdict: Verdict) -> datetime | None:
    """Return when a timed protection stops holding (None: it does not end by itself)."""
    if verdict.rule in (policy.MIN_AGE, policy.SETTLE):
        end = verdict.detail.get("until")
        return end if isinstance(end, datetime) else None
    if verdict.rule == policy.INCOMPLETE:
        end = verdict.detail.get("abandoned_at")
        return end if isinstance(end, datetime) else None
    return None

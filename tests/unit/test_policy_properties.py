"""The planner's invariants, for random snapshots, usages, configs and process tables.

Protections and eligibility are derived here again, independently of
:mod:`storewarden.policy` (only fnmatch and the config's plain fields are
shared), so a planner that forgets a protection fails even if its own
bookkeeping agrees with itself.
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from storewarden import policy
from storewarden.config import Config, build_config
from storewarden.policy import Plan
from storewarden.store import Kind, Pointer, Snapshot, VersionRecord
from storewarden.usage import Usage
from tests.storebuilder import NOW

ROOT = Path("/srv/bentoml")
KINDS: tuple[Kind, ...] = ("models", "bentos")
NAMES = ("iris", "llm", "llm-big", "svc")
VERSION_PREFIXES = ("z", "a", "x0", "b9", "c")
PIN_PATTERNS = ("iris:*", "llm*:*", "*:a*", "svc:b1", "*:*1", "nothing:*")
# Model tags a bento may name besides the generated versions: by latest, or missing.
MODEL_TAGS = ("iris:latest", "llm:latest", "ghost:v1")
QUIET_SECONDS = 2.0
LABEL_SETS: tuple[dict[str, str], ...] = (
    {},
    {"stage": "prod"},
    {"stage": "production"},
    {"stage": "dev"},
    {"owner": "ml"},
)
PROTECTED_LABELS: tuple[dict[str, str], ...] = (
    {},
    {"stage": "prod*"},
    {"stage": "dev", "owner": "m?"},
)
HOUR = 3600
DAY = 86400

PROPERTY_SETTINGS = settings(deadline=None, max_examples=200)


@dataclass(frozen=True)
class Case:
    """One random planner input."""

    snapshot: Snapshot
    usage: Usage
    config: Config
    in_use: dict[Path, str]
    pins: tuple[str, ...]


@st.composite
def version_records(draw: st.DrawFn) -> list[VersionRecord]:
    """Return up to 14 versions over a few names of both kinds."""
    records: list[VersionRecord] = []
    for index in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(KINDS))
        name = draw(st.sampled_from(NAMES))
        # Random letters first, the index last: unique, and not ordered like the times.
        version = draw(st.sampled_from(VERSION_PREFIXES)) + f"{index}"
        created = NOW - timedelta(seconds=draw(st.integers(0, 60 * DAY)))
        # Some versions share a creation time: order must still be total and stable.
        if records and draw(st.integers(0, 3)) == 0:
            created = records[-1].creation_time
        changed = NOW - timedelta(seconds=draw(st.integers(0, 3 * DAY)))
        state = draw(st.sampled_from(["complete"] * 4 + ["incomplete", "unreadable"]))
        complete = state == "complete"
        references: tuple[str, ...] | None = ()
        if kind == "bentos":
            # As the census reports them: known only from a parsed bento.yaml.
            models = [
                f"{other.name}:{other.version}" for other in records if other.kind == "models"
            ]
            references = (
                tuple(draw(st.lists(st.sampled_from([*models, *MODEL_TAGS]), max_size=3)))
                if complete
                else None
            )
        records.append(
            VersionRecord(
                kind=kind,
                name=name,
                version=version,
                path=ROOT / kind / name / version,
                creation_time=created,
                creation_time_estimated=False,
                # As the census reports them: labels come only from a parsed descriptor.
                labels=draw(st.sampled_from(LABEL_SETS)) if complete else {},
                bytes=draw(st.integers(0, 20_000)),
                last_change=min(NOW, max(created, changed)),
                complete=complete,
                readable=state != "unreadable",
                problem=None if complete else "no model.yaml",
                references=references,
                # Imported or pulled: here since long after its creation_time.
                arrived=draw(
                    st.sampled_from([None, None, created])
                    | st.builds(lambda days: NOW - timedelta(days=days), st.integers(0, 40))
                ),
            )
        )
    return records


def basis(record: VersionRecord) -> datetime:
    """Return when a version came to be in the store: the later of creation and arrival."""
    return max(record.creation_time, record.arrived or record.creation_time)


@st.composite
def pointers_for(draw: st.DrawFn, records: list[VersionRecord]) -> dict[tuple[str, str], Pointer]:
    """Return a latest pointer for some names: to a version, to nothing, or broken."""
    pointers: dict[tuple[str, str], Pointer] = {}
    for kind, name in sorted({record.key for record in records}):
        own = [record.version for record in records if record.key == (kind, name)]
        choice = draw(st.sampled_from(["version", "version", "none", "missing", "problem"]))
        path = ROOT / kind / name / "latest"
        if choice == "version":
            target = draw(st.sampled_from(own))
            pointers[(kind, name)] = Pointer(cast(Kind, kind), name, path, "file", target)
        elif choice == "missing":
            pointers[(kind, name)] = Pointer(
                cast(Kind, kind), name, path, "file", "gone", "pointer names missing version"
            )
        elif choice == "problem":
            pointers[(kind, name)] = Pointer(
                cast(Kind, kind), name, path, "symlink", None, "pointer names '../x'"
            )
    return pointers


durations = st.integers(0, 40 * DAY)
optional_counts = st.none() | st.integers(0, 4)


@st.composite
def rule_data(draw: st.DrawFn) -> dict[str, Any]:
    """Return one per-name rule as it would be written in YAML."""
    rule: dict[str, Any] = {"match": draw(st.sampled_from(["iris", "llm*", "*", "svc", "x*"]))}
    if draw(st.booleans()):
        rule["kind"] = draw(st.sampled_from(KINDS))
    for key, values in (
        ("keep_latest", st.booleans()),
        ("keep_last", st.integers(0, 3)),
        ("min_age", durations),
        ("settle", st.integers(0, 2 * DAY)),
        ("abandoned_after", st.integers(0, 3 * DAY)),
        ("max_versions", st.integers(0, 4)),
        ("max_age", durations),
    ):
        if draw(st.booleans()):
            rule[key] = draw(values)
    return rule


@st.composite
def configs(draw: st.DrawFn) -> Config:
    """Return a valid config with random triggers, protections, retention and rules."""
    high = draw(st.integers(1, 100))
    low = draw(st.integers(0, high - 1))
    trigger: dict[str, Any] = {"high_percent": high, "low_percent": low}
    if draw(st.booleans()):
        trigger["min_free"] = draw(st.integers(0, 200_000))
    if draw(st.booleans()):
        trigger["max_store_size"] = draw(st.integers(0, 200_000))
    protect = {
        "keep_latest": draw(st.booleans()),
        "keep_last": draw(st.integers(0, 3)),
        "min_age": draw(durations),
        "settle": draw(st.integers(0, 2 * DAY)),
        "abandoned_after": draw(st.integers(0, 3 * DAY)),
        "pins": draw(st.lists(st.sampled_from(PIN_PATTERNS), max_size=2)),
        "labels": draw(st.sampled_from(PROTECTED_LABELS)),
        "bento_references": draw(st.sampled_from([True, True, True, False])),
    }
    retention = {
        "max_versions": draw(optional_counts),
        "max_age": draw(st.none() | durations),
    }
    return build_config(
        {
            "store": str(ROOT),
            "trigger": trigger,
            "protect": protect,
            "retention": retention,
            "rules": draw(st.lists(rule_data(), max_size=3)),
        }
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Return a random planner input."""
    records = draw(version_records())
    pointers = draw(pointers_for(records))
    store_bytes = sum(record.bytes for record in records)
    capacity = draw(st.integers(max(1, store_bytes), 400_000))
    used = draw(st.integers(store_bytes, capacity))
    usage = Usage(total=capacity, used=used, free=capacity - used, store_bytes=store_bytes)
    held = draw(st.lists(st.sampled_from(records), max_size=3)) if records else []
    return Case(
        snapshot=Snapshot(root=ROOT, versions=tuple(records), pointers=pointers),
        usage=usage,
        config=draw(configs()),
        in_use={record.path: "pid 1 (python)" for record in held},
        pins=tuple(draw(st.lists(st.sampled_from(PIN_PATTERNS), max_size=2))),
    )


def plan_of(case: Case) -> Plan:
    """Return the plan for a case."""
    return policy.plan(
        case.snapshot, case.usage, case.config, NOW, in_use=case.in_use, pins=case.pins
    )


# -- the independent derivation --------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The settings for one name, derived from the config's plain fields."""

    keep_latest: bool
    keep_last: int
    min_age: float
    settle: float
    abandoned_after: float
    max_versions: int | None
    max_age: float | None


def settings_for(config: Config, kind: str, name: str) -> Settings:
    """Return the defaults overridden by the first rule matching kind and name."""
    values: dict[str, Any] = {
        "keep_latest": config.protect.keep_latest,
        "keep_last": config.protect.keep_last,
        "min_age": config.protect.min_age,
        "settle": config.protect.settle,
        "abandoned_after": config.protect.abandoned_after,
        "max_versions": config.retention.max_versions,
        "max_age": config.retention.max_age,
    }
    for rule in config.rules:
        if rule.kind in (None, kind) and fnmatch.fnmatchcase(name, rule.match):
            for key in values:
                if getattr(rule, key) is not None:
                    values[key] = getattr(rule, key)
            break
    return Settings(**values)


def seconds_between(later: datetime, earlier: datetime) -> float:
    """Return ``later - earlier`` in seconds."""
    return (later - earlier).total_seconds()


def newest_complete(snapshot: Snapshot, record: VersionRecord) -> list[VersionRecord]:
    """Return the complete versions of the record's name, newest first."""
    same = [other for other in snapshot.versions if other.key == record.key and other.complete]
    return sorted(same, key=lambda other: (other.creation_time, other.version), reverse=True)


def bentos_of(case: Case) -> list[VersionRecord]:
    """Return the bento versions of the case."""
    return [record for record in case.snapshot.versions if record.kind == "bentos"]


def needs_are_known(case: Case, bento: VersionRecord) -> bool:
    """Return whether a bento's model list can be trusted now (read, and not mid-copy)."""
    quiet = seconds_between(NOW, bento.last_change)
    settling = quiet < settings_for(case.config, "bentos", bento.name).settle
    return bento.references is not None and not (settling and quiet < QUIET_SECONDS)


def unknown_bentos(case: Case) -> list[VersionRecord]:
    """Return the bentos that may need any model: being written, or unreadable."""
    if not case.config.protect.bento_references:
        return []
    found = []
    for bento in bentos_of(case):
        quiet = seconds_between(NOW, bento.last_change)
        wanted = settings_for(case.config, "bentos", bento.name)
        # An import copies its models in after making the bento's directory.
        since = bento.arrived or bento.last_change
        importing = quiet < wanted.abandoned_after and any(
            record.kind == "models"
            and (record.arrived or record.last_change) >= since
            and seconds_between(NOW, record.last_change)
            < settings_for(case.config, "models", record.name).settle
            for record in case.snapshot.versions
        )
        if not needs_are_known(case, bento) and (
            quiet < wanted.settle or (bento.references is None and not bento.readable) or importing
        ):
            found.append(bento)
    return found


def holders_of(case: Case, record: VersionRecord) -> list[VersionRecord]:
    """Return the bentos that need a model version (``name:latest`` as the pointer says)."""
    if record.kind != "models" or not case.config.protect.bento_references:
        return []
    pointer = case.snapshot.pointers.get(("models", record.name))
    latest = pointer.target if pointer is not None and pointer.problem is None else None
    wanted = {record.tag} | ({f"{record.name}:latest"} if latest == record.version else set())
    return [
        bento
        for bento in bentos_of(case)
        if needs_are_known(case, bento) and wanted & set(bento.references or ())
    ]


def reference_protections(case: Case, record: VersionRecord) -> set[str]:
    """Return ``referenced`` and ``references_unknown`` where they hold for the record."""
    reasons = set()
    if holders_of(case, record):
        reasons.add("referenced")
    if record.kind == "models" and unknown_bentos(case):
        reasons.add("references_unknown")
    return reasons


def protections(case: Case, record: VersionRecord) -> set[str]:
    """Return every reason the record must not be removed automatically.

    ``referenced`` is the one protection a plan may lift: by removing, before
    the model, every bento that needs it.
    """
    config = case.config
    wanted = settings_for(config, record.kind, record.name)
    reasons = reference_protections(case, record)
    if any(fnmatch.fnmatchcase(record.tag, pin) for pin in (*config.protect.pins, *case.pins)):
        reasons.add("pinned")
    if record.path in case.in_use:
        reasons.add("in_use")
    if seconds_between(NOW, record.last_change) < wanted.settle:
        reasons.add("settle")
    if not record.readable:
        reasons.add("unreadable")
    elif not record.complete:
        if seconds_between(NOW, record.last_change) < wanted.abandoned_after:
            reasons.add("incomplete")
    else:
        if any(
            key in record.labels and fnmatch.fnmatchcase(record.labels[key], pattern)
            for key, pattern in config.protect.labels.items()
        ):
            reasons.add("label")
        if seconds_between(NOW, basis(record)) < wanted.min_age:
            reasons.add("min_age")
        pointer = case.snapshot.pointers.get(record.key)
        if (
            wanted.keep_latest
            and pointer is not None
            and pointer.problem is None
            and pointer.target == record.version
        ):
            reasons.add("latest")
        if record in newest_complete(case.snapshot, record)[: wanted.keep_last]:
            reasons.add("keep_last")
    return reasons


def mandatory_reason(case: Case, record: VersionRecord) -> str | None:
    """Return why an unprotected record goes without pressure, or None if it does not."""
    wanted = settings_for(case.config, record.kind, record.name)
    if not record.complete:
        return "abandoned"
    if wanted.max_age is not None and seconds_between(NOW, basis(record)) > wanted.max_age:
        return "max_age"
    if (
        wanted.max_versions is not None
        and record not in newest_complete(case.snapshot, record)[: wanted.max_versions]
    ):
        return "max_versions"
    return None


def triggers_of(case: Case) -> list[str]:
    """Return the triggers that hold, from the usage numbers alone."""
    trigger, usage = case.config.trigger, case.usage
    capacity = usage.used + usage.free
    held = []
    if capacity and usage.used * 100 >= trigger.high_percent * capacity:
        held.append("high_percent")
    if trigger.min_free is not None and usage.free < trigger.min_free:
        held.append("min_free")
    if trigger.max_store_size is not None and usage.store_bytes > trigger.max_store_size:
        held.append("max_store_size")
    return held


def pressure_part(plan: Plan) -> list[VersionRecord]:
    """Return the versions the plan removes because of pressure, in order."""
    return [removal.version for removal in plan.removals if removal.reason in policy.TRIGGERS]


def mandatory_part(plan: Plan) -> list[VersionRecord]:
    """Return the versions the plan removes regardless of pressure, in order."""
    return [removal.version for removal in plan.removals if removal.reason not in policy.TRIGGERS]


# -- the properties -----------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(cases())
def test_no_protected_version_is_ever_planned_for_removal(case: Case) -> None:
    plan = plan_of(case)

    sequence = [removal.version for removal in (*plan.removals, *plan.reserve)]
    for position, record in enumerate(sequence):
        assert protections(case, record) - {"referenced"} == set(), record
        # A model a bento needs goes only after every bento that needs it.
        for bento in holders_of(case, record):
            assert bento in sequence[:position], (record, bento)


def released_models(case: Case) -> list[VersionRecord]:
    """Return the models only bentos keep, where every such bento is itself unprotected."""
    return [
        record
        for record in case.snapshot.versions
        if protections(case, record) == {"referenced"}
        and all(not protections(case, bento) for bento in holders_of(case, record))
    ]


@PROPERTY_SETTINGS
@given(cases())
def test_every_kept_version_has_a_protection_that_really_applies(case: Case) -> None:
    plan = plan_of(case)

    for kept in plan.kept:
        assert kept.reasons
        assert protections(case, kept.version), kept


@PROPERTY_SETTINGS
@given(cases())
def test_each_version_is_in_at_most_one_of_removals_reserve_and_kept(case: Case) -> None:
    plan = plan_of(case)

    paths = [
        *(removal.version.path for removal in plan.removals),
        *(removal.version.path for removal in plan.reserve),
        *(kept.version.path for kept in plan.kept),
    ]
    assert len(paths) == len(set(paths))
    assert set(paths) <= {record.path for record in case.snapshot.versions}


@PROPERTY_SETTINGS
@given(cases())
def test_removals_without_pressure_are_exactly_the_unprotected_abandoned_and_retired(
    case: Case,
) -> None:
    plan = plan_of(case)

    expected = {
        record.path: reason
        for record in case.snapshot.versions
        if not protections(case, record) and (reason := mandatory_reason(case, record)) is not None
    }
    # A model whose bentos all go without pressure goes too, if it is due itself.
    bentos_going = {path for path in expected if path.parts[len(ROOT.parts)] == "bentos"}
    for record in released_models(case):
        reason = mandatory_reason(case, record)
        if reason is not None and all(
            bento.path in bentos_going for bento in holders_of(case, record)
        ):
            expected[record.path] = reason
    planned = {
        removal.version.path: removal.reason
        for removal in plan.removals
        if removal.reason not in policy.TRIGGERS
    }
    assert planned == expected


@PROPERTY_SETTINGS
@given(cases())
def test_pressure_acts_only_while_a_trigger_holds_and_on_every_eligible_candidate(
    case: Case,
) -> None:
    plan = plan_of(case)

    assert list(plan.triggers) == triggers_of(case)
    eligible = {
        record.path
        for record in case.snapshot.versions
        if not protections(case, record) and mandatory_reason(case, record) is None
    }
    mandatory = {removal.version.path for removal in plan.removals} - {
        record.path for record in pressure_part(plan)
    }
    # A model only unprotected bentos keep is a candidate once they go.
    eligible |= {record.path for record in released_models(case) if record.path not in mandatory}
    considered = {record.path for record in pressure_part(plan)} | {
        removal.version.path for removal in plan.reserve
    }
    assert considered == (eligible if plan.triggers else set())
    for removal in (*plan.removals, *plan.reserve):
        if removal.reason in policy.TRIGGERS:
            assert removal.reason == plan.triggers[0]


@PROPERTY_SETTINGS
@given(cases())
def test_mandatory_removals_come_first_then_pressure_oldest_first(case: Case) -> None:
    plan = plan_of(case)

    reasons = [removal.reason in policy.TRIGGERS for removal in plan.removals]
    assert reasons == sorted(reasons)  # every mandatory removal before any pressure one
    # Models freed by a bento's removal come right after it, out of time order.
    released = {record.path for record in released_models(case)}
    pressure = [record for record in pressure_part(plan) if record.path not in released]
    times = [basis(record) for record in pressure]
    assert times == sorted(times)
    reserve_times = [
        basis(removal.version) for removal in plan.reserve if removal.version.path not in released
    ]
    assert reserve_times == sorted(reserve_times)
    if pressure and reserve_times:
        assert max(times) <= min(reserve_times)


@PROPERTY_SETTINGS
@given(cases())
def test_pressure_removals_stop_as_soon_as_the_projection_meets_the_target(case: Case) -> None:
    plan = plan_of(case)

    mandatory_bytes = sum(record.bytes for record in mandatory_part(plan))
    pressure = pressure_part(plan)
    expected_projection = case.usage.after_freeing(
        mandatory_bytes + sum(record.bytes for record in pressure)
    )
    assert plan.projected == expected_projection
    if pressure:
        without_last = case.usage.after_freeing(
            mandatory_bytes + sum(record.bytes for record in pressure[:-1])
        )
        assert not plan.target.holds(without_last)
    if plan.reserve:
        assert plan.target.holds(plan.projected)


@PROPERTY_SETTINGS
@given(cases())
def test_the_shortfall_is_what_the_projection_still_lacks(case: Case) -> None:
    plan = plan_of(case)

    if not plan.triggers:
        assert plan.shortfall_bytes == 0
    else:
        assert plan.shortfall_bytes == policy.bytes_needed(plan.projected, plan.target)
        if plan.shortfall_bytes:
            assert plan.reserve == ()


@PROPERTY_SETTINGS
@given(cases())
def test_keep_last_holds_for_every_name(case: Case) -> None:
    plan = plan_of(case)

    removed = {removal.version.path for removal in plan.removals}
    for record in case.snapshot.versions:
        wanted = settings_for(case.config, record.kind, record.name)
        newest = newest_complete(case.snapshot, record)[: wanted.keep_last]
        assert not {other.path for other in newest} & removed


@PROPERTY_SETTINGS
@given(cases())
def test_the_complete_version_latest_names_is_never_removed_when_keep_latest(
    case: Case,
) -> None:
    plan = plan_of(case)

    removed = {(removal.version.key, removal.version.version) for removal in plan.removals}
    for key, pointer in case.snapshot.pointers.items():
        target = case.snapshot.find(key[0], key[1], pointer.target or "")
        wanted = settings_for(case.config, *key)
        if wanted.keep_latest and pointer.problem is None and target and target.complete:
            assert (key, target.version) not in removed


@PROPERTY_SETTINGS
@given(cases(), st.randoms(use_true_random=False))
def test_the_plan_is_deterministic_whatever_the_order_of_the_census(
    case: Case, shuffler: random.Random
) -> None:
    first = plan_of(case)
    versions = list(case.snapshot.versions)
    shuffler.shuffle(versions)
    shuffled = Case(
        Snapshot(root=ROOT, versions=tuple(versions), pointers=dict(case.snapshot.pointers)),
        case.usage,
        case.config,
        case.in_use,
        case.pins,
    )

    assert plan_of(case) == first
    assert plan_of(shuffled) == first


# -- the last look before each removal (policy.recheck) ----------------------------------


@st.composite
def rechecks(draw: st.DrawFn) -> tuple[Case, VersionRecord, str, policy.Mode, policy.Facts]:
    """Return a case, one of its versions, a plan reason, a mode and what the last look saw."""
    case = draw(cases())
    assume(case.snapshot.versions)
    record = draw(st.sampled_from(case.snapshot.versions))
    reason = draw(st.sampled_from([policy.ABANDONED, policy.MAX_AGE, "high_percent", "explicit"]))
    mode = draw(st.sampled_from(list(policy.Mode)))
    pointer = draw(st.sampled_from([None, record.version, "another"]))
    facts = policy.Facts(
        in_use=case.in_use,
        pins=case.pins,
        references=policy.references_of(case.snapshot, case.config, NOW),
        pointer_target=pointer,
        latest_can_move=draw(st.booleans()),
    )
    return case, record, reason, mode, facts


@PROPERTY_SETTINGS
@given(rechecks())
def test_the_last_look_never_lets_a_standing_protection_through(
    checked: tuple[Case, VersionRecord, str, policy.Mode, policy.Facts],
) -> None:
    case, record, reason, mode, facts = checked

    reasons = policy.recheck(record, reason, mode, config=case.config, now=NOW, facts=facts)

    wanted = settings_for(case.config, record.kind, record.name)
    derived = protections(case, record)
    if mode is policy.Mode.FORCE:
        assert reasons == []  # --force: nothing but the version being gone
        return
    # Pins, processes, writers and bentos hold against prune and delete alike.
    for protection in ("pinned", "in_use", "settle", "referenced", "references_unknown"):
        if protection in derived:
            assert protection in reasons, (protection, reasons)
    latest_stuck = facts.pointer_target == record.version and not facts.latest_can_move
    if latest_stuck and record.readable:
        # latest would have nothing whole to move to (or, keep_latest, it stays anyway;
        # or an abandoned version completed after all, and stays for that)
        assert {"no_settled_latest", "latest", "completed", "incomplete"} & set(reasons)
    if mode is policy.Mode.PRUNE and reason != policy.ABANDONED:
        if not record.readable:
            assert "unreadable" in reasons
        elif not record.complete:
            assert "incomplete" in reasons
        elif wanted.keep_latest and facts.pointer_target == record.version:
            assert "latest" in reasons
    if mode is policy.Mode.PRUNE and reason == policy.ABANDONED and record.complete:
        assert "completed" in reasons


@PROPERTY_SETTINGS
@given(rechecks())
def test_an_explicit_delete_is_held_back_only_by_what_it_does_not_override(
    checked: tuple[Case, VersionRecord, str, policy.Mode, policy.Facts],
) -> None:
    case, record, reason, _mode, facts = checked

    reasons = policy.recheck(
        record, reason, policy.Mode.EXPLICIT, config=case.config, now=NOW, facts=facts
    )

    assert set(reasons) <= {*policy.EXPLICIT_BLOCKERS, policy.NO_SETTLED_LATEST}
    # age, count, labels and latest itself never stop an operator's delete
    assert not {"min_age", "keep_last", "label", "latest"} & set(reasons)

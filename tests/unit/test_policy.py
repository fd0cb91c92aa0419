"""The planner, example by example: triggers, order, protections, rules, retention.

Snapshots are built from VersionRecord objects (no disk), usage numbers are
chosen, and ``now`` is injected, so every case states exactly what it sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from storewarden import policy
from storewarden.config import Config, build_config
from storewarden.policy import Plan
from storewarden.store import Kind, Pointer, Snapshot, VersionRecord
from storewarden.usage import Usage
from tests.storebuilder import NOW

ROOT = Path("/srv/bentoml")
CAPACITY = 100_000
DAY = timedelta(days=1)

# Protections that would otherwise keep things in these examples, switched off,
# so each test switches on only the protection it is about.
BARE_PROTECT: dict[str, Any] = {
    "keep_latest": False,
    "keep_last": 0,
    "min_age": 0,
    "settle": 0,
}


def record(
    name: str,
    version: str,
    *,
    kind: Kind = "models",
    age: timedelta = 30 * DAY,
    changed: timedelta | None = None,
    size: int = 1000,
    complete: bool = True,
    readable: bool = True,
    labels: Mapping[str, str] | None = None,
) -> VersionRecord:
    """Return a version created ``age`` before NOW, last changed ``changed`` before NOW."""
    created = NOW - age
    return VersionRecord(
        kind=kind,
        name=name,
        version=version,
        path=ROOT / kind / name / version,
        creation_time=created,
        creation_time_estimated=False,
        labels=dict(labels or {}),
        bytes=size,
        last_change=NOW - (age if changed is None else changed),
        complete=complete,
        readable=readable,
        problem=None if complete else "no model.yaml",
    )


def snapshot(
    *records: VersionRecord, latest: Mapping[tuple[Kind, str], str] | None = None
) -> Snapshot:
    """Return a snapshot of ``records`` with ``latest`` pointers (plain files)."""
    pointers: dict[tuple[str, str], Pointer] = {
        (kind, name): Pointer(kind, name, ROOT / kind / name / "latest", "file", version)
        for (kind, name), version in (latest or {}).items()
    }
    return Snapshot(root=ROOT, versions=records, pointers=pointers)


def usage(percent: float, *, store_bytes: int = 0) -> Usage:
    """Return a filesystem of CAPACITY bytes, ``percent`` used."""
    used = int(CAPACITY * percent / 100)
    return Usage(total=CAPACITY, used=used, free=CAPACITY - used, store_bytes=store_bytes)


def config(**sections: Any) -> Config:
    """Return a config with the bare protections unless ``protect`` is given."""
    data: dict[str, Any] = {"store": str(ROOT), "protect": dict(BARE_PROTECT)}
    if "protect" in sections:
        data["protect"] = {**BARE_PROTECT, **sections.pop("protect")}
    data.update(sections)
    return build_config(data)


def series(
    name: str, count: int, *, kind: Kind = "models", size: int = 1000
) -> list[VersionRecord]:
    """Return ``count`` versions of a name one day apart, oldest first."""
    return [
        record(name, f"{name[:3]}{index:02d}", kind=kind, age=(40 - index) * DAY, size=size)
        for index in range(count)
    ]


def removed(plan: Plan) -> list[str]:
    """Return the tags the plan removes, in order."""
    return [removal.version.tag for removal in plan.removals]


def kept_reasons(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Return each kept version's tag with its reasons."""
    return {kept.version.tag: kept.reasons for kept in plan.kept}


# -- triggers and hysteresis --------------------------------------------------------------


def test_nothing_is_planned_while_usage_stays_below_high_percent() -> None:
    plan = policy.plan(snapshot(*series("iris", 5)), usage(84.9), config(), NOW)

    assert plan.triggers == ()
    assert plan.removals == ()
    assert plan.reserve == ()
    assert plan.shortfall_bytes == 0


def test_high_percent_triggers_at_the_threshold_and_prunes_down_to_low_percent() -> None:
    versions = series("iris", 10, size=4000)

    plan = policy.plan(snapshot(*versions), usage(85), config(), NOW)

    # 85% -> 75% of 100 000 bytes is 10 000 bytes: three versions of 4 000.
    assert plan.triggers == ("high_percent",)
    assert removed(plan) == [version.tag for version in versions[:3]]
    assert {removal.reason for removal in plan.removals} == {"high_percent"}
    assert plan.projected.used_percent <= 75
    assert plan.shortfall_bytes == 0


def test_usage_between_low_and_high_percent_does_not_start_a_prune() -> None:
    # Hysteresis: 80% is above the target (75%) but below the trigger (85%).
    plan = policy.plan(snapshot(*series("iris", 10)), usage(80), config(), NOW)

    assert plan.triggers == ()
    assert plan.removals == ()


def test_a_prune_that_has_started_goes_on_to_low_percent_not_just_below_high() -> None:
    versions = series("iris", 20, size=1000)

    plan = policy.plan(snapshot(*versions), usage(90), config(), NOW)

    # Stopping just below 85% would take 6 versions; the target is 75%: 15.
    assert len(plan.removals) == 15
    assert plan.projected.used_percent == pytest.approx(75)


def test_min_free_triggers_below_high_percent_and_prunes_until_enough_is_free() -> None:
    versions = series("iris", 10, size=2000)
    cfg = config(trigger={"min_free": 45_000})

    plan = policy.plan(snapshot(*versions), usage(60), cfg, NOW)

    # 40 000 free, 45 000 wanted: 5 000 bytes, three versions of 2 000.
    assert plan.triggers == ("min_free",)
    assert removed(plan) == [version.tag for version in versions[:3]]
    assert plan.projected.free >= 45_000


def test_max_store_size_triggers_on_the_store_alone_and_prunes_it_below_the_cap() -> None:
    versions = series("iris", 10, size=3000)
    cfg = config(trigger={"max_store_size": 20_000})

    plan = policy.plan(snapshot(*versions), usage(40, store_bytes=30_000), cfg, NOW)

    assert plan.triggers == ("max_store_size",)
    assert removed(plan) == [version.tag for version in versions[:4]]
    assert plan.projected.store_bytes <= 20_000
    assert {removal.reason for removal in plan.removals} == {"max_store_size"}


def test_every_trigger_that_holds_is_reported_and_the_first_names_the_removals() -> None:
    cfg = config(trigger={"min_free": 50_000, "max_store_size": 1000})

    plan = policy.plan(snapshot(*series("iris", 5)), usage(90, store_bytes=5000), cfg, NOW)

    assert plan.triggers == ("high_percent", "min_free", "max_store_size")
    assert {removal.reason for removal in plan.removals} == {"high_percent"}


def test_a_prune_triggered_by_min_free_also_stops_only_at_low_percent() -> None:
    # Every target must hold: free space alone is reached after one version, 75% after five.
    versions = series("iris", 10, size=1000)
    cfg = config(trigger={"min_free": 21_000, "high_percent": 99, "low_percent": 75})

    plan = policy.plan(snapshot(*versions), usage(80), cfg, NOW)

    assert plan.triggers == ("min_free",)
    assert len(plan.removals) == 5


# -- order -------------------------------------------------------------------------------------


def test_oldest_creation_time_goes_first_across_names_and_kinds_not_by_version_string() -> None:
    # Version strings sort the other way round from their creation times.
    newest = record("iris", "aaaa", age=10 * DAY)
    middle = record("svc", "mmmm", kind="bentos", age=20 * DAY)
    oldest = record("alpha", "zzzz", age=30 * DAY)
    cfg = config(trigger={"high_percent": 50, "low_percent": 10})

    plan = policy.plan(snapshot(newest, middle, oldest), usage(90), cfg, NOW)

    assert removed(plan) == ["alpha:zzzz", "svc:mmmm", "iris:aaaa"]


def test_the_reserve_holds_the_remaining_candidates_oldest_first() -> None:
    versions = series("iris", 8, size=5000)

    plan = policy.plan(snapshot(*versions), usage(85), config(), NOW)

    assert removed(plan) == [version.tag for version in versions[:2]]
    assert [removal.version.tag for removal in plan.reserve] == [
        version.tag for version in versions[2:]
    ]
    assert {removal.reason for removal in plan.reserve} == {"high_percent"}


# -- protections -----------------------------------------------------------------------------


def test_the_version_latest_names_is_kept_under_any_pressure() -> None:
    versions = series("iris", 3)
    store = snapshot(*versions, latest={("models", "iris"): versions[0].version})

    plan = policy.plan(store, usage(99), config(protect={"keep_latest": True}), NOW)

    assert kept_reasons(plan) == {versions[0].tag: ("latest",)}
    assert removed(plan) == [versions[1].tag, versions[2].tag]


def test_the_version_latest_names_is_removable_when_keep_latest_is_off() -> None:
    versions = series("iris", 2)
    store = snapshot(*versions, latest={("models", "iris"): versions[1].version})

    plan = policy.plan(store, usage(99), config(protect={"keep_latest": False}), NOW)

    assert removed(plan) == [versions[0].tag, versions[1].tag]


def test_a_pointer_with_a_problem_protects_nothing() -> None:
    versions = series("iris", 2)
    broken = Pointer(
        "models", "iris", ROOT / "models/iris/latest", "file", None, "pointer names '../x'"
    )
    store = Snapshot(root=ROOT, versions=tuple(versions), pointers={("models", "iris"): broken})

    plan = policy.plan(store, usage(99), config(protect={"keep_latest": True}), NOW)

    assert removed(plan) == [version.tag for version in versions]


def test_keep_last_keeps_the_newest_complete_versions_of_each_name() -> None:
    iris = series("iris", 4)
    llm = series("llm", 3)
    partial = record(
        "iris", "iris-partial", age=1 * DAY, changed=timedelta(hours=1), complete=False
    )

    plan = policy.plan(
        snapshot(*iris, *llm, partial), usage(99), config(protect={"keep_last": 2}), NOW
    )

    reasons = kept_reasons(plan)
    # The newer half-written version does not count towards keep_last.
    assert reasons[iris[3].tag] == ("keep_last",)
    assert reasons[iris[2].tag] == ("keep_last",)
    assert reasons[llm[2].tag] == ("keep_last",)
    assert reasons[llm[1].tag] == ("keep_last",)
    assert sorted(removed(plan)) == sorted([iris[0].tag, iris[1].tag, llm[0].tag])


def test_a_version_younger_than_min_age_is_kept() -> None:
    young = record("iris", "young", age=timedelta(minutes=30))
    old = record("iris", "old", age=2 * DAY)

    plan = policy.plan(snapshot(young, old), usage(99), config(protect={"min_age": "1h"}), NOW)

    assert kept_reasons(plan) == {"iris:young": ("min_age",)}
    assert removed(plan) == ["iris:old"]


def test_a_version_changed_within_the_settle_period_is_kept_however_old() -> None:
    # Created long ago, but a file inside changed five minutes ago: a writer may be at work.
    busy = record("iris", "busy", age=30 * DAY, changed=timedelta(minutes=5))
    quiet = record("iris", "quiet", age=20 * DAY)

    plan = policy.plan(snapshot(busy, quiet), usage(99), config(protect={"settle": "10m"}), NOW)

    assert kept_reasons(plan) == {"iris:busy": ("settle",)}
    assert removed(plan) == ["iris:quiet"]


def test_an_incomplete_version_is_kept_until_abandoned_after_and_never_a_pressure_victim() -> None:
    partial = record("iris", "partial", age=2 * DAY, changed=timedelta(hours=5), complete=False)
    complete = record("iris", "done", age=1 * DAY)

    plan = policy.plan(
        snapshot(partial, complete), usage(99), config(protect={"abandoned_after": "1d"}), NOW
    )

    assert kept_reasons(plan) == {"iris:partial": ("incomplete",)}
    assert removed(plan) == ["iris:done"]


def test_an_unreadable_version_is_kept_even_when_long_abandoned() -> None:
    locked = record("iris", "locked", age=90 * DAY, complete=False, readable=False)

    plan = policy.plan(snapshot(locked), usage(99), config(protect={"abandoned_after": "1d"}), NOW)

    assert kept_reasons(plan) == {"iris:locked": ("unreadable",)}
    assert plan.removals == ()


@pytest.mark.parametrize(
    ("pin", "protected"),
    [
        ("iris:*", {"iris:v1", "iris:v2"}),
        ("iris:v1", {"iris:v1"}),
        ("iris:v*", {"iris:v1", "iris:v2"}),
        ("*:v2", {"iris:v2", "llm:v2"}),
        ("ir:*", set()),
    ],
)
def test_pins_are_globs_over_name_and_version(pin: str, protected: set[str]) -> None:
    versions = [
        record("iris", "v1", age=30 * DAY),
        record("iris", "v2", age=29 * DAY),
        record("llm", "v2", age=28 * DAY),
    ]

    plan = policy.plan(snapshot(*versions), usage(99), config(protect={"pins": [pin]}), NOW)

    assert {tag for tag, reasons in kept_reasons(plan).items() if "pinned" in reasons} == protected
    assert set(removed(plan)) == {version.tag for version in versions} - protected


def test_pins_given_to_plan_protect_like_pins_in_the_config() -> None:
    versions = series("iris", 3)
    cfg = config(protect={"pins": [versions[0].tag]})

    plan = policy.plan(snapshot(*versions), usage(99), cfg, NOW, pins=[versions[1].tag])

    assert kept_reasons(plan) == {versions[0].tag: ("pinned",), versions[1].tag: ("pinned",)}
    assert removed(plan) == [versions[2].tag]


def test_label_pairs_protect_matching_values_including_globs() -> None:
    versions = [
        record("iris", "prod", age=30 * DAY, labels={"stage": "production"}),
        record("iris", "dev", age=29 * DAY, labels={"stage": "dev"}),
        record("iris", "nolabel", age=28 * DAY, labels={"owner": "production"}),
        record("iris", "keep", age=27 * DAY, labels={"keep": "yes"}),
    ]
    cfg = config(protect={"labels": {"stage": "prod*", "keep": "yes"}})

    plan = policy.plan(snapshot(*versions), usage(99), cfg, NOW)

    assert kept_reasons(plan) == {"iris:prod": ("label",), "iris:keep": ("label",)}
    assert removed(plan) == ["iris:dev", "iris:nolabel"]


def test_a_version_a_process_holds_is_kept() -> None:
    versions = series("iris", 3)
    in_use = {versions[1].path: "pid 42 (python) has weights.bin open"}

    plan = policy.plan(snapshot(*versions), usage(99), config(), NOW, in_use=in_use)

    assert kept_reasons(plan) == {versions[1].tag: ("in_use",)}
    assert removed(plan) == [versions[0].tag, versions[2].tag]


def test_a_kept_version_lists_every_protection_that_applies() -> None:
    version = record("iris", "v1", age=timedelta(minutes=1), labels={"stage": "prod"})
    store = snapshot(version, latest={("models", "iris"): "v1"})
    cfg = config(
        protect={
            "keep_latest": True,
            "keep_last": 1,
            "min_age": "1h",
            "settle": "10m",
            "pins": ["iris:*"],
            "labels": {"stage": "prod"},
        }
    )

    plan = policy.plan(store, usage(99), cfg, NOW, in_use={version.path: "pid 1"})

    assert set(kept_reasons(plan)["iris:v1"]) == {
        "latest",
        "keep_last",
        "min_age",
        "settle",
        "pinned",
        "label",
        "in_use",
    }


# -- per-name rules ------------------------------------------------------------------------


def test_the_first_matching_rule_wins() -> None:
    big = series("llm-big", 4)
    cfg = config(
        rules=[
            {"match": "llm-*", "keep_last": 3},
            {"match": "llm-big", "keep_last": 0},
        ]
    )

    plan = policy.plan(snapshot(*big), usage(99), cfg, NOW)

    assert removed(plan) == [big[0].tag]
    assert policy.effective(cfg, "models", "llm-big").keep_last == 3


def test_a_rule_restricted_to_a_kind_leaves_the_other_kind_to_the_defaults() -> None:
    models = series("iris", 3, kind="models")
    bentos = series("iris", 3, kind="bentos")
    cfg = config(
        protect={"keep_last": 1}, rules=[{"match": "iris", "kind": "bentos", "keep_last": 3}]
    )

    plan = policy.plan(snapshot(*models, *bentos), usage(99), cfg, NOW)

    assert [(removal.version.kind, removal.version.version) for removal in plan.removals] == [
        ("models", models[0].version),
        ("models", models[1].version),
    ]


def test_a_rule_overrides_only_the_settings_it_names() -> None:
    cfg = config(
        protect={"keep_last": 2, "min_age": "1h", "settle": "5m", "abandoned_after": "2d"},
        retention={"max_versions": 7},
        rules=[{"match": "llm*", "min_age": "1d", "max_age": "30d"}],
    )

    settings = policy.effective(cfg, "models", "llm-small")

    assert settings == policy.Effective(
        keep_latest=False,
        keep_last=2,
        min_age=86400.0,
        settle=300.0,
        abandoned_after=2 * 86400.0,
        max_versions=7,
        max_age=30 * 86400.0,
    )


def test_a_rule_can_switch_keep_latest_back_on_for_one_name() -> None:
    versions = series("iris", 2)
    store = snapshot(*versions, latest={("models", "iris"): versions[0].version})
    cfg = config(rules=[{"match": "iris", "keep_latest": True}])

    plan = policy.plan(store, usage(99), cfg, NOW)

    assert kept_reasons(plan) == {versions[0].tag: ("latest",)}


# -- retention ----------------------------------------------------------------------------


def test_max_versions_removes_older_versions_without_any_pressure() -> None:
    versions = series("iris", 5)
    cfg = config(retention={"max_versions": 2})

    plan = policy.plan(snapshot(*versions), usage(10), cfg, NOW)

    assert plan.triggers == ()
    assert removed(plan) == [version.tag for version in versions[:3]]
    assert {removal.reason for removal in plan.removals} == {"max_versions"}


def test_max_versions_never_overrides_a_protection() -> None:
    versions = series("iris", 5)
    store = snapshot(*versions, latest={("models", "iris"): versions[1].version})
    cfg = config(
        protect={"keep_latest": True, "keep_last": 1, "pins": [versions[0].tag]},
        retention={"max_versions": 1},
    )

    plan = policy.plan(store, usage(10), cfg, NOW)

    assert removed(plan) == [versions[2].tag, versions[3].tag]
    assert kept_reasons(plan) == {
        versions[0].tag: ("pinned",),
        versions[1].tag: ("latest",),
        versions[4].tag: ("keep_last",),
    }


def test_max_age_removes_versions_older_than_the_limit_without_any_pressure() -> None:
    old = record("iris", "old", age=40 * DAY)
    pinned_old = record("iris", "pinned", age=50 * DAY)
    fresh = record("iris", "fresh", age=10 * DAY)
    cfg = config(protect={"pins": ["iris:pinned"]}, retention={"max_age": "30d"})

    plan = policy.plan(snapshot(old, pinned_old, fresh), usage(10), cfg, NOW)

    assert removed(plan) == ["iris:old"]
    assert plan.removals[0].reason == "max_age"
    assert kept_reasons(plan) == {"iris:pinned": ("pinned",)}


def test_retention_removals_come_first_and_count_towards_the_target() -> None:
    retired = record("iris", "retired", age=60 * DAY, size=6000)
    candidates = [
        record("llm", f"v{index}", age=(40 - index) * DAY, size=3000) for index in range(5)
    ]
    cfg = config(rules=[{"match": "iris", "max_age": "30d"}])

    plan = policy.plan(snapshot(retired, *candidates), usage(85), cfg, NOW)

    # 10 000 bytes to free: 6 000 by retention, then two of 3 000 by pressure.
    assert [(removal.version.tag, removal.reason) for removal in plan.removals] == [
        ("iris:retired", "max_age"),
        ("llm:v0", "high_percent"),
        ("llm:v1", "high_percent"),
    ]


# -- abandoned partial versions --------------------------------------------------------------


def test_an_abandoned_partial_version_is_removed_without_any_pressure() -> None:
    abandoned = record("iris", "crashed", age=3 * DAY, changed=2 * DAY, complete=False)

    plan = policy.plan(
        snapshot(abandoned), usage(5), config(protect={"abandoned_after": "1d"}), NOW
    )

    assert [(removal.version.tag, removal.reason) for removal in plan.removals] == [
        ("iris:crashed", "abandoned")
    ]


def test_a_partial_version_is_protected_before_abandoned_after() -> None:
    partial = record("iris", "saving", age=3 * DAY, changed=timedelta(hours=23), complete=False)

    plan = policy.plan(snapshot(partial), usage(99), config(protect={"abandoned_after": "1d"}), NOW)

    assert plan.removals == ()
    assert kept_reasons(plan) == {"iris:saving": ("incomplete",)}


@pytest.mark.parametrize("blocker", ["pinned", "in_use"])
def test_an_abandoned_partial_version_is_kept_when_pinned_or_in_use(blocker: str) -> None:
    abandoned = record("iris", "crashed", age=3 * DAY, changed=2 * DAY, complete=False)
    pins = ["iris:crashed"] if blocker == "pinned" else []
    in_use = {abandoned.path: "pid 7 (python)"} if blocker == "in_use" else {}

    plan = policy.plan(
        snapshot(abandoned),
        usage(99),
        config(protect={"abandoned_after": "1d"}),
        NOW,
        in_use=in_use,
        pins=pins,
    )

    assert plan.removals == ()
    assert kept_reasons(plan) == {"iris:crashed": ("incomplete", blocker)}


def test_a_partial_version_still_settling_is_kept_even_past_abandoned_after() -> None:
    # A rule may set abandoned_after below settle; a writer at work still wins.
    saving = record("iris", "saving", age=3 * DAY, changed=timedelta(minutes=2), complete=False)
    cfg = config(protect={"settle": "10m"}, rules=[{"match": "iris", "abandoned_after": 0}])

    plan = policy.plan(snapshot(saving), usage(99), cfg, NOW)

    assert plan.removals == ()
    assert kept_reasons(plan) == {"iris:saving": ("incomplete", "settle")}


def test_an_abandoned_partial_version_is_removed_even_when_latest_names_it() -> None:
    # A version without a usable model.yaml breaks `bentoml models list` for the
    # whole store; the pruner moves latest to the newest complete version first.
    complete = record("iris", "good", age=5 * DAY)
    broken = record("iris", "broken", age=3 * DAY, changed=2 * DAY, complete=False)
    store = snapshot(complete, broken, latest={("models", "iris"): "broken"})
    cfg = config(protect={"keep_latest": True, "abandoned_after": "1d"})

    plan = policy.plan(store, usage(5), cfg, NOW)

    assert removed(plan) == ["iris:broken"]


def test_abandoned_versions_go_before_pressure_victims_whatever_their_age() -> None:
    candidate = record("iris", "old", age=90 * DAY, size=5000)
    abandoned = record("iris", "crashed", age=3 * DAY, changed=2 * DAY, complete=False, size=10)

    plan = policy.plan(
        snapshot(candidate, abandoned), usage(85), config(protect={"abandoned_after": "1d"}), NOW
    )

    assert [removal.reason for removal in plan.removals] == ["abandoned", "high_percent"]


# -- target out of reach ------------------------------------------------------------------


def test_a_target_out_of_reach_removes_every_candidate_and_reports_the_shortfall() -> None:
    versions = series("iris", 3, size=2000)
    pinned = record("iris", "pinned", age=60 * DAY, size=50_000)
    cfg = config(protect={"pins": ["iris:pinned"]})

    plan = policy.plan(snapshot(pinned, *versions), usage(95), cfg, NOW)

    # 20 000 bytes needed, 6 000 removable.
    assert removed(plan) == [version.tag for version in versions]
    assert plan.reserve == ()
    assert plan.shortfall_bytes == 14_000
    assert plan.bytes_to_free == 6000


def test_no_shortfall_is_reported_when_no_trigger_holds() -> None:
    plan = policy.plan(snapshot(), usage(80), config(), NOW)

    assert plan.shortfall_bytes == 0


def test_triggers_holding_with_nothing_removable_plan_nothing_but_report_the_gap() -> None:
    only = record("iris", "v1")
    store = snapshot(only, latest={("models", "iris"): "v1"})

    plan = policy.plan(store, usage(90), config(protect={"keep_latest": True}), NOW)

    assert plan.triggers == ("high_percent",)
    assert plan.removals == ()
    assert plan.shortfall_bytes == 15_000


# -- explicit delete ------------------------------------------------------------------------


def test_an_explicit_delete_overrides_age_count_latest_and_label_protections() -> None:
    version = record("iris", "v1", age=timedelta(minutes=30), labels={"stage": "prod"})
    cfg = config(
        protect={"keep_latest": True, "keep_last": 5, "min_age": "1h", "labels": {"stage": "*"}}
    )

    assert policy.explicit_blockers(version, config=cfg, now=NOW, in_use={}) == []


def test_an_explicit_delete_is_blocked_by_a_pin_a_process_or_a_writer() -> None:
    version = record("iris", "v1", age=2 * DAY, changed=timedelta(minutes=1))
    cfg = config(protect={"settle": "10m", "pins": ["iris:*"]})

    blockers = policy.explicit_blockers(
        version, config=cfg, now=NOW, in_use={version.path: "pid 3"}, pins=["iris:v1"]
    )

    assert blockers == ["pinned", "in_use", "settle"]


def test_pins_given_to_an_explicit_delete_block_it() -> None:
    version = record("iris", "v1")

    assert policy.explicit_blockers(
        version, config=config(), now=NOW, in_use={}, pins=["iris:v1"]
    ) == ["pinned"]


def test_the_settle_period_of_an_explicit_delete_follows_the_rule_for_the_name() -> None:
    version = record("iris", "v1", changed=timedelta(minutes=30))
    cfg = config(protect={"settle": "10m"}, rules=[{"match": "iris", "settle": "1h"}])

    assert policy.explicit_blockers(version, config=cfg, now=NOW, in_use={}) == ["settle"]


# -- bentos and the models they need ---------------------------------------------------


def bento(
    name: str,
    version: str,
    needs: tuple[str, ...] | None,
    *,
    age: timedelta = 10 * DAY,
    changed: timedelta | None = None,
    size: int = 1000,
    readable: bool = True,
) -> VersionRecord:
    """Return a bento version that needs ``needs`` (None: its needs are unknown)."""
    base = record(
        name,
        version,
        kind="bentos",
        age=age,
        changed=changed,
        size=size,
        complete=needs is not None,
        readable=readable,
    )
    return replace(base, references=needs)


def test_a_model_a_bento_needs_is_kept_under_pressure_and_names_the_bento() -> None:
    old, new = series("iris", 2)
    svc = bento("svc", "b1", (old.tag,), age=DAY)

    plan = policy.plan(snapshot(old, new, svc), usage(99), config(protect={"pins": ["svc:*"]}), NOW)

    assert removed(plan) == [new.tag]
    (kept,) = [kept for kept in plan.kept if kept.version == old]
    assert kept.reasons == ("referenced",)
    assert kept.referenced_by == ("svc:b1",)


def test_a_referenced_model_goes_right_after_the_last_bento_that_needed_it() -> None:
    # The model is the oldest version, but it can only go once svc:b1 has gone.
    model, other = record("iris", "m1", age=30 * DAY), record("mnist", "m2", age=20 * DAY)
    svc = bento("svc", "b1", (model.tag,), age=25 * DAY)

    plan = policy.plan(snapshot(model, other, svc), usage(99), config(), NOW)

    assert removed(plan) == ["svc:b1", "iris:m1", "mnist:m2"]


def test_a_model_two_bentos_need_goes_only_after_both() -> None:
    model = record("iris", "m1", age=30 * DAY)
    first, second = (
        bento("svc", "b1", (model.tag,), age=25 * DAY),
        bento("svc", "b2", (model.tag,), age=5 * DAY),
    )
    filler = record("mnist", "m2", age=10 * DAY)

    plan = policy.plan(snapshot(model, first, second, filler), usage(99), config(), NOW)

    assert removed(plan) == ["svc:b1", "mnist:m2", "svc:b2", "iris:m1"]


def test_a_model_a_protected_bento_needs_is_never_removed() -> None:
    model = record("iris", "m1", age=30 * DAY)
    svc = bento("svc", "b1", (model.tag,), age=25 * DAY)

    plan = policy.plan(snapshot(model, svc), usage(99), config(protect={"pins": ["svc:*"]}), NOW)

    assert removed(plan) == []
    assert kept_reasons(plan) == {"iris:m1": ("referenced",), "svc:b1": ("pinned",)}


def test_when_a_bento_is_not_needed_for_the_target_its_model_waits_in_the_reserve() -> None:
    model = record("iris", "m1", age=30 * DAY, size=10_000)
    svc = bento("svc", "b1", (model.tag,), age=25 * DAY, size=10_000)

    # 86% -> 75%: 11 000 bytes; the bento alone is not enough, so both go.
    plan = policy.plan(snapshot(model, svc), usage(86), config(), NOW)
    assert removed(plan) == ["svc:b1", "iris:m1"]

    # 85.5% -> 75%: the bento's 10 000 bytes are not enough either; at 80% it is.
    plan = policy.plan(
        snapshot(model, svc),
        usage(85),
        config(trigger={"high_percent": 85, "low_percent": 76}),
        NOW,
    )
    assert removed(plan) == ["svc:b1"]
    assert [removal.version.tag for removal in plan.reserve] == ["iris:m1"]


def test_retention_of_a_bento_frees_its_model_for_its_own_retention() -> None:
    model_old, model_new = series("iris", 2)
    svc_old = bento("svc", "b1", (model_old.tag,), age=30 * DAY)
    svc_new = bento("svc", "b2", (model_new.tag,), age=DAY)

    plan = policy.plan(
        snapshot(model_old, model_new, svc_old, svc_new),
        usage(10),
        config(retention={"max_versions": 1}),
        NOW,
    )

    assert removed(plan) == ["svc:b1", model_old.tag]
    assert [removal.reason for removal in plan.removals] == ["max_versions", "max_versions"]


def test_a_bento_by_name_latest_needs_the_version_latest_names() -> None:
    old, new = series("iris", 2)
    svc = bento("svc", "b1", ("iris:latest",), age=DAY)

    plan = policy.plan(
        snapshot(old, new, svc, latest={("models", "iris"): old.version}),
        usage(99),
        config(protect={"pins": ["svc:*"]}),
        NOW,
    )

    assert removed(plan) == [new.tag]
    assert kept_reasons(plan)[old.tag] == ("referenced",)


def test_a_bento_being_written_blocks_every_model_removal_while_it_settles() -> None:
    models = series("iris", 3)
    building = bento("svc", "b1", None, changed=timedelta(minutes=2))

    plan = policy.plan(snapshot(*models, building), usage(99), config(protect={"settle": 600}), NOW)

    assert removed(plan) == []
    assert plan.references.unknown == (building,)
    assert all("references_unknown" in kept.reasons for kept in plan.kept if kept.version in models)


def test_a_half_written_bento_older_than_settle_is_a_crashed_build_and_blocks_nothing() -> None:
    models = series("iris", 3)
    crashed = bento("svc", "b1", None, changed=timedelta(minutes=11))

    plan = policy.plan(snapshot(*models, crashed), usage(99), config(protect={"settle": 600}), NOW)

    assert plan.references.unknown == ()
    assert removed(plan) == [model.tag for model in models]


def test_a_bento_yaml_changed_in_the_last_seconds_is_not_trusted_yet() -> None:
    model = record("iris", "m1")
    fresh = bento("svc", "b1", (), changed=timedelta(seconds=1))

    plan = policy.plan(snapshot(model, fresh), usage(99), config(protect={"settle": 600}), NOW)

    assert removed(plan) == []
    assert plan.references.unknown == (fresh,)


def test_a_bento_whose_bento_yaml_cannot_be_read_blocks_model_removals_until_fixed() -> None:
    model = record("iris", "m1")
    unreadable = bento("svc", "b1", None, changed=30 * DAY, readable=False)

    plan = policy.plan(snapshot(model, unreadable), usage(99), config(), NOW)

    assert removed(plan) == []
    assert plan.references.unknown == (unreadable,)


def test_bentos_of_an_unmanaged_kind_and_bentos_being_built_still_protect_models() -> None:
    kept_by_other, kept_by_staging, free = (
        record("iris", "m1", age=30 * DAY),
        record("iris", "m2", age=29 * DAY),
        record("iris", "m3", age=28 * DAY),
    )
    other = bento("svc", "b1", (kept_by_other.tag,), age=DAY)
    staging = replace(
        bento("svc", "bentoml_bento_svcabcd1234", (kept_by_staging.tag,), changed=timedelta(0)),
        last_change=NOW - timedelta(seconds=30),
    )
    store = replace(
        snapshot(kept_by_other, kept_by_staging, free), others=(other,), staging=(staging,)
    )

    plan = policy.plan(store, usage(99), config(kinds=["models"], protect={"settle": 600}), NOW)

    assert removed(plan) == [free.tag]
    assert kept_reasons(plan) == {
        kept_by_other.tag: ("referenced",),
        kept_by_staging.tag: ("referenced",),
    }


def test_a_build_directory_left_by_a_crashed_build_protects_nothing_after_settle() -> None:
    model = record("iris", "m1")
    staging = bento("svc", "bentoml_bento_svcabcd1234", (model.tag,), changed=timedelta(minutes=11))
    store = replace(snapshot(model), staging=(staging,))

    plan = policy.plan(store, usage(99), config(protect={"settle": 600}), NOW)

    assert removed(plan) == [model.tag]


def test_bento_references_off_protects_nothing() -> None:
    model = record("iris", "m1", age=30 * DAY)
    svc = bento("svc", "b1", (model.tag,), age=DAY)
    building = bento("svc", "b2", None, changed=timedelta(seconds=5))

    plan = policy.plan(
        snapshot(model, svc, building),
        usage(99),
        config(protect={"bento_references": False, "pins": ["svc:*"]}),
        NOW,
    )

    assert removed(plan) == [model.tag]


def test_a_model_tag_no_version_in_the_store_carries_is_reported_missing() -> None:
    svc = bento("svc", "b1", ("iris:gone", "iris:latest"), age=DAY)

    plan = policy.plan(snapshot(svc), usage(10), config(), NOW)

    assert [(bento.tag, tag) for bento, tag in plan.references.missing] == [
        ("svc:b1", "iris:gone"),
        ("svc:b1", "iris:latest"),
    ]


def test_an_explicit_delete_is_refused_for_a_model_a_bento_needs() -> None:
    model = record("iris", "m1")
    svc = bento("svc", "b1", (model.tag,))
    references = policy.references_of(snapshot(model, svc), config(), NOW)

    blockers = policy.explicit_blockers(
        model, config=config(), now=NOW, in_use={}, references=references
    )

    assert blockers == ["referenced"]


# -- time in this store --------------------------------------------------------------------


def test_an_imported_version_goes_by_when_it_arrived_not_when_it_was_created() -> None:
    imported = replace(record("iris", "old-import", age=100 * DAY), arrived=NOW - DAY)
    native = record("iris", "native", age=50 * DAY)

    plan = policy.plan(snapshot(imported, native), usage(99), config(), NOW)

    assert removed(plan) == ["iris:native", "iris:old-import"]


def test_min_age_counts_from_arrival_for_an_imported_version() -> None:
    imported = replace(
        record("iris", "old-import", age=100 * DAY), arrived=NOW - timedelta(minutes=5)
    )

    plan = policy.plan(snapshot(imported), usage(99), config(protect={"min_age": 3600}), NOW)

    assert removed(plan) == []
    assert kept_reasons(plan) == {"iris:old-import": ("min_age",)}


def test_max_age_counts_from_arrival_too() -> None:
    imported = replace(record("iris", "old-import", age=100 * DAY), arrived=NOW - DAY)

    plan = policy.plan(
        snapshot(imported), usage(10), config(retention={"max_age": 30 * 86400}), NOW
    )

    assert removed(plan) == []


def test_an_empty_bento_blocks_model_removals_while_models_that_came_after_it_are_written() -> None:
    # `bentoml import` makes the bento's directory, copies its models in, then the bento.
    importing = replace(
        bento("svc", "b1", None, changed=timedelta(minutes=30)), arrived=NOW - timedelta(minutes=30)
    )
    copied = replace(
        record("aa", "m1", age=200 * DAY, changed=timedelta(minutes=29)),
        arrived=NOW - timedelta(minutes=29),
    )
    copying = replace(
        record("bb", "m2", age=200 * DAY, changed=timedelta(seconds=30)),
        arrived=NOW - timedelta(minutes=1),
    )
    old = record("cc", "m3", age=300 * DAY)
    store = snapshot(importing, copied, copying, old)
    settle = {"settle": 600}

    plan = policy.plan(store, usage(99), config(protect=settle), NOW)

    assert plan.references.unknown == (importing,)
    assert removed(plan) == []
    # Once every model has been written (settled), an empty bento is a crashed import.
    done = replace(copying, last_change=NOW - timedelta(minutes=20))
    plan = policy.plan(
        snapshot(importing, copied, done, old), usage(99), config(protect=settle), NOW
    )
    assert plan.references.unknown == ()
    assert "cc:m3" in removed(plan)

"""``storewarden why``: each rule's verdict, the removal order, the usage a version goes at.

Examples on hand-built snapshots, then properties on the planner's random
cases: what ``explain`` says agrees with what :func:`policy.plan` does, on
every version, and the usage it names is exactly where the real planner
starts removing it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given

from storewarden import explain, policy
from storewarden.store import VersionRecord
from storewarden.usage import Usage
from tests.storebuilder import NOW
from tests.unit.test_policy import CAPACITY, DAY, config, record, series, snapshot, usage
from tests.unit.test_policy_properties import PROPERTY_SETTINGS, Case, cases


def holding(explanation: explain.Explanation) -> set[str]:
    """Return the rules whose verdict holds."""
    return {verdict.rule for verdict in explanation.verdicts if verdict.holds}


def detail(explanation: explain.Explanation, rule: str) -> dict[str, object]:
    """Return one rule's detail."""
    return dict(next(v.detail for v in explanation.verdicts if v.rule == rule))


def plan_at(case_snapshot: object, used: int, cfg: object, **kwargs: object) -> policy.Plan:
    """Return the real plan at ``used`` bytes of the CAPACITY filesystem."""
    return policy.plan(
        case_snapshot,  # type: ignore[arg-type]
        Usage(CAPACITY, used, CAPACITY - used, 40_000),
        cfg,  # type: ignore[arg-type]
        NOW,
        **kwargs,  # type: ignore[arg-type]
    )


def removes(plan: policy.Plan, version: VersionRecord) -> bool:
    """Return whether the plan removes ``version``."""
    return any(removal.version.path == version.path for removal in plan.removals)


# -- verdicts ------------------------------------------------------------------------------


def test_every_rule_has_a_verdict_and_a_pin_names_the_glob_that_matched() -> None:
    versions = series("iris", 3)
    cfg = config(protect={"pins": ["iris:iri00", "bert:*"]})

    found = explain.explain(
        versions[0], snapshot(*versions), usage(50), cfg, NOW, in_use={}, pins=["iri*:*"]
    )

    assert [verdict.rule for verdict in found.verdicts] == list(explain.RULES)
    assert holding(found) == {"pinned"}
    assert detail(found, "pinned")["globs"] == ["iris:iri00", "iri*:*"]
    assert found.outcome == "kept"
    assert found.protected_by == ("pinned",)
    assert found.never == ("pinned",)
    assert found.going is None


def test_keep_last_gives_the_position_among_the_newest_complete_versions() -> None:
    versions = series("iris", 4)
    cfg = config(protect={"keep_last": 2})
    shot = snapshot(*versions)

    second = explain.explain(versions[2], shot, usage(50), cfg, NOW, in_use={}, pins=[])
    third = explain.explain(versions[1], shot, usage(50), cfg, NOW, in_use={}, pins=[])

    assert holding(second) == {"keep_last"}
    assert detail(second, "keep_last") == {"keep_last": 2, "position": 2, "complete_versions": 4}
    assert "keep_last" not in holding(third)
    assert detail(third, "keep_last")["position"] == 3


def test_in_use_names_the_process_id_and_command() -> None:
    versions = series("iris", 2)
    holder = "pid 4242 (python) has /srv/bentoml/models/iris/iri00/weights.bin open"

    found = explain.explain(
        versions[0],
        snapshot(*versions),
        usage(50),
        config(),
        NOW,
        in_use={versions[0].path: holder},
        pins=[],
    )

    assert holding(found) == {"in_use"}
    assert detail(found, "in_use") == {"holder": holder, "pid": 4242, "command": "python"}


def test_a_model_a_bento_needs_names_the_bento() -> None:
    model = record("iris", "v1", age=20 * DAY)
    bento = record("svc", "b1", kind="bentos", age=10 * DAY)
    bento = replace(bento, references=("iris:v1",))

    found = explain.explain(
        model,
        snapshot(model, bento, latest={("bentos", "svc"): "b1"}),
        usage(50),
        config(protect={"keep_latest": True}),
        NOW,
        in_use={},
        pins=[],
    )

    assert holding(found) == {"referenced"}
    assert detail(found, "referenced")["bentos"] == ["svc:b1"]
    assert found.never == ("referenced",)


# -- where it goes -------------------------------------------------------------------------


def test_a_version_goes_once_usage_reaches_the_high_mark_if_the_prune_reaches_it() -> None:
    versions = series("iris", 10, size=4000)
    shot = snapshot(*versions)
    cfg = config()

    third = explain.explain(versions[2], shot, usage(50), cfg, NOW, in_use={}, pins=[])

    # 85% starts a prune that frees 10 000 bytes: three versions of 4 000 bytes.
    assert third.place == explain.Place(3, 10, 8000, 0)
    assert third.going is not None
    assert third.going.used_bytes == 85_000
    assert third.going.more_bytes == 35_000
    assert removes(plan_at(shot, 85_000, cfg), versions[2])
    assert not removes(plan_at(shot, 84_999, cfg), versions[2])


def test_a_later_version_needs_the_bytes_above_the_low_mark_to_reach_past_the_older_ones() -> None:
    versions = series("iris", 10, size=4000)
    shot = snapshot(*versions)
    cfg = config()

    fifth = explain.explain(versions[4], shot, usage(50), cfg, NOW, in_use={}, pins=[])

    # Four older versions (16 000 bytes) go first; 75 000 + 16 000 must be exceeded.
    assert fifth.going is not None
    assert fifth.going.used_bytes == 91_001
    assert round(fifth.going.used_percent, 3) == 91.001
    assert removes(plan_at(shot, 91_001, cfg), versions[4])
    assert not removes(plan_at(shot, 91_000, cfg), versions[4])


def test_retention_removals_go_first_and_count_before_pressure() -> None:
    old = record("scratch", "s1", age=50 * DAY, size=5000)
    versions = series("iris", 5, size=4000)
    cfg = config(rules=[{"match": "scratch", "max_age": "40d"}])
    shot = snapshot(old, *versions)

    aged = explain.explain(old, shot, usage(50), cfg, NOW, in_use={}, pins=[])
    first = explain.explain(versions[0], shot, usage(50), cfg, NOW, in_use={}, pins=[])

    assert aged.outcome == "removed_now"
    assert aged.reason == "max_age"
    assert aged.mandatory_at == NOW
    assert first.place == explain.Place(1, 5, 0, 5000)
    assert first.going is not None
    assert first.going.used_bytes == 85_000  # 75 000 + 5 000 + 1 is below the trigger


def test_a_version_protected_for_a_while_is_placed_as_it_will_be_when_that_ends() -> None:
    versions = [*series("iris", 3, size=4000), record("iris", "new", age=timedelta(minutes=10))]
    shot = snapshot(*versions)
    cfg = config(protect={"min_age": "1h"})

    found = explain.explain(versions[3], shot, usage(50), cfg, NOW, in_use={}, pins=[])

    assert found.outcome == "kept"
    assert found.protected_by == ("min_age",)
    assert found.protected_until == NOW + timedelta(minutes=50)
    assert found.going is not None
    assert found.going.after == NOW + timedelta(minutes=50)
    assert found.place is not None
    assert found.place.position == 4


def test_a_version_beyond_a_full_disk_says_so() -> None:
    versions = series("iris", 30, size=4000)

    last = explain.explain(
        versions[-2], snapshot(*versions), usage(50), config(), NOW, in_use={}, pins=[]
    )

    assert last.going is not None
    assert last.going.used_bytes > CAPACITY
    assert last.beyond


# -- properties: explain agrees with the planner -------------------------------------------


@PROPERTY_SETTINGS
@given(cases())
def test_explain_agrees_with_the_plan_on_every_version(case: Case) -> None:
    plan = policy.plan(
        case.snapshot, case.usage, case.config, NOW, in_use=case.in_use, pins=case.pins
    )
    kept = {item.version.path: item.reasons for item in plan.kept}
    removed = {removal.version.path: removal.reason for removal in plan.removals}
    for version in case.snapshot.versions:
        found = explain.explain(
            version,
            case.snapshot,
            case.usage,
            case.config,
            NOW,
            in_use=case.in_use,
            pins=case.pins,
        )
        protections = holding(found) & explain.policy_reasons()
        if version.path in kept:
            assert found.outcome == "kept"
            assert set(kept[version.path]) <= protections | {"referenced"}
            if version.complete:
                assert set(kept[version.path]) == protections or kept[version.path] == (
                    "referenced",
                )
        elif version.path in removed:
            assert found.outcome == "removed_now"
            assert found.reason == removed[version.path]
        else:
            assert not protections - {"referenced", "references_unknown"} or not version.complete


@PROPERTY_SETTINGS
@given(cases())
def test_the_usage_explain_names_is_exactly_where_the_planner_starts_removing(case: Case) -> None:
    capacity = case.usage.used + case.usage.free
    for version in case.snapshot.versions:
        found = explain.explain(
            version,
            case.snapshot,
            case.usage,
            case.config,
            NOW,
            in_use=case.in_use,
            pins=case.pins,
        )
        if found.going is None or found.beyond:
            continue
        moment = NOW if found.going.after is None else found.going.after + timedelta(microseconds=1)
        used = found.going.used_bytes

        def at(bytes_used: int, moment: object = moment) -> policy.Plan:
            return policy.plan(
                case.snapshot,
                Usage(capacity, bytes_used, capacity - bytes_used, case.usage.store_bytes),
                case.config,
                moment,  # type: ignore[arg-type]
                in_use=case.in_use,
                pins=case.pins,
            )

        assert removes(at(used), version), (version.tag, used)
        if used > 0:
            assert not removes(at(used - 1), version), (version.tag, used)

"""The metrics: what each series says after a check and a cycle, read back from the text format.

Records, plans and cycle results are built in memory and the clock is
injected; the exposition is parsed as a scraper parses it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from storewarden import __version__, policy
from storewarden.config import build_config
from storewarden.engine import CycleResult
from storewarden.metrics import Metrics, totals
from storewarden.policy import Kept, Plan, Removal, Target
from storewarden.prune import RemovalOutcome
from storewarden.store import Kind, VersionRecord
from storewarden.usage import Usage
from tests.promtext import Samples, parse
from tests.storebuilder import NOW

ROOT = Path("/srv/bentoml")
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
RULES = Path(__file__).resolve().parents[2] / "config" / "prometheus" / "storewarden.rules.yml"
CLOCK = 1_800_000_000.0
TARGET = Target(75.0, None, None)


def record(name: str, version: str, *, kind: Kind = "models", size: int = 1000) -> VersionRecord:
    """Return a complete version of ``size`` bytes."""
    return VersionRecord(
        kind=kind,
        name=name,
        version=version,
        path=ROOT / kind / name / version,
        creation_time=NOW,
        creation_time_estimated=False,
        labels={},
        bytes=size,
        last_change=NOW,
        complete=True,
    )


def usage(used: int = 900, free: int = 100, store_bytes: int = 0) -> Usage:
    """Return a filesystem with ``used`` and ``free`` bytes (total = used + free + 10 reserved)."""
    return Usage(total=used + free + 10, used=used, free=free, store_bytes=store_bytes)


def plan(
    *,
    triggers: tuple[str, ...] = ("high_percent",),
    removals: tuple[Removal, ...] = (),
    reserve: tuple[Removal, ...] = (),
    kept: tuple[Kept, ...] = (),
    shortfall: int = 0,
) -> Plan:
    """Return a plan with these parts, starting at 90% used."""
    return Plan(triggers, usage(), TARGET, removals, reserve, kept, usage(), shortfall)


def removed(removal: Removal, freed: int | None = None) -> RemovalOutcome:
    """Return the outcome of carrying out ``removal``."""
    freed = removal.bytes if freed is None else freed
    return RemovalOutcome(removal.version, freed, None, None)


def metrics() -> Metrics:
    """Return metrics for a store of models and bentos, with the clock at CLOCK."""
    result = Metrics(clock=lambda: CLOCK)
    result.configure(build_config({"store": str(ROOT)}))
    return result


def samples(source: Metrics) -> Samples:
    """Return the exposition of ``source`` as a scraper parses it."""
    return parse(source.exposition().decode("utf-8"))


# -- the store and the filesystem ---------------------------------------------------------


def test_store_bytes_and_versions_are_summed_by_kind() -> None:
    source = metrics()
    versions = [
        record("iris", "v1", size=100),
        record("iris", "v2", size=200),
        record("svc", "b1", kind="bentos", size=50),
    ]

    source.observe(*totals(versions), usage())

    read = samples(source)
    assert read.labelled("storewarden_store_bytes", "kind") == {"models": 300, "bentos": 50}
    assert read.labelled("storewarden_store_versions", "kind") == {"models": 2, "bentos": 1}


def test_a_configured_kind_without_versions_reports_zero_not_nothing() -> None:
    source = metrics()

    source.observe(*totals([record("iris", "v1")]), usage())

    assert samples(source).value("storewarden_store_versions", kind="bentos") == 0


def test_a_kind_whose_last_version_went_drops_to_zero() -> None:
    source = metrics()
    source.observe(*totals([record("svc", "b1", kind="bentos")]), usage())

    source.observe(*totals([]), usage())

    assert samples(source).value("storewarden_store_bytes", kind="bentos") == 0


def test_the_used_ratio_is_used_over_used_plus_free_as_df_shows_it() -> None:
    source = metrics()

    source.observe(*totals([]), usage(used=600, free=400))

    read = samples(source)
    assert read.value("storewarden_filesystem_used_ratio") == pytest.approx(0.6)
    assert read.value("storewarden_filesystem_free_bytes") == 400
    assert read.value("storewarden_filesystem_size_bytes") == 1010


def test_an_empty_filesystem_reading_gives_a_zero_ratio_not_a_division_error() -> None:
    source = metrics()

    source.observe(*totals([]), usage(used=0, free=0))

    assert samples(source).value("storewarden_filesystem_used_ratio") == 0


def test_each_check_stamps_the_last_check_time() -> None:
    source = metrics()

    source.observe(*totals([]), usage())

    assert samples(source).value("storewarden_last_check_timestamp_seconds") == CLOCK


# -- prune cycles -------------------------------------------------------------------------


def test_removals_and_bytes_freed_are_counted_by_the_reason_each_had() -> None:
    source = metrics()
    retention = Removal(record("iris", "v1", size=100), policy.MAX_VERSIONS)
    pressure = Removal(record("bert", "v1", size=1000), "high_percent")
    from_reserve = Removal(record("bert", "v2", size=2000), "high_percent")
    cycle = CycleResult(
        "run1",
        plan(removals=(retention, pressure), reserve=(from_reserve,)),
        dry_run=False,
        removed=(removed(retention), removed(pressure, 900), removed(from_reserve)),
        usage_after=usage(used=100, free=900),
        seconds=2.5,
    )

    source.observe(*totals([]), usage(), cycle)

    read = samples(source)
    assert read.labelled("storewarden_removals_total", "reason") == {
        "high_percent": 2,
        "min_free": 0,
        "max_store_size": 0,
        "max_versions": 1,
        "max_age": 0,
        "abandoned": 0,
        "explicit": 0,
    }
    assert read.value("storewarden_bytes_freed_total", reason="high_percent") == 2900
    assert read.value("storewarden_bytes_freed_total", reason="max_versions") == 100


def test_counters_add_up_over_cycles() -> None:
    source = metrics()
    for index in range(3):
        removal = Removal(record("iris", f"v{index}", size=10), "high_percent")
        cycle = CycleResult(
            f"run{index}", plan(removals=(removal,)), dry_run=False, removed=(removed(removal),)
        )
        source.observe(*totals([]), usage(), cycle)

    read = samples(source)
    assert read.value("storewarden_removals_total", reason="high_percent") == 3
    assert read.value("storewarden_bytes_freed_total", reason="high_percent") == 30
    assert read.value("storewarden_prune_duration_seconds_count") == 3


def test_a_prune_records_its_time_duration_and_that_it_reached_its_target() -> None:
    source = metrics()
    removal = Removal(record("iris", "v1"), "high_percent")
    cycle = CycleResult(
        "run1",
        plan(removals=(removal,)),
        dry_run=False,
        removed=(removed(removal),),
        usage_after=usage(used=100, free=900),
        seconds=2.5,
    )

    source.observe(*totals([]), usage(), cycle)

    read = samples(source)
    assert read.value("storewarden_last_prune_timestamp_seconds") == CLOCK
    assert read.value("storewarden_last_prune_target_reached") == 1
    assert read.value("storewarden_last_prune_shortfall_bytes") == 0
    assert read.value("storewarden_prune_duration_seconds_sum") == 2.5
    assert read.value("storewarden_prune_duration_seconds_bucket", le="1.0") == 0
    assert read.value("storewarden_prune_duration_seconds_bucket", le="5.0") == 1


def test_a_prune_short_of_its_target_sets_target_reached_to_zero_and_the_shortfall() -> None:
    source = metrics()
    cycle = CycleResult(
        "run1", plan(shortfall=150), dry_run=False, usage_after=usage(used=900, free=100)
    )

    source.observe(*totals([]), usage(), cycle)

    read = samples(source)
    assert read.value("storewarden_last_prune_target_reached") == 0
    # 90% used against a 75% target: 900 - 750 bytes to go.
    assert read.value("storewarden_last_prune_shortfall_bytes") == 150


def test_a_later_prune_that_reaches_its_target_clears_the_alert() -> None:
    source = metrics()
    source.observe(
        *totals([]), usage(), CycleResult("run1", plan(), dry_run=False, usage_after=usage())
    )

    source.observe(
        *totals([]),
        usage(),
        CycleResult("run2", plan(), dry_run=False, usage_after=usage(100, 900)),
    )

    assert samples(source).value("storewarden_last_prune_target_reached") == 1


def test_a_missed_target_clears_once_usage_is_back_under_it_without_a_prune() -> None:
    source = metrics()
    source.observe(*totals([]), usage(), CycleResult("run1", plan(shortfall=150), dry_run=False))

    source.observe(*totals([]), usage(used=700, free=300))  # someone freed space: 70% < 75%

    read = samples(source)
    assert read.value("storewarden_last_prune_target_reached") == 1
    assert read.value("storewarden_last_prune_shortfall_bytes") == 0


def test_a_missed_target_stays_while_usage_is_between_the_marks() -> None:
    source = metrics()
    source.observe(*totals([]), usage(), CycleResult("run1", plan(shortfall=150), dry_run=False))

    source.observe(*totals([]), usage(used=800, free=200))  # 80%: under high_percent, above low

    assert samples(source).value("storewarden_last_prune_target_reached") == 0


def test_a_dry_run_removes_nothing_so_counts_no_removal_but_is_the_last_prune() -> None:
    source = metrics()
    removal = Removal(record("iris", "v1"), "high_percent")
    cycle = CycleResult("run1", plan(removals=(removal,)), dry_run=True, would_remove=(removal,))

    source.observe(*totals([]), usage(), cycle)

    read = samples(source)
    assert read.value("storewarden_removals_total", reason="high_percent") == 0
    assert read.value("storewarden_last_prune_timestamp_seconds") == CLOCK


def test_a_cycle_with_nothing_to_do_is_no_prune_but_updates_the_protected_versions() -> None:
    source = metrics()
    kept = Kept(record("iris", "v1"), (policy.LATEST, policy.KEEP_LAST))
    cycle = CycleResult("run1", plan(triggers=(), kept=(kept,)), dry_run=False)

    source.observe(*totals([]), usage(), cycle)

    read = samples(source)
    assert read.value("storewarden_last_prune_timestamp_seconds") == 0
    assert read.value("storewarden_prune_duration_seconds_count") == 0
    assert read.value("storewarden_protected_versions", reason="latest") == 1


def test_protected_versions_count_a_version_under_each_of_its_reasons_once() -> None:
    source = metrics()
    kept = (
        Kept(record("iris", "v1"), (policy.LATEST, policy.KEEP_LAST)),
        Kept(record("iris", "v0"), (policy.PINNED, policy.PINNED)),
        Kept(record("bert", "v1"), (policy.PINNED,)),
    )

    source.observe(*totals([]), usage(), CycleResult("run1", plan(kept=kept), dry_run=False))

    read = samples(source).labelled("storewarden_protected_versions", "reason")
    assert (read["latest"], read["keep_last"], read["pinned"]) == (1, 1, 2)
    assert read["in_use"] == 0


def test_a_protection_that_lapsed_drops_to_zero_at_the_next_plan() -> None:
    source = metrics()
    kept = (Kept(record("iris", "v1"), (policy.IN_USE,)),)
    source.observe(*totals([]), usage(), CycleResult("run1", plan(kept=kept), dry_run=False))

    source.observe(*totals([]), usage(), CycleResult("run2", plan(), dry_run=False))

    assert samples(source).value("storewarden_protected_versions", reason="in_use") == 0


def test_protected_bytes_count_each_kept_version_once_whatever_its_reasons() -> None:
    source = metrics()
    kept = (
        Kept(record("iris", "v1", size=300), (policy.LATEST, policy.KEEP_LAST)),
        Kept(record("bert", "v1", size=200), (policy.PINNED,)),
    )
    source.observe(*totals([]), usage(), CycleResult("run1", plan(kept=kept), dry_run=False))
    assert samples(source).value("storewarden_protected_bytes") == 500

    source.observe(*totals([]), usage(), CycleResult("run2", plan(), dry_run=False))

    assert samples(source).value("storewarden_protected_bytes") == 0


def test_the_high_mark_is_the_configured_high_percent_as_a_ratio() -> None:
    source = Metrics(clock=lambda: CLOCK)
    source.configure(build_config({"store": str(ROOT), "trigger": {"high_percent": 80}}))

    assert samples(source).value("storewarden_high_mark_ratio") == pytest.approx(0.8)


def test_unreadable_pins_are_reported_until_a_plan_reads_them_again() -> None:
    source = metrics()
    assert samples(source).value("storewarden_pins_unreadable") == 0
    source.observe(*totals([]), usage(), CycleResult("run1", plan(), dry_run=False), 0, True)
    assert samples(source).value("storewarden_pins_unreadable") == 1

    source.observe(*totals([]), usage())  # a check without a plan learns nothing about pins
    assert samples(source).value("storewarden_pins_unreadable") == 1

    source.observe(*totals([]), usage(), CycleResult("run2", plan(), dry_run=False), 0, False)
    assert samples(source).value("storewarden_pins_unreadable") == 0


def test_failed_removals_count_as_removal_failed_errors() -> None:
    source = metrics()
    victims = (record("iris", "v1"), record("iris", "v2"))
    cycle = CycleResult(
        "run1",
        plan(removals=tuple(Removal(victim, "high_percent") for victim in victims)),
        dry_run=False,
        failed=tuple((victim, "Permission denied") for victim in victims),
    )

    source.observe(*totals([]), usage(), cycle)

    read = samples(source)
    assert read.value("storewarden_errors_total", event="removal_failed") == 2
    assert read.value("storewarden_removals_total", reason="high_percent") == 0


def test_errors_are_counted_by_the_event_that_logged_them() -> None:
    source = metrics()

    source.count_error("check_failed")
    source.count_error("check_failed")
    source.count_error("config_rejected")

    read = samples(source).labelled("storewarden_errors_total", "event")
    assert read == {
        "check_failed": 2,
        "config_rejected": 1,
        "removal_failed": 0,
        "metrics_failed": 0,
    }


# -- before anything happened, and between daemons ----------------------------------------


def test_before_any_prune_the_target_counts_as_reached_so_no_alert_fires_at_start() -> None:
    read = samples(metrics())

    assert read.value("storewarden_last_prune_target_reached") == 1
    assert read.value("storewarden_last_prune_timestamp_seconds") == 0


def test_the_info_series_names_the_version() -> None:
    read = samples(metrics())

    assert read.value("storewarden_info", version=__version__) == 1


def test_every_sample_is_labelled_with_its_store() -> None:
    source = metrics()
    source.observe(*totals([record("iris", "v1")]), usage())

    assert samples(source).stores == {str(ROOT)}


def test_two_wardens_textfiles_in_one_collector_directory_do_not_collide() -> None:
    # node_exporter merges every *.prom file into one scrape: same series, same labels = error.
    first, second = metrics(), Metrics(clock=lambda: CLOCK)
    second.configure(build_config({"store": "/srv/other"}))
    for source in (first, second):
        source.observe(*totals([record("iris", "v1")]), usage())

    merged = parse(first.exposition().decode() + second.exposition().decode(), keep_store=True)

    assert merged.value("storewarden_store_versions", kind="models", store="/srv/other") == 1
    assert merged.value("storewarden_store_versions", kind="models", store=str(ROOT)) == 1


def test_a_reload_that_drops_a_kind_drops_its_series() -> None:
    source = metrics()
    source.observe(*totals([record("svc", "b1", kind="bentos")]), usage())

    source.configure(build_config({"store": str(ROOT), "kinds": ["models"]}))
    source.observe(*totals([record("iris", "v1")]), usage())

    assert set(samples(source).labelled("storewarden_store_bytes", "kind")) == {"models"}


def test_two_daemons_in_one_process_keep_their_series_apart() -> None:
    first, second = metrics(), metrics()
    removal = Removal(record("iris", "v1"), "high_percent")
    cycle = CycleResult(
        "run1", plan(removals=(removal,)), dry_run=False, removed=(removed(removal),)
    )

    first.observe(*totals([record("iris", "v1")]), usage(), cycle)

    assert samples(first).value("storewarden_removals_total", reason="high_percent") == 1
    assert samples(second).value("storewarden_removals_total", reason="high_percent") == 0
    assert samples(second).value("storewarden_store_versions", kind="models") == 0


def test_the_series_have_the_names_the_issue_and_prometheus_conventions_ask_for() -> None:
    names = {name for name, _labels in samples(metrics()).values}

    assert names >= {
        "storewarden_info",
        "storewarden_store_bytes",
        "storewarden_store_versions",
        "storewarden_filesystem_used_ratio",
        "storewarden_removals_total",
        "storewarden_bytes_freed_total",
        "storewarden_last_prune_timestamp_seconds",
        "storewarden_prune_duration_seconds_bucket",
        "storewarden_protected_versions",
        "storewarden_errors_total",
        "storewarden_last_prune_target_reached",
    }


# -- the operations guide -----------------------------------------------------------------


def exported_names() -> set[str]:
    """Return every sample name the metrics export, after a prune so every series has samples."""
    source = metrics()
    removal = Removal(record("iris", "v1"), "high_percent")
    cycle = CycleResult(
        "run1", plan(removals=(removal,)), dry_run=False, removed=(removed(removal),)
    )
    source.observe(*totals([record("iris", "v1")]), usage(), cycle)
    return {name for name, _labels in samples(source).values}


def test_every_series_the_operations_guide_names_is_exported() -> None:
    named = set(re.findall(r"\bstorewarden_[a-z_]+", OPERATIONS.read_text(encoding="utf-8")))

    histograms = {"storewarden_prune_duration_seconds"}  # named as a family, sampled as _bucket...

    assert named, "the guide names no series"
    assert named - exported_names() == histograms
    assert {f"{name}_bucket" for name in histograms} <= exported_names()


def test_the_operations_guide_tables_every_exported_series() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    tabled = set(re.findall(r"^\| `(storewarden_[a-z_]+)` \|", text, re.MULTILINE))
    suffixes = re.compile(r"_(bucket|sum|count|created|total)$")
    bases = {suffixes.sub("", name) for name in exported_names()}

    assert bases - {suffixes.sub("", name) for name in tabled} == set()


def test_the_shipped_rules_read_only_exported_series() -> None:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}

    read = {name for rule in rules for name in re.findall(r"\bstorewarden_[a-z_]+", rule["expr"])}

    assert read, "the rules read no storewarden series"
    assert read - exported_names() == set()
    assert all(name.startswith("storewarden:") for name in recorded)
    target = next(rule for rule in rules if rule.get("alert") == "StorewardenTargetMissed")
    assert target["expr"] == "storewarden_last_prune_target_reached == 0"

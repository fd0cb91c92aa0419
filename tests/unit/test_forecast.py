"""The fill forecast on synthetic histories: steady, bursty, with prunes, with clock jumps."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from storewarden import forecast
from storewarden.config import build_config
from storewarden.history import Sample
from storewarden.usage import Usage

GIB = 1024**3
CAPACITY = 1000 * GIB
INTERVAL = 60.0
CONFIG = build_config({"store": "/srv/bentoml"})  # 85 / 75, checks every 60 s
START = 1_800_000_000.0


def steady(count: int, per_sample: int, *, elapsed: bool = True) -> list[Sample]:
    """Return ``count`` samples a check interval apart, each with ``per_sample`` bytes written."""
    return [
        Sample(
            START + index * INTERVAL,
            INTERVAL if elapsed and index else None,
            500 * GIB,
            500 * GIB,
            CAPACITY,
            300 * GIB,
            per_sample if index else 0,
            0,
            100 * GIB,
        )
        for index in range(count)
    ]


def rate_per_day(samples: list[Sample]) -> float:
    """Return the gross rate in bytes per day; fail if there is none."""
    rate = forecast.gross_rate(samples)
    assert rate is not None
    return rate * forecast.DAY


NOW_USAGE = Usage(CAPACITY, 500 * GIB, 500 * GIB, 300 * GIB)


def test_theil_sen_is_the_median_slope() -> None:
    # Six slopes of 1 among the first four points outvote the four the outlier makes.
    assert forecast.theil_sen([(0, 0), (1, 1), (2, 2), (3, 3), (4, 40)]) == 1
    assert forecast.theil_sen([(0, 0), (1, 1), (2, 2), (3, 30)]) == pytest.approx(5.5)
    assert forecast.theil_sen([(1, 5), (1, 7)]) is None


def test_a_steady_writer_gives_its_rate_and_the_times_follow() -> None:
    samples = steady(30, GIB)  # 1 GiB a minute

    found = forecast.forecast(samples, NOW_USAGE, CONFIG, protected_bytes=100 * GIB)

    assert found.rate_bytes_per_day == pytest.approx(1440 * GIB)
    # The high mark is 850 GiB used: 350 GiB away at 1 GiB a minute.
    assert found.high_mark_seconds == pytest.approx(350 * 60, rel=1e-6)
    assert found.disk_full_seconds == pytest.approx(500 * 60, rel=1e-6)
    # The protected bytes do not grow: no prune is ever short of room for them.
    assert found.protected_high_mark_seconds is None


def test_no_forecast_before_the_history_spans_ten_check_intervals() -> None:
    short = forecast.forecast(steady(10, GIB), NOW_USAGE, CONFIG, protected_bytes=0)
    enough = forecast.forecast(steady(11, GIB), NOW_USAGE, CONFIG, protected_bytes=0)

    assert short.span_seconds == 9 * INTERVAL
    assert short.rate_bytes_per_day is None
    assert short.high_mark_seconds is None
    assert enough.high_mark_seconds is not None


def test_nothing_written_gives_no_times() -> None:
    found = forecast.forecast(steady(30, 0), NOW_USAGE, CONFIG, protected_bytes=0)

    assert found.rate_bytes_per_day == 0
    assert found.high_mark_seconds is None
    assert found.disk_full_seconds is None


def test_growing_protected_bytes_foresee_the_prune_that_cannot_help() -> None:
    samples = [
        replace(sample, protected=100 * GIB + index * GIB)
        for index, sample in enumerate(steady(30, GIB))
    ]

    found = forecast.forecast(samples, NOW_USAGE, CONFIG, protected_bytes=129 * GIB)

    # 850 GiB high mark - 200 GiB of others - 129 GiB protected, at 1 GiB a minute.
    assert found.protected_high_mark_seconds == pytest.approx(521 * 60, rel=1e-6)


def test_a_time_under_the_horizon_is_a_warning_and_null_turns_them_off() -> None:
    found = forecast.forecast(steady(30, GIB), NOW_USAGE, CONFIG, protected_bytes=0)

    assert forecast.warnings(found, 86400) == {
        "high_mark": found.high_mark_seconds,
        "disk_full": found.disk_full_seconds,
    }
    assert forecast.warnings(found, 60) == {}
    assert forecast.warnings(found, None) == {}


@settings(deadline=None, max_examples=100)
@given(
    count=st.integers(20, 150),
    per_sample=st.integers(1, 10 * GIB),
    burst=st.integers(1, 1000 * GIB),
    where=st.floats(0, 1),
)
def test_a_single_burst_away_from_the_window_middle_does_not_move_the_rate(
    count: int, per_sample: int, burst: int, where: float
) -> None:
    samples = steady(count, per_sample)
    position = 1 + int(where * (count - 2))
    # Theil-Sen: the pairs spanning a step are fewer than half unless it sits within
    # sqrt(n)/2 points of the middle.
    assume(abs(count - 2 * position) > math.sqrt(count) + 2)
    samples[position] = replace(samples[position], written=per_sample + burst)

    assert rate_per_day(samples) == pytest.approx(per_sample * 1440, rel=1e-9)


@settings(deadline=None, max_examples=100)
@given(
    count=st.integers(12, 150),
    per_sample=st.integers(0, 10 * GIB),
    freed=st.lists(st.integers(0, 500 * GIB), min_size=150, max_size=150),
)
def test_prunes_free_bytes_without_changing_the_gross_rate(
    count: int, per_sample: int, freed: list[int]
) -> None:
    samples = steady(count, per_sample)
    pruned = [
        replace(sample, freed=freed[index], store=max(0, sample.store - freed[index]))
        for index, sample in enumerate(samples)
    ]

    assert forecast.gross_rate(pruned) == forecast.gross_rate(samples)


@settings(deadline=None, max_examples=100)
@given(
    count=st.integers(12, 150),
    per_sample=st.integers(1, 10 * GIB),
    jumps=st.lists(st.integers(-86400 * 30, 86400 * 30), min_size=150, max_size=150),
)
def test_clock_jumps_between_checks_do_not_bend_the_time_axis(
    count: int, per_sample: int, jumps: list[int]
) -> None:
    samples = steady(count, per_sample)
    offset = 0.0
    jumped = []
    for index, sample in enumerate(samples):
        offset += jumps[index] if index % 7 == 3 else 0
        jumped.append(replace(sample, time=sample.time + offset))

    assert rate_per_day(jumped) == pytest.approx(per_sample * 1440, rel=1e-9)


def test_a_restart_counts_the_wall_clock_gap_and_a_backward_step_as_no_time() -> None:
    samples = steady(5, GIB)
    restarted = [*samples, replace(samples[-1], time=samples[-1].time + 600, elapsed=None)]
    stepped_back = [*samples, replace(samples[-1], time=samples[-1].time - 600, elapsed=None)]

    assert forecast.time_axis(restarted)[-1] == 4 * INTERVAL + 600
    assert forecast.time_axis(stepped_back)[-1] == 4 * INTERVAL


def test_bursty_writes_at_a_steady_average_give_about_that_average() -> None:
    # 6 GiB every sixth check, as an agent saving a model every few minutes.
    samples = [
        replace(sample, written=6 * GIB if index % 6 == 0 and index else 0)
        for index, sample in enumerate(steady(300, 0))
    ]

    assert rate_per_day(samples) == pytest.approx(1440 * GIB, rel=0.05)


def test_the_first_used_byte_at_a_percent_is_where_the_planner_sees_it_reached() -> None:
    for capacity in (1, 7, 1000, 3 * GIB + 1):
        for percent in (0.0, 33.3, 85.0, 99.99, 100.0):
            used = forecast.first_used_at(capacity, percent)
            assert 100.0 * used / capacity >= percent
            assert used == 0 or 100.0 * (used - 1) / capacity < percent

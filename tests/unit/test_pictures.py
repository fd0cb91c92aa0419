"""The pictures' pure parts: the bar's cells, the marks, the since-filter, thinning, plain text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storewarden import pictures
from storewarden.history import Sample

GIB = 1 << 30
T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()


def sample(hour: int, used_gib: int, *, freed: int = 0, written: int = 0) -> Sample:
    return Sample(
        T0 + hour * 3600,
        3600.0,
        used_gib * GIB,
        (100 - used_gib) * GIB,
        100 * GIB,
        used_gib * GIB // 2,
        written,
        freed,
        GIB,
    )


def test_the_bar_splits_the_filesystem_into_its_shares_and_places_the_marks() -> None:
    cells = pictures.bar(
        used=60 * GIB,
        free=40 * GIB,
        store=40 * GIB,
        protected=10 * GIB,
        high=85,
        low=75,
        width=100,
    )

    assert (cells.protected, cells.store, cells.other, cells.free) == (10, 30, 20, 40)
    assert (cells.low, cells.high) == (75, 85)


@given(
    used=st.integers(0, 10**12),
    free=st.integers(0, 10**12),
    store=st.integers(0, 10**12),
    protected=st.integers(0, 10**12),
    width=st.integers(1, 300),
    high=st.floats(0, 100),
    low=st.floats(0, 100),
)
def test_the_bar_always_fills_its_width_with_no_negative_share(
    used: int, free: int, store: int, protected: int, width: int, high: float, low: float
) -> None:
    cells = pictures.bar(
        used=used, free=free, store=store, protected=protected, high=high, low=low, width=width
    )

    assert cells.width == width
    assert min(cells.protected, cells.store, cells.other, cells.free) >= 0
    assert 0 <= cells.low < width
    assert 0 <= cells.high < width


def test_a_mark_at_100_percent_is_on_the_last_cell() -> None:
    assert pictures.mark_cell(100.0, 50) == 49
    assert pictures.mark_cell(0.0, 50) == 0


def test_the_caption_gives_each_share_and_the_marks() -> None:
    data = {
        "usage": {"used_bytes": 60 * GIB, "free_bytes": 40 * GIB, "used_percent": 60.0},
        "store_bytes": 40 * GIB,
        "protected_bytes": 10 * GIB,
        "marks": {"high_percent": 85.0, "low_percent": 75.0},
    }

    assert pictures.bar_caption(data) == (
        "used 60.0% · store 40.0% · protected 10.0% · low 75% · high 85%"
    )


def test_since_keeps_the_samples_at_or_after_the_start() -> None:
    samples = [sample(hour, 50) for hour in range(10)]
    start = datetime.fromtimestamp(T0 + 7 * 3600, tz=UTC)

    assert pictures.since(samples, start) == samples[7:]
    assert pictures.since(samples, None) == samples


def test_thinning_keeps_the_newest_state_and_the_sums_of_written_and_freed() -> None:
    samples = [sample(hour, 50, written=hour, freed=5 if hour == 33 else 0) for hour in range(100)]

    thinned = pictures.thin(samples, 10)

    assert len(thinned) == 10
    assert thinned[-1].time == samples[-1].time
    assert sum(item.written for item in thinned) == sum(range(100))
    assert [index for index, item in enumerate(thinned) if item.freed] == [3]
    assert pictures.thin(samples[:5], 10) == samples[:5]


def test_the_time_axis_is_in_hours_then_days_before_now() -> None:
    samples = [sample(hour, 50) for hour in range(0, 25)]
    hours, unit = pictures.time_axis(samples, samples[-1].time)
    assert unit == "hours"
    assert hours[0] == pytest.approx(-24.0)
    assert hours[-1] == 0.0

    days, unit = pictures.time_axis(samples, samples[0].time + 4 * 86400)
    assert unit == "days"
    assert days[0] == pytest.approx(-4.0)


def test_the_prunes_are_the_samples_that_freed_bytes() -> None:
    samples = [sample(0, 50), sample(1, 40, freed=GIB), sample(2, 45)]
    assert pictures.prunes(samples) == [1]


def test_the_plain_history_is_a_table_with_the_marks_and_the_prunes() -> None:
    samples = [sample(hour, 50 + hour, freed=GIB if hour == 3 else 0) for hour in range(6)]

    lines = pictures.history_lines(samples, high=85, low=75)

    assert "high 85%, low 75%" in lines[0]
    assert lines[1].split()[:3] == ["TIME", "(UTC)", "USED"]
    assert len(lines) == 2 + 6
    assert lines[2].startswith("2026-11-01 00:00")
    assert "52.0%" in lines[4]
    assert lines[5].endswith("pruned")
    assert not any("\x1b" in line for line in lines)


def test_a_long_plain_history_is_thinned_to_its_rows() -> None:
    samples = [sample(hour % 40, 50) for hour in range(500)]

    lines = pictures.history_lines(samples, high=85, low=75, rows=20)

    assert len(lines) == 2 + 20
    assert "20 rows, neighbours merged" in lines[0]


def test_an_empty_history_says_so() -> None:
    assert pictures.history_lines([], high=85, low=75)[0].startswith("no usage history yet")


def test_the_history_data_lists_the_samples_since_the_start() -> None:
    samples = [sample(hour, 50) for hour in range(4)]
    start = datetime.fromtimestamp(T0 + 2 * 3600, tz=UTC)

    data = pictures.history_data(samples, high=85, low=75, start=start)

    assert data["marks"] == {"high_percent": 85, "low_percent": 75}
    assert data["since"] == start.isoformat()
    assert [item["time"] for item in data["samples"]] == [
        "2026-11-01T02:00:00+00:00",
        "2026-11-01T03:00:00+00:00",
    ]
    assert data["samples"][0]["used_percent"] == 50.0

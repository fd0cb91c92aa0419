"""The usage history's pure parts: the line format, gross growth, downsampling."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storewarden import history
from storewarden.history import HistoryError, Sample
from tests.storebuilder import NOW
from tests.unit.test_policy import record

counts = st.integers(0, 2**50)
samples_strategy = st.builds(
    Sample,
    time=st.floats(0, 4e9).map(lambda value: round(value, 3)),
    elapsed=st.none() | st.floats(0, 1e6).map(lambda value: round(value, 3)),
    used=counts,
    free=counts,
    total=counts,
    store=counts,
    written=counts,
    freed=counts,
    protected=st.none() | counts,
)


@settings(deadline=None, max_examples=100)
@given(st.lists(samples_strategy, max_size=30))
def test_samples_read_back_as_written(samples: list[Sample]) -> None:
    assert history.parse(history.encode(samples)) == samples


def test_a_last_line_a_crash_cut_short_is_ignored() -> None:
    samples = [Sample(1.0, None, 1, 2, 3, 4, 5, 6, None), Sample(2.0, 1.0, 1, 2, 3, 4, 5, 6, 7)]
    data = history.encode(samples)

    assert history.parse(data[:-7]) == samples[:1]


@pytest.mark.parametrize(
    "data",
    [
        b"not json\n",
        b'{"format":"something-else","version":1}\n',
        history.encode([]) + b"[1,2,3]\n",
        history.encode([]) + b"[1,null,1,2,3,4,-5,6,null]\n",
        history.encode([]) + b"{]\n[1,null,1,2,3,4,5,6,null]\n",
    ],
    ids=["not-json", "other-header", "short-sample", "negative", "garbage-line"],
)
def test_a_file_the_warden_did_not_write_is_an_error(data: bytes) -> None:
    with pytest.raises(HistoryError):
        history.parse(data)


def test_growth_counts_what_appeared_or_grew_and_what_left_or_shrank() -> None:
    kept, grown, new = record("a", "v1", size=100), record("a", "v2", size=300), record("b", "v1")
    previous = {kept.path: 100, grown.path: 200, Path("/gone"): 50, new.path.parent: 0}

    written, freed = history.growth(previous, None, [kept, grown, new])

    assert written == 100 + new.bytes
    assert freed == 50


def test_growth_after_a_start_counts_the_versions_that_arrived_since_the_last_sample() -> None:
    old = replace(record("a", "v1", size=100), arrived=NOW - timedelta(hours=2))
    new = replace(record("a", "v2", size=300), arrived=NOW - timedelta(minutes=5))

    assert history.growth(None, (NOW - timedelta(hours=1)).timestamp(), [old, new]) == (300, 0)
    assert history.growth(None, None, [old, new]) == (0, 0)


@settings(deadline=None, max_examples=100)
@given(st.lists(samples_strategy, min_size=3, max_size=120), st.integers(2, 50))
def test_downsampling_keeps_the_totals_the_newest_samples_and_fits(
    samples: list[Sample], keep: int
) -> None:
    merged = history.downsample(samples, keep)

    assert len(merged) <= max(keep, 2)
    assert sum(sample.written for sample in merged) == sum(sample.written for sample in samples)
    assert sum(sample.freed for sample in merged) == sum(sample.freed for sample in samples)
    assert merged[-1] == samples[-1]
    assert {sample.time for sample in merged} <= {sample.time for sample in samples}

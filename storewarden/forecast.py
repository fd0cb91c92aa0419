"""The fill forecast: how fast the store is written to, and when that fills the disk. Pure.

The rate is the Theil-Sen slope (the median of the slopes between every
pair of points) of the **gross** cumulative bytes written, over the last
:data:`WINDOW_SECONDS` of the usage history: a burst moves only the few
slopes that span it, and a prune, which frees bytes but writes none, moves
none. Time is measured on the history's own axis, monotonic time between
the samples of one process, so a clock that jumps does not bend it.

From the rate: the time until the next prune starts (the high mark, or
``min_free`` / ``max_store_size`` if they come first), until the disk is
full if nothing were removed, and until the protected versions alone reach
the high mark (from the trend of the protected bytes: the case no prune
can save). Each is ``None`` while the history spans fewer than
:data:`MIN_INTERVALS` check intervals, or its rate is not positive.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from storewarden.config import Config
from storewarden.history import Sample
from storewarden.usage import Usage

DAY = 86400.0
WINDOW_SECONDS = 7 * DAY
MIN_INTERVALS = 10
# Theil-Sen looks at every pair: at most this many points (evenly spread), ~20,000 pairs.
MAX_POINTS = 200
ETAS = ("high_mark", "disk_full", "protected_high_mark")


@dataclass(frozen=True)
class Forecast:
    """Rates in bytes per day, times in seconds from the last sample (None: unknown)."""

    rate_bytes_per_day: float | None
    protected_rate_bytes_per_day: float | None
    high_mark_seconds: float | None
    disk_full_seconds: float | None
    protected_high_mark_seconds: float | None
    span_seconds: float
    samples: int
    needed_seconds: float

    def etas(self) -> dict[str, float | None]:
        """Return the three times by name (ETAS)."""
        return {
            "high_mark": self.high_mark_seconds,
            "disk_full": self.disk_full_seconds,
            "protected_high_mark": self.protected_high_mark_seconds,
        }

    def as_dict(self) -> dict[str, object]:
        """Return the forecast as plain data (``status --json``'s ``forecast``)."""
        return {
            "rate_bytes_per_day": _round(self.rate_bytes_per_day),
            "protected_rate_bytes_per_day": _round(self.protected_rate_bytes_per_day),
            "high_mark_seconds": _round(self.high_mark_seconds),
            "disk_full_seconds": _round(self.disk_full_seconds),
            "protected_high_mark_seconds": _round(self.protected_high_mark_seconds),
            "history_seconds": round(self.span_seconds, 1),
            "history_needed_seconds": round(self.needed_seconds, 1),
            "samples": self.samples,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def theil_sen(points: Sequence[tuple[float, float]]) -> float | None:
    """Return the median of the slopes between every pair of points with distinct x.

    None when there is no such pair.
    """
    slopes = [
        (y2 - y1) / (x2 - x1)
        for index, (x1, y1) in enumerate(points)
        for x2, y2 in points[index + 1 :]
        if x2 != x1
    ]
    return statistics.median(slopes) if slopes else None


def time_axis(samples: Sequence[Sample]) -> list[float]:
    """Return each sample's time in seconds from the first, never going back.

    Between two samples of one process the monotonic ``elapsed`` counts
    (immune to clock steps); across a restart, the wall clock (a backward
    step counts as no time).
    """
    axis = [0.0]
    for before, after in itertools.pairwise(samples):
        step = after.elapsed if after.elapsed is not None else after.time - before.time
        axis.append(axis[-1] + max(0.0, step))
    return axis if samples else []


def _spread(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(index * step)] for index in range(MAX_POINTS)]


def _window(samples: Sequence[Sample]) -> tuple[list[Sample], list[float]]:
    axis = time_axis(samples)
    end = axis[-1] if axis else 0.0
    start = next((index for index, moment in enumerate(axis) if moment >= end - WINDOW_SECONDS), 0)
    return list(samples[start:]), [moment - axis[start] for moment in axis[start:]]


def gross_rate(samples: Sequence[Sample]) -> float | None:
    """Return the gross write rate in bytes per second over the window (Theil-Sen)."""
    window, axis = _window(samples)
    cumulative, points = 0, []
    for index, (sample, moment) in enumerate(zip(window, axis, strict=True)):
        if index:  # the first sample's written happened before the window
            cumulative += sample.written
        points.append((moment, float(cumulative)))
    return theil_sen(_spread(points))


def protected_rate(samples: Sequence[Sample]) -> float | None:
    """Return the trend of the protected bytes in bytes per second over the window."""
    window, axis = _window(samples)
    points = [
        (moment, float(sample.protected))
        for sample, moment in zip(window, axis, strict=True)
        if sample.protected is not None
    ]
    return theil_sen(_spread(points))


def first_used_at(capacity: int, percent: float) -> int:
    """Return the fewest used bytes at which used / capacity reaches ``percent`` (as planned)."""
    if capacity <= 0:
        return 0
    used = max(0, -(-int(capacity * percent) // 100))
    while used > 0 and 100.0 * (used - 1) / capacity >= percent:
        used -= 1
    while 100.0 * used / capacity < percent:
        used += 1
    return used


def forecast(
    samples: Sequence[Sample],
    usage: Usage,
    config: Config,
    *,
    protected_bytes: int | None,
) -> Forecast:
    """Given the usage history, the usage now and the protected bytes now, return the forecast."""
    window, axis = _window(samples)
    span = axis[-1] if axis else 0.0
    needed = MIN_INTERVALS * config.schedule.check_interval
    unknown = Forecast(None, None, None, None, None, span, len(window), needed)
    if span < needed or len(window) < 3:
        return unknown
    per_second = gross_rate(samples)
    protected_per_second = protected_rate(samples)
    trigger = config.trigger
    disk = max(usage.filesystems(), key=lambda part: part.used_percent)
    capacity = disk.used + disk.free
    high_mark = first_used_at(capacity, trigger.high_percent)
    starts = [high_mark - disk.used]
    if trigger.min_free is not None:
        starts.append(capacity - trigger.min_free + 1 - disk.used)
    if trigger.max_store_size is not None:
        starts.append(trigger.max_store_size + 1 - usage.store_bytes)
    headroom = None
    if protected_bytes is not None:
        others = max(0, usage.used - usage.store_bytes)
        headroom = high_mark - others - protected_bytes
    rate = per_second if per_second is not None and per_second > 0 else None
    protected_trend = protected_per_second if protected_per_second else None
    return Forecast(
        rate_bytes_per_day=None if per_second is None else per_second * DAY,
        protected_rate_bytes_per_day=(
            None if protected_per_second is None else protected_per_second * DAY
        ),
        high_mark_seconds=None if rate is None else max(0.0, min(starts) / rate),
        disk_full_seconds=None if rate is None else max(0.0, disk.free / rate),
        protected_high_mark_seconds=(
            None
            if headroom is None
            else 0.0
            if headroom <= 0
            else headroom / protected_trend
            if protected_trend is not None and protected_trend > 0
            else None
        ),
        span_seconds=span,
        samples=len(window),
        needed_seconds=needed,
    )


def warnings(result: Forecast, horizon: float | None) -> dict[str, float]:
    """Return each time that falls under ``horizon`` seconds (none when it is None)."""
    if horizon is None:
        return {}
    return {
        name: seconds
        for name, seconds in result.etas().items()
        if seconds is not None and seconds < horizon
    }

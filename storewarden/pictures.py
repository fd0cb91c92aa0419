"""The pictures of ``status``, as numbers and plain text: the usage bar and the history chart. Pure.

A terminal draws them (the bar with rich in :mod:`storewarden.terminal`,
the chart with plotext in :mod:`storewarden.chart`); a pipe gets the
plain lines made here, with no escape sequence; ``--json`` gets
:func:`history_data`. Nothing here imports a terminal library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce
from typing import Any

from storewarden.config import human_bytes
from storewarden.history import Sample, merge

# The plain table and the chart show at most this many rows or points;
# longer histories are thinned by merging neighbours (written and freed summed).
TABLE_ROWS = 40
CHART_POINTS = 240
HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True)
class Bar:
    """The usage bar in cells: protected store, rest of the store, other used, free.

    ``high`` and ``low`` are the cells (0 to width - 1) the marks fall on.
    """

    protected: int
    store: int
    other: int
    free: int
    high: int
    low: int

    @property
    def width(self) -> int:
        """Return the bar's width in cells."""
        return self.protected + self.store + self.other + self.free


def share(part: int, capacity: int) -> float:
    """Return ``part`` as a percentage of ``capacity`` (0 for an empty filesystem)."""
    return 100.0 * part / capacity if capacity > 0 else 0.0


def mark_cell(percent: float, width: int) -> int:
    """Return the cell of a ``width``-cell bar a mark at ``percent`` falls on."""
    return min(width - 1, max(0, int(percent / 100.0 * width)))


def bar(
    *, used: int, free: int, store: int, protected: int, high: float, low: float, width: int
) -> Bar:
    """Return the usage bar of a filesystem of ``used + free`` bytes, ``width`` cells wide.

    The store is part of the used bytes and the protected versions part of
    the store; each share is clamped into the one holding it, so a store
    measured a moment after the filesystem still fits. Cells are rounded
    on the cumulative shares, so they always add up to ``width``.
    """
    capacity = used + free
    used = max(0, used)
    store = min(max(0, store), used)
    protected = min(max(0, protected), store)

    def cells(amount: int) -> int:
        return round(width * amount / capacity) if capacity > 0 else 0

    protected_cells = cells(protected)
    store_cells = cells(store) - protected_cells
    other_cells = cells(used) - protected_cells - store_cells
    return Bar(
        protected=protected_cells,
        store=store_cells,
        other=other_cells,
        free=width - protected_cells - store_cells - other_cells,
        high=mark_cell(high, width),
        low=mark_cell(low, width),
    )


def bar_caption(data: dict[str, Any]) -> str:
    """Return the line under the usage bar: each share as a percentage, and the marks."""
    usage = data["usage"]
    capacity = usage["used_bytes"] + usage["free_bytes"]
    marks = data["marks"]
    return (
        f"used {usage['used_percent']:.1f}%"
        f" · store {share(data['store_bytes'], capacity):.1f}%"
        f" · protected {share(data['protected_bytes'], capacity):.1f}%"
        f" · low {marks['low_percent']:g}% · high {marks['high_percent']:g}%"
    )


def since(samples: Sequence[Sample], start: datetime | None) -> list[Sample]:
    """Return the samples taken at or after ``start`` (all of them for None)."""
    if start is None:
        return list(samples)
    moment = start.timestamp()
    return [sample for sample in samples if sample.time >= moment]


def thin(samples: Sequence[Sample], most: int) -> list[Sample]:
    """Return at most ``most`` samples, neighbours merged evenly over the whole span.

    Each merged sample keeps the newest state of its run and the sums of its
    written and freed bytes, so a prune inside a run still shows as freed.
    """
    if len(samples) <= most:
        return list(samples)
    runs = [
        samples[len(samples) * index // most : len(samples) * (index + 1) // most]
        for index in range(most)
    ]
    return [reduce(merge, run) for run in runs if run]


def used_percent(sample: Sample) -> float:
    """Return the filesystem's use at ``sample``, as ``df`` shows it."""
    return share(sample.used, sample.used + sample.free)


def store_percent(sample: Sample) -> float:
    """Return the store's share of the filesystem at ``sample``."""
    return share(sample.store, sample.used + sample.free)


def time_axis(samples: Sequence[Sample], now: float) -> tuple[list[float], str]:
    """Return each sample's time before ``now`` (negative) in hours, or days past two days."""
    if not samples:
        return [], "hours"
    span = now - samples[0].time
    unit, scale = ("days", DAY) if span > 2 * DAY else ("hours", HOUR)
    return [(sample.time - now) / scale for sample in samples], unit


def prunes(samples: Sequence[Sample]) -> list[int]:
    """Return the indexes of the samples that saw bytes freed (a prune or a delete)."""
    return [index for index, sample in enumerate(samples) if sample.freed > 0]


def history_data(
    samples: Sequence[Sample], *, high: float, low: float, start: datetime | None
) -> dict[str, Any]:
    """Return ``status --history --json``: the marks and each sample since ``start``."""
    return {
        "since": start.isoformat() if start else None,
        "marks": {"high_percent": high, "low_percent": low},
        "samples": [
            {
                "time": datetime.fromtimestamp(sample.time, tz=UTC).isoformat(),
                "used_bytes": sample.used,
                "free_bytes": sample.free,
                "total_bytes": sample.total,
                "used_percent": round(used_percent(sample), 2),
                "store_bytes": sample.store,
                "written_bytes": sample.written,
                "freed_bytes": sample.freed,
                "protected_bytes": sample.protected,
            }
            for sample in since(samples, start)
        ],
    }


def history_lines(
    samples: Sequence[Sample], *, high: float, low: float, rows: int = TABLE_ROWS
) -> list[str]:
    """Return the plain history: a heading, then one row per sample (thinned to ``rows``)."""
    if not samples:
        return ["no usage history yet (the daemon and each prune add one sample per check)"]
    shown = thin(samples, rows)
    first = datetime.fromtimestamp(samples[0].time, tz=UTC)
    last = datetime.fromtimestamp(samples[-1].time, tz=UTC)
    heading = (
        f"usage history: {len(samples)} samples from {first:%Y-%m-%d %H:%M} to"
        f" {last:%Y-%m-%d %H:%M} UTC; marks: high {high:g}%, low {low:g}%"
    )
    if len(shown) < len(samples):
        heading += f"; {len(shown)} rows, neighbours merged"
    table = [("TIME (UTC)", "USED", "USED%", "STORE", "WRITTEN", "FREED", "")]
    for sample in shown:
        table.append(
            (
                f"{datetime.fromtimestamp(sample.time, tz=UTC):%Y-%m-%d %H:%M}",
                human_bytes(sample.used),
                f"{used_percent(sample):.1f}%",
                human_bytes(sample.store),
                human_bytes(sample.written),
                human_bytes(sample.freed),
                "pruned" if sample.freed else "",
            )
        )
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    lines = [heading]
    for row in table:
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return lines

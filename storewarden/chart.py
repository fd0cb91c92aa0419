"""The history chart, drawn by plotext: imported only by ``status --history`` on a terminal.

Library: plotext 6.1 (maintained, released 2026-09, pure wheels). It draws
line charts with labelled horizontal and vertical lines, a legend and
scaled axes, and builds the figure into a string without printing it, so
the caller decides where it goes. uniplot 0.23 was the other candidate:
lighter, but it has no labelled reference lines or legend entries for
them, and the marks and prunes are the point of this chart. plotext has
no type hints, so it is reached only through this module's typed function.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotext  # type: ignore[import-untyped]

from storewarden import pictures
from storewarden.history import Sample


def history_chart(
    samples: Sequence[Sample],
    *,
    high: float,
    low: float,
    now: float,
    width: int,
    height: int,
    color: bool,
) -> str:
    """Return the chart of filesystem use and store size (percent of the filesystem) over time.

    The high and low marks are horizontal lines, each prune a vertical line
    and an ``x`` on the used line.
    """
    shown = pictures.thin(samples, pictures.CHART_POINTS)
    times, unit = pictures.time_axis(shown, now)
    used = [pictures.used_percent(sample) for sample in shown]
    store = [pictures.store_percent(sample) for sample in shown]
    figure = plotext.figure
    figure.clear.all()
    figure.theme("default" if color else "colorless")
    figure.plot_size(width, height)
    figure.title("filesystem use and store size, % of the filesystem")
    figure.label(f"{unit} before now", "x")
    figure.ruler("y").lim(0, 100)
    figure.ruler("y").ticks(sorted({0.0, 25.0, 50.0, low, high, 100.0}))
    figure.draw(figure.signal(times, used).label("used %").lines())
    figure.draw(figure.signal(times, store).label("store %").lines())
    figure.line(high, label=f"high {high:g}%")
    figure.line(low, label=f"low {low:g}%")
    pruned = pictures.prunes(shown)
    for index in pruned:
        figure.line(times[index], orientation="vertical")
    if pruned:
        marks = figure.signal([times[i] for i in pruned], [used[i] for i in pruned], marker="x")
        figure.draw(marks.label(f"prune ({len(pruned)})"))
    text: str = figure.build().string(colorless=not color)
    return text

"""What a person at a terminal sees: rich tables and progress bars, only on a terminal.

Every renderer here is used only when its stream is a terminal; piped or
redirected output stays the plain text and JSON lines scripts rely on.
"""

from __future__ import annotations

import io
import sys
from types import TracebackType
from typing import Any, TextIO, cast

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from storewarden import pictures, views
from storewarden.config import human_bytes
from storewarden.store import VersionRecord


class _AboveTheBar(io.TextIOBase):
    """The audit log's stdout while a progress bar holds the same terminal.

    Whole lines are printed above the bar, unwrapped (a copied line is still
    one JSON object); before and after the bar they go to stdout as usual.
    """

    def __init__(self, bar: ProgressBar) -> None:
        self._bar = bar
        self._pending = ""

    def write(self, text: str) -> int:
        """Print each completed line above the bar, or write it to stdout."""
        if not self._bar.live:
            return sys.stdout.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._bar.console.print(
                line, soft_wrap=True, markup=False, highlight=False, emoji=False
            )
        return len(text)

    def flush(self) -> None:
        """Flush stdout (lines above the bar are printed whole at once)."""
        if not self._bar.live:
            sys.stdout.flush()


class ProgressBar:
    """The engine's Progress on a terminal: versions and bytes removed so far, and which one now.

    Nothing is drawn until removals are planned, so a prune with nothing to
    do prints no bar. Use as a context manager; the bar stays on screen when
    done.
    """

    def __init__(self, console: Console, *, audit_on_terminal: bool) -> None:
        self.console = console
        self.audit_on_terminal = audit_on_terminal
        self._progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            TextColumn("{task.fields[done]}/{task.fields[versions]} versions"),
            DownloadColumn(binary_units=True),
            TimeElapsedColumn(),
            console=console,
            redirect_stdout=False,  # the audit lines stay on stdout (see audit_stream)
        )
        self._task: TaskID | None = None
        self._versions = 0
        self._done = 0
        self._total = 0
        self._completed = 0

    @property
    def live(self) -> bool:
        """Return whether the bar is on screen now."""
        return self._task is not None and self._progress.live.is_started

    def audit_stream(self) -> TextIO:
        """Return the stream for the audit log: stdout, or above the bar on a shared terminal."""
        return cast(TextIO, _AboveTheBar(self)) if self.audit_on_terminal else sys.stdout

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._progress.stop()

    def planned(self, versions: int, total_bytes: int) -> None:
        """Start the bar for ``versions`` removals of ``total_bytes``."""
        self._versions, self._total = versions, total_bytes
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(
                "removing", total=total_bytes, versions=versions, done=0
            )
        else:
            self._progress.update(self._task, total=total_bytes, versions=versions)

    def removing(self, record: VersionRecord) -> None:
        """Show which version is being archived and removed."""
        if self._task is not None:
            self._progress.update(self._task, description=f"{record.kind}/{record.tag}")

    def removed(self, record: VersionRecord) -> None:
        """Count one removal; a prune may go past the plan when usage is re-measured."""
        if self._task is None:
            return
        self._done += 1
        self._completed += record.bytes
        self._versions = max(self._versions, self._done)
        self._total = max(self._total, self._completed)
        self._progress.update(
            self._task,
            completed=self._completed,
            total=self._total,
            done=self._done,
            versions=self._versions,
            description="removed" if self._done == self._versions else "removing",
        )


def usage_bar(data: dict[str, Any], console: Console) -> None:
    """Print the usage bar: protected, rest of the store, other used, free; the marks below it."""
    usage = data["usage"]
    width = max(20, min(console.width, 100) - 2)
    cells = pictures.bar(
        used=usage["used_bytes"],
        free=usage["free_bytes"],
        store=data["store_bytes"],
        protected=data["protected_bytes"],
        high=data["marks"]["high_percent"],
        low=data["marks"]["low_percent"],
        width=width,
    )
    line = Text("▕")
    line.append("█" * cells.protected, style="magenta")
    line.append("█" * cells.store, style="blue")
    line.append("▒" * cells.other, style="grey50")
    line.append("·" * cells.free, style="dim")
    line.append("▏")
    marks = [" "] * (width + 2)
    marks[cells.low + 1] = "▲"
    marks[cells.high + 1] = "▲"
    console.print(line)
    console.print(Text("".join(marks).rstrip(), style="bold yellow"))
    console.print(pictures.bar_caption(data), highlight=False, markup=False)


def status_table(data: dict[str, Any], console: Console) -> None:
    """Print ``storewarden status`` data as rich tables: the same rows as the plain text."""
    usage = data["usage"]
    console.print(
        f"[bold]{data['store']}[/]: {data['versions']} versions,"
        f" {human_bytes(data['store_bytes'])}; filesystem {usage['used_percent']:.1f}% used,"
        f" {human_bytes(usage['free_bytes'])} free",
        highlight=False,
    )
    if data["triggers"]:
        console.print(f"[bold red]triggers holding:[/] {', '.join(data['triggers'])}")
    table = Table(show_edge=False, pad_edge=False)
    for header in views.STATUS_COLUMNS:
        table.add_column(header.lower(), justify="right" if header in _NUMBERS else "left")
    for row in views.status_rows(data):
        table.add_row(*row)
    console.print(table)
    if "forecast" in data:
        console.print(views.forecast_line(data["forecast"]), highlight=False, markup=False)
    if data.get("pins"):
        pins = Table(title="pins", show_edge=False, pad_edge=False)
        for header in ("tag", "kind", "who", "when", "until", "reason"):
            pins.add_column(header)
        for pin in data["pins"]:
            until = pin["until"] or "-"
            pins.add_row(
                pin["tag"],
                pin["kind"] or "any",
                pin["who"],
                pin["when"][:19],
                f"[dim]{until[:19]} (expired)[/]" if pin["expired"] else until[:19],
                pin["reason"] or "-",
            )
        console.print(pins)
    for line in views.status_notes({**data, "pins": []}):
        console.print(f"[yellow]{line}[/]", highlight=False)


_NUMBERS = ("VERSIONS", "SIZE")

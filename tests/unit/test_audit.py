"""Audit reports: reading lines, hostile ones included, into removals, pointer changes, errors.

Events are built as the daemon writes them (every field the schema requires)
and fed to the pure functions as lines of text; no file is involved.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storewarden import audit
from storewarden.audit import (
    MAX_LINE,
    parse_line,
    parse_since,
    read_lines,
    render_text,
    report_data,
    summarize,
)
from storewarden.logs import COMMON, EVENTS, check_event
from tests.storebuilder import NOW

STORE = "/home/bentoml/bentoml"


def stamp(minutes: float = 0) -> str:
    """Return the audit log's timestamp for NOW plus ``minutes``."""
    return (NOW + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def event(called: str, minutes: float = 0, /, **fields: Any) -> dict[str, Any]:
    """Return an event as the warden logs it, held to the schema."""
    level = "error" if called.endswith("_failed") or called == "config_rejected" else "info"
    data: dict[str, Any] = {"event": called, "timestamp": stamp(minutes), "level": level}
    data["store"] = STORE
    data.update(fields)
    check_event(data)
    return data


def removed(
    name: str,
    version: str,
    size: int,
    reason: str = "high_percent",
    *,
    minutes: float = 0,
    run_id: str = "aaaaaaaaaaaa",
    dry_run: bool = False,
    kind: str = "models",
    **extra: Any,
) -> dict[str, Any]:
    """Return a version_removed (or, for a dry run, would_remove) event."""
    return event(
        "would_remove" if dry_run else "version_removed",
        minutes,
        kind=kind,
        name=name,
        version=version,
        path=f"{STORE}/{kind}/{name}/{version}",
        bytes=size,
        creation_time="2026-10-01T00:00:00+00:00",
        reason=reason,
        run_id=run_id,
        used_percent_before=90.0,
        used_percent_after=80.0,
        **extra,
    )


def finished(run_id: str, *, reached: bool = True, dry_run: bool = False, **extra: Any) -> Any:
    """Return a prune_finished event."""
    return event(
        "prune_finished",
        run_id=run_id,
        removed=2,
        bytes_freed=3000,
        used_percent_after=82.5 if not reached else 70.0,
        shortfall_bytes=0 if reached else 4096,
        target_reached=reached,
        seconds=0.5,
        dry_run=dry_run,
        **extra,
    )


def lines(*events: dict[str, Any] | str) -> list[str]:
    """Return events as JSON lines (strings are passed through as hostile lines)."""
    return [item if isinstance(item, str) else json.dumps(item) + "\n" for item in events]


def report_of(*events: dict[str, Any] | str, since: datetime | None = None) -> audit.Report:
    """Return the report of these lines."""
    return summarize(lines(*events), since=since)


# -- removals -----------------------------------------------------------------------------


def test_removals_are_reported_per_name_with_their_bytes_largest_first() -> None:
    report = report_of(
        removed("iris", "v1", 1000, minutes=1),
        removed("bert", "v1", 5000, minutes=2),
        removed("iris", "v2", 2000, "max_age", minutes=3),
        removed("svc", "b1", 10, kind="bentos", minutes=4),
    )

    data = report_data(report)
    assert [(group["kind"], group["name"]) for group in data["removals"]] == [
        ("models", "bert"),
        ("models", "iris"),
        ("bentos", "svc"),
    ]
    iris = data["removals"][1]
    assert (iris["versions"], iris["bytes"]) == (2, 3000)
    assert iris["reasons"] == {"high_percent": 1, "max_age": 1}
    assert [item["version"] for item in iris["removed"]] == ["v1", "v2"]
    assert data["removed"] == {"versions": 4, "bytes": 8010}


def test_a_removal_finished_by_recovery_is_a_removal_and_says_so() -> None:
    report = report_of(removed("iris", "v1", 1000, recovered=True))

    item = report_data(report)["removals"][0]["removed"][0]
    assert item["recovered"] is True
    assert any("finished by recovery" in line for line in render_text(report))


def test_the_same_name_in_two_stores_is_two_entries_and_the_text_names_the_stores() -> None:
    other = {**removed("iris", "v1", 1000), "store": "/srv/other"}

    report = report_of(removed("iris", "v1", 1000), other)

    assert len(report_data(report)["removals"]) == 2
    text = render_text(report)
    assert any(line.startswith("  models/iris in /srv/other:") for line in text)


# -- pointers, targets, dry runs, errors, versions gone -----------------------------------


def test_pointer_changes_are_listed_in_order_with_their_reasons() -> None:
    report = report_of(
        event(
            "latest_changed", 1, kind="models", name="iris", old="v1", new="v2", reason="removed"
        ),
        event("latest_removed", 2, kind="models", name="bert", old="v9", reason="removed"),
        event(
            "pointer_repaired", 3, kind="bentos", name="svc", old=None, new="b2", problem="garbage"
        ),
    )

    changes = report_data(report)["pointer_changes"]
    assert [(c["event"], c["name"], c["old"], c["new"], c["reason"]) for c in changes] == [
        ("latest_changed", "iris", "v1", "v2", "removed"),
        ("latest_removed", "bert", "v9", None, "removed"),
        ("pointer_repaired", "svc", None, "b2", "garbage"),
    ]
    assert "  2026-11-26T12:01:00Z  models/iris latest v1 -> v2  (removed)" in render_text(report)


def test_only_runs_that_missed_their_target_are_listed_as_missed() -> None:
    report = report_of(
        finished("run1"),
        finished("run2", reached=False),
        finished("run3", reached=False, dry_run=True),
    )

    data = report_data(report)
    assert [(m["run_id"], m["dry_run"]) for m in data["missed_targets"]] == [
        ("run2", False),
        ("run3", True),
    ]
    assert data["missed_targets"][0]["shortfall_bytes"] == 4096
    assert (data["prune_runs"], data["dry_runs"]) == (2, 1)


def test_dry_run_plans_are_grouped_by_run() -> None:
    report = report_of(
        removed("iris", "v1", 1000, run_id="dry1", dry_run=True),
        removed("bert", "v1", 500, run_id="dry1", dry_run=True),
        removed("iris", "v2", 10, "explicit", run_id="dry2", dry_run=True),
    )

    plans = report_data(report)["dry_run_plans"]
    assert [(plan["run_id"], plan["versions"], plan["bytes"]) for plan in plans] == [
        ("dry1", 2, 1500),
        ("dry2", 1, 10),
    ]
    assert report_data(report)["removed"]["versions"] == 0  # nothing was removed


def test_errors_are_every_error_level_event_with_its_message() -> None:
    report = report_of(
        event(
            "removal_failed",
            run_id="r",
            kind="models",
            name="iris",
            version="v1",
            error="[Errno 13] Permission denied",
        ),
        event("check_failed", error="FileNotFoundError: gone"),
        event("config_rejected", config="/etc/x.yaml", problems=["at 'a': bad", "at 'b': bad"]),
    )

    errors = report_data(report)["errors"]
    assert [(e["event"], e["error"]) for e in errors] == [
        ("removal_failed", "[Errno 13] Permission denied"),
        ("check_failed", "FileNotFoundError: gone"),
        ("config_rejected", "at 'a': bad; at 'b': bad"),
    ]
    assert (
        "  2026-11-26T12:00:00Z  removal_failed models/iris:v1: [Errno 13] Permission denied"
        in render_text(report)
    )


def test_versions_gone_without_the_warden_are_listed_apart_from_removals() -> None:
    report = report_of(event("version_gone", kind="models", name="iris", version="v1"))

    data = report_data(report)
    assert data["gone"] == [
        {"timestamp": stamp(), "kind": "models", "name": "iris", "version": "v1"}
    ]
    assert data["removals"] == []


def test_every_event_is_counted_by_name_known_or_not() -> None:
    future = {"event": "archive_written", "timestamp": stamp(), "level": "info"}

    report = report_of(removed("iris", "v1", 1), removed("iris", "v2", 1), future)

    assert report_data(report)["counts"] == {"archive_written": 1, "version_removed": 2}


# -- since --------------------------------------------------------------------------------


def test_since_leaves_out_earlier_events_and_counts_them() -> None:
    report = report_of(
        removed("iris", "v1", 1000, minutes=-60),
        removed("iris", "v2", 2000, minutes=0),
        removed("iris", "v3", 4000, minutes=30),
        since=NOW,
    )

    assert [item.version for item in report.removed] == ["v2", "v3"]
    assert report.before_since == 1
    assert report_data(report)["first"] == stamp(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("90m", NOW - timedelta(minutes=90)),
        ("3600", NOW - timedelta(hours=1)),
        ("2026-11-20T08:00:00Z", datetime(2026, 11, 20, 8, tzinfo=UTC)),
        ("2026-11-20T09:00:00+01:00", datetime(2026, 11, 20, 8, tzinfo=UTC)),
        ("2026-11-20T08:00", datetime(2026, 11, 20, 8, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
    ],
)
def test_since_reads_an_age_or_a_time(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-1h", "1h30m", "", "2026-13-01"])
def test_since_rejects_what_is_neither_an_age_nor_a_time(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 24h"):
        parse_since(text, NOW)


# -- hostile lines ------------------------------------------------------------------------

HOSTILE = [
    "config ok (/etc/storewarden/storewarden.yaml)\n",
    "Traceback (most recent call last):\n",
    '  File "/opt/storewarden/lib/python3.11/site-packages/storewarden/daemon.py", line 1\n',
    "{not json\n",
    "[1, 2, 3]\n",
    '"just a string"\n',
    '{"no_event": true}\n',
    '{"event": 42, "timestamp": "2026-11-26T12:00:00Z"}\n',
    '{"event": "version_removed", "deep": ' + "[" * 100_000 + "\n",
    '{"event": "version_removed", "name": "a\x00b"}\n',
    "\x1b[31m\x00\x01\x02\n",
]

MALFORMED = [
    {"event": "version_removed", "timestamp": "yesterday"},
    {"event": "version_removed", "timestamp": 1_800_000_000},
    {"event": "version_removed"},
    {**removed("iris", "v1", 1), "bytes": "a lot"},
    {**removed("iris", "v1", 1), "bytes": True},
    {**removed("iris", "v1", 1), "bytes": -5},
    {**removed("iris", "v1", 1), "bytes": 1.5},
    {**removed("iris", "v1", 1), "name": ["iris"]},
    {**removed("iris", "v1", 1), "recovered": "yes"},
    {**finished("r", reached=False), "used_percent_after": "NaN"},
    {**finished("r"), "target_reached": "false"},
    {**event("removal_failed", run_id="r", kind="models", name="x", version="v", error="e")}
    | {"version": {"nested": "object"}},
]


def test_lines_that_are_not_events_are_counted_and_skipped_not_fatal() -> None:
    report = report_of(removed("iris", "v1", 1000), *HOSTILE, removed("iris", "v2", 1000))

    assert report.unparseable == len(HOSTILE)
    assert [item.version for item in report.removed] == ["v1", "v2"]
    assert report.lines == len(HOSTILE) + 2


@pytest.mark.parametrize("bad", MALFORMED, ids=range(len(MALFORMED)))
def test_an_event_with_malformed_fields_is_counted_and_adds_nothing(bad: dict[str, Any]) -> None:
    report = report_of(bad)

    assert report.malformed == 1
    data = report_data(report)
    assert data["events"] == 0
    assert data["removals"] == data["errors"] == data["missed_targets"] == []
    assert (data["prune_runs"], data["dry_runs"]) == (0, 0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"event": "check", "x": 1}\n', {"event": "check", "x": 1}),
        ('  {"event": "check"}  \r\n', {"event": "check"}),
        ('storewarden[1]: {"event": "check"}', {"event": "check"}),
        ('{"event": "check"} trailing', None),
        ('{"event": null}', None),
        ("[]", None),
        ("", None),
    ],
)
def test_parse_line_finds_the_event_object_or_nothing(
    line: str, expected: dict[str, Any] | None
) -> None:
    assert parse_line(line) == expected


def test_a_number_too_large_for_a_float_does_not_break_the_report() -> None:
    report = summarize(['{"event": "prune_finished", "used_percent_after": 1e999}\n'])

    assert report.malformed == 1


def test_an_event_after_a_prefix_is_read_as_journalctl_prints_it_without_o_cat() -> None:
    line = "Nov 26 12:00:00 agent7 storewarden[812]: " + json.dumps(removed("iris", "v1", 7))

    assert report_of(line).removed[0].bytes == 7


def test_blank_lines_are_neither_events_nor_damage() -> None:
    report = summarize(["\n", "   \n", "\r\n", json.dumps(removed("iris", "v1", 1))])

    assert (report.lines, report.unparseable, report.events) == (1, 0, 1)


def test_a_text_log_is_reported_as_such() -> None:
    report = summarize(["2026-11-26 12:00:00 [info     ] version_removed name=iris\n"])

    assert any("is log.format json?" in line for line in render_text(report))


def test_names_and_errors_cannot_send_escape_sequences_to_the_terminal() -> None:
    hostile = event("check_failed", error="\x1b]0;pwned\x07\x1b[2J done\r\nfake line")

    text = "\n".join(render_text(report_of(removed("ir\x1bis", "v1", 1), hostile)))

    assert "\x1b" not in text
    assert "\r" not in text
    assert "\x07" not in text
    assert "\\x1b]0;pwned\\x07" in text


def test_the_json_report_is_json_even_from_hostile_input() -> None:
    report = report_of(*HOSTILE, removed("ir\x00is", "v\u2028", 1))

    data = json.loads(json.dumps(report_data(report)))
    assert data["removals"][0]["name"] == "ir\x00is"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
field_names = st.sampled_from(
    sorted({name for fields in EVENTS.values() for name in fields} | COMMON | {"recovered"})
)


@st.composite
def event_like(draw: st.DrawFn) -> str:
    """A line shaped like an event: a known name, some real fields, values of any type."""
    data: dict[str, Any] = draw(st.dictionaries(field_names, json_values, max_size=12))
    data["event"] = draw(st.sampled_from(sorted(EVENTS)))
    if draw(st.booleans()):
        data["timestamp"] = stamp(draw(st.integers(-10_000, 10_000)))
    return json.dumps(data)


@given(st.lists(st.text(max_size=40) | event_like(), max_size=20))
def test_no_line_breaks_the_report_and_every_line_is_accounted_for(texts: list[str]) -> None:
    report = summarize(texts, since=NOW)

    counted = report.events + report.unparseable + report.malformed + report.before_since
    assert counted == report.lines == sum(1 for text in texts if text.strip())
    json.dumps(report_data(report))
    render_text(report)


# -- reading a stream ---------------------------------------------------------------------


def read(data: bytes) -> list[str]:
    """Return the lines read_lines yields from ``data``."""
    return list(read_lines(io.BytesIO(data)))


def test_a_line_longer_than_the_limit_counts_once_and_the_next_line_is_read() -> None:
    good = json.dumps(removed("iris", "v1", 1)).encode()
    huge = b'{"event": "version_removed", "x": "' + b"y" * (2 * MAX_LINE) + b'"}'

    texts = read(huge + b"\n" + good + b"\n")

    report = summarize(texts)
    assert (report.lines, report.unparseable, len(report.removed)) == (2, 1, 1)


def test_bytes_that_are_not_utf8_spoil_only_their_own_line() -> None:
    good = json.dumps(removed("iris", "v1", 1)).encode()

    report = summarize(read(b"\xff\xfe{garbage\n" + good + b"\r\n" + good))

    assert (report.lines, report.unparseable, len(report.removed)) == (3, 1, 2)


def test_report_sections_read_in_order_for_a_person() -> None:
    report = report_of(removed("iris", "v1", 2048))

    text = render_text(report)
    headings = [line.split(":")[0] for line in text if line and not line.startswith(" ")]
    assert headings[-5:] == [
        "removed",
        "pointer changes",
        "runs that missed their target",
        "dry-run plans",
        "errors",
    ]
    assert "  models/iris: 1 version, 2.0 KiB (high_percent 1)" in text


def test_an_empty_trail_gives_an_empty_report() -> None:
    report = summarize(_empty())

    assert report_data(report)["events"] == 0
    assert render_text(report)[0] == "0 events in 0 lines"


def _empty() -> Iterable[str]:
    return iter(())


def test_a_removal_logged_again_by_recovery_counts_once() -> None:
    first = removed("iris", "v1", 1000, run_id="run1")
    again = removed("iris", "v1", 1000, run_id="run1", minutes=5, recovered=True)
    only_recovered = removed("iris", "v2", 500, run_id="run1", minutes=5, recovered=True)

    report = report_of(first, again, only_recovered)

    assert [(item.version, item.recovered) for item in report.removed] == [
        ("v1", False),
        ("v2", True),
    ]
    assert report.counts["version_removed"] == 3

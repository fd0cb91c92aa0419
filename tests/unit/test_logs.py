"""The audit log: its schema, its documentation, and what configure() writes where."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from storewarden import logs
from storewarden.logs import COMMON, EVENTS, SchemaError, check_event

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-log.md"
COMMON_SECTION = "(common fields)"
HEADING = re.compile(r"^### `([a-z_]+)`\s*$")
ROW = re.compile(r"^\| `([a-z_]+)` \| (yes|no) \|")


def documented() -> dict[str, list[tuple[str, bool]]]:
    """Return each documented event (and the common fields) with its (field, required) rows."""
    sections: dict[str, list[tuple[str, bool]]] = {}
    current: str | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = HEADING.match(line)
        if heading:
            current = heading.group(1)
            assert current not in sections, f"{current} is documented twice"
            sections[current] = []
        elif line.startswith("## "):
            current = COMMON_SECTION if line.strip() == "## Common fields" else None
            if current is not None:
                sections[current] = []
        elif current is not None and (row := ROW.match(line)):
            sections[current].append((row.group(1), row.group(2) == "yes"))
    return sections


def event(name: str, **overrides: Any) -> dict[str, Any]:
    """Return a complete event of the given name: every common and required field set."""
    fields: dict[str, Any] = dict.fromkeys(EVENTS[name] | COMMON, "x")
    fields.update(event=name, **overrides)
    return fields


@pytest.fixture
def close_log_file(tmp_path: Path) -> Iterator[None]:
    """Reconfigure without a file after the test, closing any file the test opened."""
    yield
    logs.configure(store=tmp_path, stream=io.StringIO())


def lines_of(stream: io.StringIO) -> list[str]:
    """Return the lines written to a stream."""
    return stream.getvalue().splitlines()


# -- the documentation ------------------------------------------------------------------


def test_the_common_fields_are_documented_as_required() -> None:
    rows = documented()[COMMON_SECTION]

    assert {field for field, required in rows if required} == set(COMMON)
    assert all(required for _field, required in rows)


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_event_is_documented_with_exactly_its_required_fields(name: str) -> None:
    sections = documented()

    assert name in sections, f"{name} is not documented in {DOC}"
    rows = sections[name]
    fields = [field for field, _required in rows]
    assert len(fields) == len(set(fields)), f"{name} lists a field twice"
    assert {field for field, required in rows if required} == set(EVENTS[name])


def test_the_documentation_names_no_event_the_schema_lacks() -> None:
    text = DOC.read_text(encoding="utf-8")
    in_headings = set(documented()) - {COMMON_SECTION}
    in_recipes = set(re.findall(r'\.event=="([a-z_]+)"', text))

    assert in_recipes  # the recipes are there and the pattern still finds them
    assert in_headings - set(EVENTS) == set()
    assert in_recipes - set(EVENTS) == set()


def test_the_documentation_has_the_removal_recipes() -> None:
    text = DOC.read_text(encoding="utf-8")

    assert (
        """journalctl -u storewarden -o cat | jq -c 'select(.event=="version_removed")'""" in text
    )
    assert "What deleted my model?" in text


# -- check_event ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_a_complete_event_passes_the_check(name: str) -> None:
    check_event(event(name, extra_field="optional fields are allowed"))


def test_an_unknown_event_fails_the_check() -> None:
    with pytest.raises(SchemaError, match="unknown event 'version_deleted'"):
        check_event({**event("version_removed"), "event": "version_deleted"})


def test_an_event_without_a_name_fails_the_check() -> None:
    fields = event("version_removed")
    del fields["event"]

    with pytest.raises(SchemaError, match="unknown event None"):
        check_event(fields)


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_an_event_lacking_a_required_field_fails_the_check_naming_it(name: str) -> None:
    for field in sorted((EVENTS[name] | COMMON) - {"event"}):
        fields = event(name)
        del fields[field]

        with pytest.raises(SchemaError, match=re.escape(f"lacks ['{field}']")):
            check_event(fields)


# -- configure --------------------------------------------------------------------------


def test_strict_logging_refuses_an_off_schema_event(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream, strict=True)
    log = logs.get_logger()

    with pytest.raises(SchemaError, match="unknown event"):
        log.info("model_vanished", name="iris")
    with pytest.raises(SchemaError, match="lacks"):
        log.info("name_removed", kind="models")
    assert stream.getvalue() == ""


def test_lenient_logging_writes_an_off_schema_event_all_the_same(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream)

    logs.get_logger().info("model_vanished", name="iris")

    (line,) = lines_of(stream)
    assert json.loads(line)["event"] == "model_vanished"


def test_every_line_carries_the_common_fields(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(store=tmp_path / "store", stream=stream, strict=True)

    logs.get_logger().warning("store_problem", path="/x", problem="not a valid tag")

    (line,) = lines_of(stream)
    parsed = json.loads(line)
    assert set(COMMON) <= set(parsed)
    assert parsed["event"] == "store_problem"
    assert parsed["level"] == "warning"
    assert parsed["store"] == str(tmp_path / "store")
    assert (parsed["path"], parsed["problem"]) == ("/x", "not a valid tag")


def test_the_timestamp_is_iso_8601_in_utc(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream)
    before = datetime.now(tz=UTC)

    logs.get_logger().info("name_removed", kind="models", name="iris")

    after = datetime.now(tz=UTC)
    stamp = json.loads(lines_of(stream)[0])["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", stamp), stamp
    moment = datetime.fromisoformat(stamp)
    offset = moment.utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0
    assert before <= moment <= after


def test_the_level_setting_drops_events_below_it(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream, level="warning")
    log = logs.get_logger()

    log.debug("check", usage={}, triggers=[])
    log.info("name_removed", kind="models", name="iris")
    log.warning("store_missing", path="/srv")
    log.error("check_failed", error="OSError: gone")

    assert [json.loads(line)["event"] for line in lines_of(stream)] == [
        "store_missing",
        "check_failed",
    ]


def test_each_event_is_one_line_whatever_its_values_hold(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream)

    logs.get_logger().error(
        "check_failed", error="Traceback (most recent call last):\n  File ...\nOSError: gone"
    )

    (line,) = lines_of(stream)
    assert json.loads(line)["error"].count("\n") == 2


def test_values_json_cannot_hold_are_written_as_text(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream)

    logs.get_logger().info("store_appeared", path=tmp_path / "bentoml")

    assert json.loads(lines_of(stream)[0])["path"] == str(tmp_path / "bentoml")


@pytest.mark.usefixtures("close_log_file")
def test_a_log_file_receives_the_same_lines_as_the_stream_appended(tmp_path: Path) -> None:
    path = tmp_path / "var" / "log" / "audit.log"
    path.parent.mkdir(parents=True)
    path.write_text('{"event": "from_an_earlier_run"}\n')
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream, file=path)
    log = logs.get_logger()

    log.info("name_removed", kind="models", name="iris")
    log.info("trash_emptied", entries=2, bytes=8192)

    written = path.read_text().splitlines()
    assert written[0] == '{"event": "from_an_earlier_run"}'
    assert written[1:] == lines_of(stream)
    assert len(written) == 3


@pytest.mark.usefixtures("close_log_file")
def test_the_log_file_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "audit.log"
    logs.configure(store=tmp_path, stream=io.StringIO(), file=path)

    logs.get_logger().info("name_removed", kind="models", name="iris")

    assert json.loads(path.read_text())["event"] == "name_removed"


@pytest.mark.usefixtures("close_log_file")
def test_reconfiguring_stops_writing_to_the_previous_file(tmp_path: Path) -> None:
    first = tmp_path / "first.log"
    logs.configure(store=tmp_path, stream=io.StringIO(), file=first)
    logs.get_logger().info("name_removed", kind="models", name="a")

    second = tmp_path / "second.log"
    logs.configure(store=tmp_path, stream=io.StringIO(), file=second)
    logs.get_logger().info("name_removed", kind="models", name="b")

    assert [json.loads(line)["name"] for line in first.read_text().splitlines()] == ["a"]
    assert [json.loads(line)["name"] for line in second.read_text().splitlines()] == ["b"]


@pytest.mark.usefixtures("close_log_file")
def test_a_closed_stream_does_not_stop_the_file_from_getting_the_line(tmp_path: Path) -> None:
    # A closed stdout pipe must not stop a prune half-way, nor lose the file's line.
    stream = io.StringIO()
    path = tmp_path / "audit.log"
    logs.configure(store=tmp_path, stream=stream, file=path)
    stream.close()

    logs.get_logger().info("name_removed", kind="models", name="iris")

    assert json.loads(path.read_text())["name"] == "iris"


def test_the_console_format_writes_readable_text_without_colours(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream, log_format="console", strict=True)

    logs.get_logger().info(
        "latest_changed", kind="models", name="iris", old="v1", new="v2", reason="removed"
    )

    (line,) = lines_of(stream)
    assert "latest_changed" in line
    assert "name=iris" in line
    assert "new=v2" in line
    assert "\x1b[" not in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_the_console_format_is_held_to_the_schema_too(tmp_path: Path) -> None:
    logs.configure(store=tmp_path, stream=io.StringIO(), log_format="console", strict=True)

    with pytest.raises(SchemaError):
        logs.get_logger().info("latest_changed", kind="models")


def test_lines_from_several_threads_are_never_interleaved(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream)
    log = logs.get_logger()

    def emit(worker: int) -> None:
        for index in range(200):
            log.info("version_gone", kind="models", name=f"n{worker}", version=f"v{index}")

    threads = [threading.Thread(target=emit, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    parsed = [json.loads(line) for line in lines_of(stream)]
    assert len(parsed) == 800
    for worker in range(4):
        versions = [item["version"] for item in parsed if item["name"] == f"n{worker}"]
        assert versions == [f"v{index}" for index in range(200)]

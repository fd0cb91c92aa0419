"""The pins file on a real filesystem: atomic, locked writes; the engine reading it afresh."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storewarden.config import build_config
from storewarden.engine import Engine
from storewarden.pins import (
    EVERYTHING,
    MAX_REPAIR_BYTES,
    Pin,
    PinBoard,
    PinsError,
    pin_reader,
)
from tests.conftest import Audit
from tests.storebuilder import make_version, point_latest

WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# argv: state dir, writer number, pins per writer. Each pin is added by its own add().
CONCURRENT_WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from storewarden.pins import Pin, PinBoard
board = PinBoard(Path(sys.argv[1]))
writer, count = int(sys.argv[2]), int(sys.argv[3])
for index in range(count):
    board.add(Pin(f"w{writer}:v{index}", None, "test", datetime.now(tz=UTC)))
"""


def pin(tag: str, **fields: object) -> Pin:
    """Return a pin made by alice at WHEN, with ``fields`` overriding."""
    values: dict[str, object] = {"kind": None, "who": "alice", "when": WHEN, **fields}
    return Pin(tag, **values)  # type: ignore[arg-type]


def test_no_pins_file_means_no_pins(tmp_path: Path) -> None:
    assert PinBoard(tmp_path).load() == ()


def test_added_pins_are_read_back_whole(tmp_path: Path) -> None:
    board = PinBoard(tmp_path)
    first = pin("iris:v1", until=WHEN + timedelta(days=7), reason="canary")
    second = pin("svc:*", kind="bentos", who="bob")

    assert board.add(first) is None
    assert board.add(second) is None

    assert board.load() == (first, second)
    assert json.loads((tmp_path / "pins.json").read_text())["version"] == 1


def test_pinning_a_tag_again_replaces_its_pin(tmp_path: Path) -> None:
    board = PinBoard(tmp_path)
    board.add(pin("iris:v1", reason="old"))
    board.add(pin("iris:v1", kind="bentos", reason="other kind"))

    replaced = board.add(pin("iris:v1", reason="new"))

    assert replaced is not None
    assert replaced.reason == "old"
    assert [(each.kind, each.reason) for each in board.load()] == [
        ("bentos", "other kind"),
        (None, "new"),
    ]


def test_unpinning_removes_exactly_the_pins_of_that_tag(tmp_path: Path) -> None:
    board = PinBoard(tmp_path)
    for tag in ("iris:v1", "iris:v2", "mnist:*"):
        board.add(pin(tag))

    gone = board.remove("iris:v1")

    assert [each.tag for each in gone] == ["iris:v1"]
    assert [each.tag for each in board.load()] == ["iris:v2", "mnist:*"]
    assert board.remove("iris:v9") == []


def test_unpinning_expired_pins_keeps_those_still_in_force(tmp_path: Path) -> None:
    board = PinBoard(tmp_path)
    board.add(pin("iris:v1", until=WHEN + timedelta(hours=1)))
    board.add(pin("iris:v2", until=WHEN + timedelta(days=1)))
    board.add(pin("iris:v3"))

    gone = board.remove(None, expired_at=WHEN + timedelta(hours=2))

    assert [each.tag for each in gone] == ["iris:v1"]
    assert [each.tag for each in board.load()] == ["iris:v2", "iris:v3"]


def test_expired_pins_are_kept_listed_but_give_no_glob(tmp_path: Path) -> None:
    board = PinBoard(tmp_path)
    board.add(pin("iris:v1", until=WHEN + timedelta(hours=1)))
    board.add(pin("svc:*", kind="bentos"))

    assert board.globs(WHEN) == ("iris:v1", "bentos/svc:*")
    assert board.globs(WHEN + timedelta(hours=1)) == ("bentos/svc:*",)
    assert len(board.load()) == 2


def test_writes_leave_no_temporary_file_behind(tmp_path: Path) -> None:
    board = PinBoard(tmp_path)
    for index in range(5):
        board.add(pin(f"iris:v{index}"))
    board.remove("iris:v0")

    assert sorted(path.name for path in tmp_path.iterdir()) == ["pins.json", "pins.lock"]


@pytest.mark.slow
def test_concurrent_writers_lose_no_pin(tmp_path: Path) -> None:
    writers, each = 6, 8
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(tmp_path), str(writer), str(each)]
        )
        for writer in range(writers)
    ]
    codes = [process.wait(timeout=120) for process in processes]

    assert codes == [0] * writers
    tags = {each_pin.tag for each_pin in PinBoard(tmp_path).load()}
    assert tags == {f"w{writer}:v{index}" for writer in range(writers) for index in range(each)}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "expected an object with a 'pins' list"),
        (b'{"version": 2, "pins": []}', "format version 2"),
        (b'{"version": 1, "pins": [{"tag": "iris"}]}', "name:version"),
    ],
)
def test_a_corrupt_pins_file_raises_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "pins.json").write_bytes(content)

    with pytest.raises(PinsError, match=message) as raised:
        PinBoard(tmp_path).load()
    assert str(tmp_path / "pins.json") in str(raised.value)


def test_a_corrupt_pins_file_is_never_overwritten_by_a_pin_command(tmp_path: Path) -> None:
    (tmp_path / "pins.json").write_bytes(b"{not json")

    with pytest.raises(PinsError):
        PinBoard(tmp_path).add(pin("iris:v1"))
    assert (tmp_path / "pins.json").read_bytes() == b"{not json"


def test_a_pin_that_would_make_the_file_too_large_to_read_is_refused_writing_nothing(
    tmp_path: Path,
) -> None:
    board = PinBoard(tmp_path)
    for index in range(4):
        board.add(pin(f"iris:v{index}", reason="r" * 1_000_000))
    before = (tmp_path / "pins.json").read_bytes()

    with pytest.raises(PinsError, match=r"would make .* nothing was written"):
        board.add(pin("iris:v4", reason="r" * 1_000_000))
    assert (tmp_path / "pins.json").read_bytes() == before
    assert len(board.load()) == 4


def test_unpinning_reads_a_file_over_the_read_limit_up_to_a_hard_cap(tmp_path: Path) -> None:
    board = PinBoard(tmp_path)
    large = [pin(f"iris:v{index}", reason="r" * 1_000_000) for index in range(5)]
    document = {"version": 1, "pins": [item.as_dict() for item in large]}
    (tmp_path / "pins.json").write_text(json.dumps(document))

    with pytest.raises(PinsError, match="larger than"):
        board.load()
    assert board.remove("iris:v0") == [large[0]]
    assert board.load() == tuple(large[1:])

    (tmp_path / "pins.json").write_bytes(b" " * (MAX_REPAIR_BYTES + 1))
    with pytest.raises(PinsError, match=f"rm {tmp_path / 'pins.json'}"):
        board.remove("iris:v1")


def test_the_reader_fails_safe_pinning_everything_and_logging_why(
    tmp_path: Path, audit: Audit
) -> None:
    (tmp_path / "pins.json").write_text("{truncated")

    assert pin_reader(tmp_path, lambda: WHEN)() == (EVERYTHING,)
    (event,) = audit.named("pins_unreadable")
    assert event["level"] == "error"
    assert event["path"] == str(tmp_path / "pins.json")


# -- the engine -----------------------------------------------------------------------


def retention_store(store: Path) -> Engine:
    """Three versions of iris, the newest latest; retention keeps one. Return the engine."""
    now = datetime.now(tz=UTC)
    for index in range(3):
        make_version(store, "iris", f"v{index}", created=now - timedelta(days=10 - index))
    point_latest(store, "iris", "v2")
    config = build_config(
        {
            "store": str(store),
            "trigger": {"high_percent": 99.9, "low_percent": 99.0},
            "protect": {"settle": 0, "min_age": 0, "in_use": False},
            "retention": {"max_versions": 1},
        }
    )
    return Engine(config)


def planned(engine: Engine) -> list[str]:
    """Return the versions the engine's plan would remove now."""
    return [removal.version.version for removal in engine.make_plan().plan.removals]


def test_the_engine_reads_the_pins_file_afresh_for_every_plan(store: Path) -> None:
    engine = retention_store(store)
    board = PinBoard(engine.state_dir)
    engine.pruner.prepare()

    assert planned(engine) == ["v0", "v1"]
    board.add(pin("iris:v0"))
    assert planned(engine) == ["v1"]
    board.add(pin("iris:*", kind="bentos"))  # another kind's pin protects no model
    assert planned(engine) == ["v1"]
    board.remove("iris:v0")
    assert planned(engine) == ["v0", "v1"]


def test_an_expired_pin_no_longer_protects(store: Path) -> None:
    engine = retention_store(store)
    engine.pruner.prepare()
    now = datetime.now(tz=UTC)
    board = PinBoard(engine.state_dir)
    board.add(pin("iris:v0", until=now - timedelta(seconds=1)))
    board.add(pin("iris:v1", until=now + timedelta(hours=1)))

    assert planned(engine) == ["v0"]


def test_a_prune_with_a_corrupt_pins_file_removes_nothing(store: Path, audit: Audit) -> None:
    engine = retention_store(store)
    engine.pruner.prepare()
    (engine.state_dir / "pins.json").write_text('{"version": 1, "pins": [{"tag": 7}]}')

    result = engine.cycle()

    assert result.removed == ()
    assert sorted(path.name for path in (store / "models" / "iris").iterdir()) == [
        "latest",
        "v0",
        "v1",
        "v2",
    ]
    assert audit.named("pins_unreadable")
    assert not audit.named("version_removed")
    assert engine.pins_unreadable


def test_the_engine_says_the_pins_are_readable_again_once_the_file_is_fixed(store: Path) -> None:
    engine = retention_store(store)
    engine.pruner.prepare()
    pins_file = engine.state_dir / "pins.json"
    pins_file.write_text("{truncated")
    engine.make_plan()
    assert engine.pins_unreadable

    pins_file.unlink()
    engine.make_plan()

    assert not engine.pins_unreadable

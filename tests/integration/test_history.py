"""The usage history on disk: appended, bounded, set aside when unreadable; who writes it."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from storewarden import durable, history
from storewarden.config import build_config
from storewarden.engine import Engine
from storewarden.history import History
from storewarden.index import Index
from storewarden.prune import STATE_MARKER
from storewarden.store import census
from storewarden.usage import Usage
from tests.conftest import Audit
from tests.storebuilder import NOW, make_series, make_version

USAGE = Usage(1000, 400, 600, 100)


def state_dir(store: Path) -> Path:
    """Return a marked state directory for ``store``."""
    state = store / ".storewarden"
    state.mkdir()
    (state / STATE_MARKER).touch()
    return state


def test_each_sample_counts_the_bytes_written_since_the_one_before(store: Path) -> None:
    make_series(store, "iris", 2, size=8192)
    board = History(state_dir(store))
    first = board.record(NOW, USAGE, census(store, ("models",)).versions)
    make_version(store, "iris", "new", size=65536)
    versions = census(store, ("models",)).versions
    second = board.record(NOW, USAGE, versions)

    assert first is not None
    assert second is not None
    assert first.written == 0  # no history before it: nothing to compare with
    new = next(record for record in versions if record.version == "new")
    assert second.written == new.bytes
    assert second.elapsed is not None
    assert History(board.path.parent).read() == [first, second]


def test_an_unreadable_history_is_set_aside_and_a_new_one_started(
    store: Path, audit: Audit
) -> None:
    state = state_dir(store)
    (state / history.HISTORY_FILE).write_text("this is not a history\n")
    board = History(state)

    sample = board.record(NOW, USAGE, ())

    [event] = audit.named("history_unreadable")
    assert event["moved_to"] == str(state / "history.jsonl.unreadable")
    assert (state / "history.jsonl.unreadable").read_text() == "this is not a history\n"
    assert History(state).read() == [sample]


def test_the_history_stays_under_its_bound_and_keeps_the_total_written(store: Path) -> None:
    state = state_dir(store)
    board = History(state, max_bytes=4000)
    total = 0
    for index in range(400):
        board.previous = {}
        make_version(store, "iris", f"v{index}", size=0)
        versions = census(store, ("models",)).versions
        sample = board.record(NOW, USAGE, [versions[-1]])
        assert sample is not None
        total += sample.written
        assert board.path.stat().st_size <= 4000

    kept = History(state).read()
    assert sum(sample.written for sample in kept) == total
    assert len(kept) < 400


def test_read_only_commands_never_write_a_sample(store: Path) -> None:
    make_series(store, "iris", 3)
    state_dir(store)
    engine = Engine(build_config({"store": str(store)}), read_only=True)

    engine.record_history(engine.census().versions, USAGE, protected=0)

    assert not (store / ".storewarden" / history.HISTORY_FILE).exists()


def test_a_prune_appends_a_sample_with_what_it_protected(store: Path) -> None:
    make_series(store, "iris", 3)
    engine = Engine(build_config({"store": str(store)}))
    result = engine.cycle()
    snapshot = engine.census()

    engine.record_history(snapshot.versions, engine.usage(snapshot.store_bytes), protected=7)

    [sample] = History(engine.state_dir).read()
    assert sample.protected == 7
    assert sample.store == snapshot.store_bytes
    assert json.loads(engine.history.path.read_text().splitlines()[0]) == history.HEADER
    assert result.removed == ()


def test_the_daemons_running_flows_equal_the_growth_between_two_looks(store: Path) -> None:
    make_version(store, "iris", "grows", size=8192)
    make_version(store, "iris", "goes", size=16384)
    make_version(store, "iris", "stays", size=4096)
    index = Index(store, ("models",))
    index.load(census(store, ("models",)))
    before = {record.path: record.bytes for record in index.versions.values()}
    start = (index.written, index.freed)

    with (store / "models" / "iris" / "grows" / "more.bin").open("wb") as grown:
        grown.write(b"x" * 50_000)
    shutil.rmtree(store / "models" / "iris" / "goes")
    make_version(store, "iris", "new", size=65536)
    index.refresh([("models", "iris", version) for version in ("grows", "goes", "new")])
    index.refresh([("models", "iris", "stays")])  # read again, unchanged: no flow

    flows = (index.written - start[0], index.freed - start[1])
    assert flows == history.growth(before, None, index.versions.values())
    assert flows[0] >= 50_000 + 65536
    assert flows[1] >= 16384

    # A reconcile (a whole census loaded over the index) counts what events missed.
    before = {record.path: record.bytes for record in index.versions.values()}
    start = (index.written, index.freed)
    shutil.rmtree(store / "models" / "iris" / "stays")
    make_version(store, "iris", "unseen", size=32768)
    index.load(census(store, ("models",)))
    flows = (index.written - start[0], index.freed - start[1])
    assert flows == history.growth(before, None, index.versions.values())
    assert flows[0] >= 32768


def test_a_sample_reads_the_history_again_only_after_another_process_wrote_it(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = state_dir(store)
    daemon, prune = History(state), History(state)
    first = daemon.record(NOW, USAGE, (), flows=(10, 0))
    reads: list[Path] = []
    real_read = History.read

    def counted(self: History) -> list[history.Sample]:
        reads.append(self.path)
        return real_read(self)

    monkeypatch.setattr(History, "read", counted)
    second = daemon.record(NOW, USAGE, (), flows=(20, 0))
    assert reads == []  # the file is as this process left it: the samples in memory serve
    other = prune.record(NOW, USAGE, ())
    third = daemon.record(NOW, USAGE, (), flows=(30, 5))

    assert len(reads) == 2  # the prune read it once; the daemon again after the prune wrote
    assert daemon.load() == [first, second, other, third]
    assert History(state).read() == [first, second, other, third]
    assert third is not None
    assert (third.written, third.freed) == (30, 5)


def test_a_sample_that_could_not_be_written_is_not_kept_in_memory_either(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    board = History(state_dir(store))
    first = board.record(NOW, USAGE, (), flows=(0, 0))
    real = durable.append_line

    def disk_full(path: Path, line: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable, "append_line", disk_full)
    assert board.record(NOW, USAGE, (), flows=(1000, 0)) is None
    monkeypatch.setattr(durable, "append_line", real)
    third = board.record(NOW, USAGE, (), flows=(1500, 0))  # the daemon carries the 1000 on

    assert board.load() == History(board.path.parent).read() == [first, third]

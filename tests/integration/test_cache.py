"""The census cache: reused only while a version directory is unchanged, never trusted blindly."""

from __future__ import annotations

import contextlib
import gc
import json
import json.decoder
import os
import shutil
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storewarden import cache as cache_module
from storewarden.cache import FILE_NAME, FORMAT, CensusCache
from storewarden.config import build_config
from storewarden.engine import Engine
from storewarden.store import Snapshot, Stamp, VersionRecord, census
from tests.storebuilder import (
    NOW,
    backdate_arrivals,
    bento_yaml,
    make_bento,
    make_series,
    make_version,
)


def engine_for(store: Path) -> Engine:
    return Engine(build_config({"store": str(store)}))


def records(snapshot: Snapshot) -> dict[Path, tuple[object, ...]]:
    return {
        record.path: (
            record.bytes,
            record.creation_time,
            dict(record.labels),
            record.complete,
            record.creation_time_estimated,
        )
        for record in snapshot.versions
    }


@pytest.fixture
def cached_store(store: Path) -> Path:
    make_series(store, "iris", 4)
    make_series(store, "bert", 3)
    make_version(store, "tagged", "t1x", labels={"stage": "prod"})
    engine = engine_for(store)
    engine.pruner.prepare()  # the warden's own state directory: the cache is written there
    engine.census()
    return store


def test_a_second_census_reuses_every_record_and_equals_a_cold_one(cached_store: Path) -> None:
    cache = CensusCache(cached_store / ".storewarden" / FILE_NAME, cached_store)
    cache.load()
    warm = census(cached_store, cache=cache)
    assert cache.hits == 8
    assert cache.misses == 0
    assert records(warm) == records(census(cached_store))


def test_a_version_whose_directory_changed_is_censused_again(cached_store: Path) -> None:
    version = next((cached_store / "models" / "iris").glob("iris*"))
    (version / "extra.bin").write_bytes(b"x" * 10_000)
    cache = CensusCache(cached_store / ".storewarden" / FILE_NAME, cached_store)
    cache.load()
    warm = census(cached_store, cache=cache)
    assert cache.misses == 1
    assert records(warm) == records(census(cached_store))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\xff garbage",
        b"[]",
        b'{"format": 99, "root": "ROOT", "entries": {}}',
        b'{"format": FORMAT, "root": "/some/other/store", "entries": {}}',
        b'{"format": FORMAT, "root": "ROOT", "entries": {"models/iris/irisv0000x": [1, 2]}}',
        b'{"format": FORMAT, "root": "ROOT", "entries": {"models/iris/irisv0000x": "x"}}',
    ],
    ids=["empty", "binary", "list", "format", "other-store", "short-row", "not-a-row"],
)
def test_a_corrupt_or_foreign_cache_is_ignored_and_rebuilt(
    cached_store: Path, content: bytes
) -> None:
    path = cached_store / ".storewarden" / FILE_NAME
    content = content.replace(b"FORMAT", str(FORMAT).encode())
    path.write_bytes(content.replace(b"ROOT", str(cached_store).encode()))
    snapshot = engine_for(cached_store).census()
    assert records(snapshot) == records(census(cached_store))
    rebuilt = json.loads(path.read_bytes())
    assert rebuilt["format"] == FORMAT
    assert len(rebuilt["entries"]) == 8


def test_a_cache_an_older_storewarden_wrote_is_not_trusted(cached_store: Path) -> None:
    # Format 1 had no bento references: its rows, with stamps that still match,
    # would make every bento look as if it needed no model.
    path = cached_store / ".storewarden" / FILE_NAME
    data = json.loads(path.read_bytes())
    data["format"] = 1
    data["entries"] = {key: row[:8] for key, row in data["entries"].items()}
    path.write_text(json.dumps(data))
    cache = CensusCache(path, cached_store)
    cache.load()

    census(cached_store, cache=cache)

    assert cache.hits == 0
    assert cache.misses == 8


def test_a_cache_row_with_the_right_stamp_but_nonsense_values_is_a_miss(
    cached_store: Path,
) -> None:
    path = cached_store / ".storewarden" / FILE_NAME
    data = json.loads(path.read_bytes())
    key = next(iter(data["entries"]))
    data["entries"][key][4] = "not a timestamp"
    path.write_text(json.dumps(data))
    cache = CensusCache(path, cached_store)
    cache.load()
    warm = census(cached_store, cache=cache)
    assert cache.misses == 1
    assert records(warm) == records(census(cached_store))


def test_a_half_written_version_is_never_cached(store: Path) -> None:
    make_version(store, "iris", "partial1", descriptor=False)
    make_version(store, "iris", "whole1")
    engine = engine_for(store)
    engine.pruner.prepare()
    engine.census()
    entries = json.loads((store / ".storewarden" / FILE_NAME).read_bytes())["entries"]
    assert "models/iris/partial1" not in entries
    assert "models/iris/whole1" in entries


def test_no_cache_is_written_into_a_directory_that_is_not_the_wardens_own(store: Path) -> None:
    make_series(store, "iris", 2)
    (store / ".storewarden").mkdir()  # there, but not made (nor marked) by the warden

    engine_for(store).census()

    assert os.listdir(store / ".storewarden") == []


def test_a_read_only_command_never_creates_the_state_directory(store: Path) -> None:
    make_series(store, "iris", 2)
    engine_for(store).census()
    assert not (store / ".storewarden").exists()


def test_a_census_whose_cache_is_never_saved_serialises_no_row_of_a_model(
    cached_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read-only status on a cold store spent a tenth of its census writing
    # the JSON of rows it would never save.
    for version in (cached_store / "models" / "iris").glob("iris*"):
        (version / "extra.bin").write_bytes(b"x")  # every iris row is stale: a miss
    make_bento(cached_store, "svc", "b1", needs=("bert:latest",))
    serialised: list[str] = []
    real_member = cache_module._member

    def member(key: str, row: list[object]) -> bytes:
        serialised.append(key)
        return real_member(key, row)

    monkeypatch.setattr(cache_module, "_member", member)
    before = (cached_store / ".storewarden" / FILE_NAME).read_bytes()
    reader = Engine(build_config({"store": str(cached_store)}), read_only=True)

    snapshot = reader.census()

    assert serialised == ["bentos/svc/b1"]  # kept for the re-read of bentos before a removal
    assert (cached_store / ".storewarden" / FILE_NAME).read_bytes() == before
    assert records(snapshot) == records(census(cached_store))
    serialised.clear()
    engine_for(cached_store).census()  # a writer's census saves what it found
    assert {key.split("/")[1] for key in serialised} >= {"iris", "svc"}


def test_when_a_version_was_first_seen_is_kept_across_runs_while_its_directory_is_unchanged(
    cached_store: Path,
) -> None:
    engine = engine_for(cached_store)
    first = {record.path: record.arrived for record in engine.census().versions}
    version = next(iter(first))
    time.sleep(0.05)

    again = {record.path: record.arrived for record in engine_for(cached_store).census().versions}

    assert again == first
    assert all(arrived is not None for arrived in again.values())
    version.chmod(0o750)  # moves the directory's ctime, as any change inside would
    changed = {record.path: record.arrived for record in engine_for(cached_store).census().versions}
    # A directory that changed may be another one under the same tag: it arrived
    # no earlier than its ctime now, and the others keep theirs.
    assert changed[version] == datetime.fromtimestamp(version.stat().st_ctime_ns / 1e9, tz=UTC)
    assert changed[version] > first[version]  # type: ignore[operator]
    assert {path: arrived for path, arrived in changed.items() if path != version} == {
        path: arrived for path, arrived in first.items() if path != version
    }


def test_a_version_deleted_and_imported_again_under_its_tag_arrives_anew(store: Path) -> None:
    # bentoml models delete iris:v1, then bentoml models import of its export:
    # the same tag and creation_time, but it came to the store just now.
    long_ago = NOW - timedelta(days=100)
    make_version(store, "iris", "v1", created=long_ago)
    make_version(store, "iris", "v2", created=NOW - timedelta(days=1), set_latest=True)
    backdate_arrivals(store, {("models", "iris", "v1"): long_ago})
    config = build_config(
        {
            "store": str(store),
            "protect": {"min_age": "0s", "settle": "0s", "keep_last": 0},
            "retention": {"max_age": "30d"},
        }
    )
    planned = Engine(config).make_plan().plan.removals
    assert [r.version.version for r in planned] == ["v1"]  # as recorded: 100 days in the store
    shutil.rmtree(store / "models" / "iris" / "v1")
    make_version(store, "iris", "v1", created=long_ago)

    (record,) = [r for r in Engine(config).census().versions if r.version == "v1"]
    result = Engine(config).cycle()

    assert record.arrived is not None and record.arrived > NOW
    assert result.removed == ()
    assert (store / "models" / "iris" / "v1").is_dir()


def test_a_bento_yaml_rewritten_in_place_is_read_again(store: Path) -> None:
    # Writing into the file (same inode) leaves the bento directory's stamp as it was.
    make_version(store, "iris", "v1", created=NOW - timedelta(days=3))
    make_version(store, "iris", "v2", created=NOW - timedelta(days=2), set_latest=True)
    bento = make_bento(store, "svc", "b1", needs=("iris:v1",), set_latest=True)
    engine = engine_for(store)
    engine.pruner.prepare()
    engine.census()  # the cache now holds svc:b1 needing iris:v1
    directory = os.stat(bento)
    descriptor = bento / "bento.yaml"
    rewritten = bento_yaml("svc", "b1", created=NOW, needs=("iris:v2",))
    with descriptor.open("r+") as handle:
        handle.write(rewritten)
        handle.truncate()
    after = os.stat(bento)
    assert (after.st_mtime_ns, after.st_ctime_ns) == (directory.st_mtime_ns, directory.st_ctime_ns)

    warm = engine_for(store).census()

    (record,) = [r for r in (*warm.versions, *warm.others) if r.kind == "bentos"]
    assert record.references == ("iris:v2",)


# -- memory: nothing per version outlives its use (issue 13) ---------------------------------

VERSIONS = 2_000


def synthetic(root: Path) -> list[tuple[VersionRecord, Stamp]]:
    """Return complete model versions, one label set among them, each with its directory stamp."""
    found = []
    for number in range(VERSIONS):
        version = f"v{number:05d}"
        moment = NOW - timedelta(seconds=number)
        record = VersionRecord(
            kind="models",
            name=f"name{number // 100}",
            version=version,
            path=root / "models" / f"name{number // 100}" / version,
            creation_time=moment,
            creation_time_estimated=False,
            labels={"stage": "prod"} if number % 4 == 0 else {},
            bytes=4096 * (number + 1),
            last_change=moment,
            complete=True,
            arrived=moment,
        )
        stamp = Stamp(10_000 + number, 10**18 + number, 10**18 + number, (1, 2, 3, 4))
        found.append((record, stamp))
    return found


@contextlib.contextmanager
def traced() -> Iterator[list[tracemalloc.Trace]]:
    """Trace allocations in the block; give the blocks still alive after it (collected)."""
    alive: list[tracemalloc.Trace] = []
    gc.collect()
    tracemalloc.start()
    try:
        yield alive
        gc.collect()  # a full collection also empties the free lists
        alive.extend(tracemalloc.take_snapshot().traces)
    finally:
        tracemalloc.stop()


def test_a_census_holds_no_object_per_version_in_the_cache_before_it_is_saved(
    tmp_path: Path,
) -> None:
    # Rows held as Python objects until the save lay between the records the daemon
    # keeps, and left the interpreter's memory pools half empty once freed.
    versions = synthetic(tmp_path)
    cache = CensusCache(tmp_path / FILE_NAME, tmp_path)

    with traced() as alive:
        for record, stamp in versions:
            cache.arrival(record.kind, record.name, record.version, stamp)
            cache.store(record, stamp)

    assert len(alive) < VERSIONS // 40  # the JSON buffers and such: not one per version
    cache.save()
    saved = json.loads((tmp_path / FILE_NAME).read_bytes())
    assert len(saved["entries"]) == len(saved["arrivals"]) == VERSIONS


def test_a_census_reusing_every_row_holds_no_object_per_version_either(tmp_path: Path) -> None:
    versions = synthetic(tmp_path)
    first = CensusCache(tmp_path / FILE_NAME, tmp_path)
    for record, stamp in versions:
        first.arrival(record.kind, record.name, record.version, stamp)
        first.store(record, stamp)
    first.save()
    cache = CensusCache(tmp_path / FILE_NAME, tmp_path)
    cache.load()

    with traced() as alive:
        for record, stamp in versions:
            arrived = cache.arrival(record.kind, record.name, record.version, stamp)
            assert cache.lookup(
                record.kind, record.name, record.version, record.path, stamp, arrived
            )

    assert cache.hits == VERSIONS
    assert not cache.changed()
    assert len(alive) < VERSIONS // 40  # a few, not one per version


def test_records_built_from_the_cache_keep_nothing_of_the_parsed_file(tmp_path: Path) -> None:
    # A record keeping one small object of the document (its size, its labels' strings)
    # kept a memory pool the document's numbers had filled from going back to the system.
    versions = synthetic(tmp_path)
    first = CensusCache(tmp_path / FILE_NAME, tmp_path)
    for record, stamp in versions:
        first.store(record, stamp)
    first.save()

    with traced() as alive:
        cache = CensusCache(tmp_path / FILE_NAME, tmp_path)
        cache.load()
        records = [
            cache.lookup(record.kind, record.name, record.version, record.path, stamp, NOW)
            for record, stamp in versions
        ]
        del cache

    assert records == [replace(record, arrived=NOW) for record, _stamp in versions]
    parsed = [trace for trace in alive if trace.traceback[0].filename == json.decoder.__file__]
    assert len(parsed) < 10

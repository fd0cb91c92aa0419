"""The census cache: reused only while a version directory is unchanged, never trusted blindly."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from storewarden.cache import FILE_NAME, FORMAT, CensusCache
from storewarden.config import build_config
from storewarden.engine import Engine
from storewarden.store import Snapshot, census
from tests.storebuilder import make_series, make_version


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


def test_when_a_version_was_first_seen_is_kept_across_runs_and_changes(
    cached_store: Path,
) -> None:
    engine = engine_for(cached_store)
    first = {record.path: record.arrived for record in engine.census().versions}
    version = next(iter(first))
    time.sleep(0.05)
    version.chmod(0o750)  # moves the directory's ctime, as any change inside would

    again = {record.path: record.arrived for record in engine_for(cached_store).census().versions}

    assert again == first
    assert all(arrived is not None for arrived in again.values())
    # Without the cache, the directory's ctime now stands in.
    cold = {record.path: record.arrived for record in census(cached_store).versions}
    cold_arrival, first_arrival = cold[version], first[version]
    assert cold_arrival is not None and first_arrival is not None
    assert cold_arrival > first_arrival

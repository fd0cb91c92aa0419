"""Bentos and the models they need, on real stores: census, cache, index, prune, delete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storewarden.archive import Archiver
from storewarden.config import Config, build_config
from storewarden.engine import Engine, RefusedError
from storewarden.index import Index
from storewarden.inuse import ProcessView
from storewarden.pins import Pin, PinBoard
from storewarden.store import VersionRecord, census
from tests.conftest import Audit
from tests.storebuilder import NOW, bento_yaml, make_bento, make_version, point_latest

DAY = timedelta(days=1)
SIZE = 64 * 1024


def config_for(store: Path, **sections: Any) -> Config:
    """Return a config whose max_store_size makes every unprotected version a candidate."""
    data: dict[str, Any] = {
        "store": str(store),
        "trigger": {"high_percent": 99.9, "low_percent": 99.0, "max_store_size": 1},
        "protect": {"settle": 0, "min_age": 0, "keep_last": 0, "keep_latest": False},
    }
    for key, value in sections.items():
        base = data.get(key)
        data[key] = {**base, **value} if isinstance(base, dict) else value
    return build_config(data)


def removed_tags(audit: Audit) -> list[str]:
    """Return ``kind/name:version`` of every version_removed event, in order."""
    return [
        f"{event['kind']}/{event['name']}:{event['version']}"
        for event in audit.named("version_removed")
    ]


# -- the census ---------------------------------------------------------------------------


def test_the_census_reads_the_models_each_bento_needs(store: Path) -> None:
    make_bento(store, "svc", "b1", needs=("iris:m1", "Mnist:M2"))
    make_bento(store, "svc", "b2")

    snapshot = census(store)

    needs = {record.tag: record.references for record in snapshot.versions}
    assert needs == {"svc:b1": ("iris:m1", "mnist:m2"), "svc:b2": ()}


def test_a_bento_without_bento_yaml_has_unknown_needs(store: Path) -> None:
    make_version(store, "svc", "b1", kind="bentos", descriptor=False)
    make_version(store, "svc", "b2", kind="bentos", descriptor_text="models: [unclosed\n")

    snapshot = census(store)

    assert {record.tag: record.references for record in snapshot.versions} == {
        "svc:b1": None,
        "svc:b2": None,
    }


def test_a_bento_with_its_own_models_directory_still_needs_the_stores_models(
    store: Path,
) -> None:
    # `bentoml export` copies the models into <bento>/models/ for the length of the
    # export and deletes them after: the store's copy is what the bento needs then.
    path = make_bento(store, "svc", "b1", needs=("iris:m1", "mnist:m2"))
    make_version(path, "iris", "m1", kind="models")  # <bento>/models/iris/m1/model.yaml

    (record,) = census(store).versions

    assert record.references == ("iris:m1", "mnist:m2")


@pytest.mark.parametrize("linked", ["version", "name", "bentos"])
def test_a_bento_behind_a_symlink_still_protects_its_models(
    store: Path, tmp_path: Path, audit: Audit, linked: str
) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY, size=SIZE)
    make_version(store, "iris", "m2", created=NOW - 20 * DAY, size=SIZE, set_latest=True)
    bento = make_bento(store, "svc", "b1", needs=("iris:m1",), created=NOW - 10 * DAY)
    moved = {
        "version": bento,
        "name": bento.parent,
        "bentos": store / "bentos",
    }[linked]
    elsewhere = tmp_path / "elsewhere" / moved.name
    elsewhere.parent.mkdir()
    shutil.move(moved, elsewhere)
    os.symlink(elsewhere, moved)  # BentoML follows it and serves the bento

    result = Engine(config_for(store, protect={"keep_latest": True})).cycle()

    assert removed_tags(audit) == []
    assert (store / "models" / "iris" / "m1").is_dir()
    (kept,) = [kept for kept in result.plan.kept if kept.version.version == "m1"]
    assert kept.reasons == ("referenced",)
    with pytest.raises(RefusedError, match="svc:b1"):
        Engine(config_for(store)).delete(["iris:m1"], kind="models")
    assert (store / "bentos" / "svc" / "b1" / "bento.yaml").is_file()  # left alone, through it


def test_a_bento_yaml_of_several_megabytes_is_read_whole(store: Path, audit: Audit) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY)
    text = bento_yaml("svc", "b1", created=NOW - DAY, needs=("iris:m1",))
    # BentoML writes a service's API schema in bento.yaml: a large enum makes it megabytes.
    text += "schema:\n  enum:\n" + "".join(f"  - member{index}\n" for index in range(400_000))
    path = make_version(store, "svc", "b1", kind="bentos", descriptor_text=text)
    assert (path / "bento.yaml").stat().st_size > 5_000_000

    result = Engine(config_for(store, protect={"pins": ["svc:*"]})).cycle()

    assert removed_tags(audit) == []
    (bento,) = [record for record in census(store).versions if record.kind == "bentos"]
    assert bento.complete
    assert bento.references == ("iris:m1",)
    assert [kept.reasons for kept in result.plan.kept if kept.version.kind == "models"] == [
        ("referenced",)
    ]


def test_a_descriptor_too_large_to_read_is_kept_as_unreadable_not_abandoned(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY)
    path = make_version(store, "svc", "b1", kind="bentos", created=NOW - DAY)
    with (path / "bento.yaml").open("ab") as handle:
        handle.truncate(65 * 1024 * 1024)  # sparse: past the 64 MiB a bento.yaml may have

    result = Engine(config_for(store, protect={"abandoned_after": 0})).cycle()

    assert removed_tags(audit) == []
    assert [kept.reasons[0] for kept in result.plan.kept if kept.version.kind == "bentos"] == [
        "unreadable"
    ]
    assert result.plan.references.unknown[0].path == path


def test_bentos_are_read_for_their_needs_when_only_models_are_managed(store: Path) -> None:
    make_version(store, "iris", "m1")
    make_bento(store, "svc", "b1", needs=("iris:m1",))

    snapshot = census(store, kinds=("models",))

    assert [record.tag for record in snapshot.versions] == ["iris:m1"]
    assert [(record.tag, record.references) for record in snapshot.others] == [
        ("svc:b1", ("iris:m1",))
    ]
    assert snapshot.store_bytes == snapshot.versions[0].bytes


def test_a_bento_bentoml_build_is_assembling_under_tmp_is_read_too(store: Path) -> None:
    staging = store / "tmp" / "bentoml_bento_svcab12cd34"
    staging.mkdir(parents=True)
    (staging / "bento.yaml").write_text(bento_yaml("svc", "b9", created=NOW, needs=("iris:m1",)))
    (store / "tmp" / "unrelated").mkdir()

    snapshot = census(store)

    assert [(record.path, record.references) for record in snapshot.staging] == [
        (staging, ("iris:m1",))
    ]
    assert snapshot.versions == ()


def test_bento_needs_survive_the_census_cache(store: Path, audit: Audit) -> None:
    make_bento(store, "svc", "b1", needs=("iris:m1",))
    engine = Engine(config_for(store))
    engine.pruner.prepare()

    engine.census()  # writes the cache
    cached = engine.census()  # reads it

    assert engine._cache is not None and engine._cache.hits == 1
    assert [record.references for record in cached.versions] == [("iris:m1",)]


def test_the_daemon_index_learns_the_needs_of_a_bento_that_appears(store: Path) -> None:
    make_version(store, "iris", "m1")
    index = Index(store, ("models",))
    index.load(census(store, kinds=("models",)))

    make_bento(store, "svc", "b1", needs=("iris:m1",))
    index.refresh([("bentos", "svc", "b1")])

    assert [(record.tag, record.references) for record in index.snapshot().others] == [
        ("svc:b1", ("iris:m1",))
    ]
    shutil.rmtree(store / "bentos" / "svc" / "b1")
    index.refresh([("bentos", "svc", "b1")])
    assert index.snapshot().others == ()


# -- prune -------------------------------------------------------------------------------


def test_a_prune_removes_a_bento_before_the_model_it_needed(store: Path, audit: Audit) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY, size=SIZE)
    make_version(store, "iris", "m2", created=NOW - 20 * DAY, size=SIZE, set_latest=True)
    make_bento(store, "svc", "b1", needs=("iris:m1",), created=NOW - 25 * DAY)
    make_bento(store, "svc", "b2", needs=("iris:m2",), created=NOW - 10 * DAY, set_latest=True)

    Engine(config_for(store, protect={"keep_latest": True})).cycle()

    assert removed_tags(audit) == ["bentos/svc:b1", "models/iris:m1"]
    assert (store / "models" / "iris" / "m2").is_dir()
    assert (store / "bentos" / "svc" / "b2").is_dir()


def test_a_model_whose_bento_stays_is_kept_and_status_names_the_bento(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY, size=SIZE)
    make_bento(store, "svc", "b1", needs=("iris:m1",), created=NOW - 25 * DAY)

    engine = Engine(config_for(store, protect={"pins": ["svc:*"]}))
    result = engine.cycle()

    assert removed_tags(audit) == []
    (kept,) = [kept for kept in result.plan.kept if kept.version.kind == "models"]
    assert kept.reasons == ("referenced",)
    assert kept.referenced_by == ("svc:b1",)


def test_a_bento_built_after_the_plan_protects_its_model_at_the_re_check(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY, size=SIZE)
    engine = Engine(config_for(store))
    stale = engine.census()  # the plan is made from this: no bento yet

    make_bento(store, "svc", "b1", needs=("iris:m1",), created=NOW - DAY)
    engine.config = config_for(store, protect={"pins": ["svc:*"]})
    result = engine.cycle(snapshot=stale)

    assert removed_tags(audit) == []
    assert [(record.tag, reasons) for record, reasons in result.skipped] == [
        ("iris:m1", ("referenced",))
    ]
    assert (store / "models" / "iris" / "m1").is_dir()


def test_a_bento_being_written_holds_every_model_back_and_says_which(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY, size=SIZE)
    building = make_version(store, "svc", "b1", kind="bentos", descriptor=False)

    # Everything was written just now: a clock 15 minutes ahead makes the model
    # settled (10 minutes) while bentos still settle (an hour, by a rule).
    later = datetime.now(tz=UTC) + timedelta(minutes=15)
    config = config_for(
        store, protect={"settle": 600}, rules=[{"match": "*", "kind": "bentos", "settle": 3600}]
    )
    result = Engine(config, clock=lambda: later).cycle()

    assert removed_tags(audit) == []
    (event,) = audit.named("references_unknown")
    assert event["bento"] == "svc:b1"
    assert event["path"] == str(building)
    assert event["reason"] == "no bento.yaml"
    assert event["blocked_versions"] == 1
    assert result.plan.references.unknown[0].path == building


def test_a_bento_yaml_that_names_bad_tags_or_missing_models_is_reported_once(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY)
    text = bento_yaml("svc", "b1", created=NOW - DAY, needs=("iris:m1", "ghost:v1"))
    text = text.replace("models: []", "models:\n- tag: 42\n- tag: Not A Tag")
    make_version(store, "svc", "b1", kind="bentos", descriptor_text=text)
    engine = Engine(config_for(store, protect={"pins": ["svc:*"]}))

    engine.cycle()
    engine.cycle()

    assert [event["problem"] for event in audit.named("bento_reference_invalid")] == [
        "models: tag 42 is not text; ignored",
        "models: tag 'Not A Tag' has no valid model name; ignored",
    ]
    assert [event["models"] for event in audit.named("bento_reference_missing")] == [["ghost:v1"]]
    assert (store / "models" / "iris" / "m1").is_dir()


def test_bento_references_hold_when_only_models_are_managed(store: Path, audit: Audit) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY, size=SIZE)
    make_version(store, "iris", "m2", created=NOW - 29 * DAY, size=SIZE)
    make_bento(store, "svc", "b1", needs=("iris:m1",))

    Engine(config_for(store, kinds=["models"])).cycle()

    assert removed_tags(audit) == ["models/iris:m2"]
    assert (store / "bentos" / "svc" / "b1").is_dir()


# -- explicit delete ---------------------------------------------------------------------


def test_delete_of_a_model_a_bento_needs_is_refused_naming_the_bento(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1")
    make_bento(store, "svc", "b1", needs=("iris:m1",))

    with pytest.raises(RefusedError, match=r"referenced.*svc:b1"):
        Engine(config_for(store)).delete(["iris:m1"], kind="models")

    assert (store / "models" / "iris" / "m1").is_dir()
    assert audit.named("version_removed") == []


def test_delete_of_a_bento_and_its_model_together_removes_the_bento_first(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1")
    make_bento(store, "svc", "b1", needs=("iris:m1",))

    Engine(config_for(store)).delete(["iris:m1", "svc:b1"])

    assert removed_tags(audit) == ["bentos/svc:b1", "models/iris:m1"]


def test_forced_delete_of_a_needed_model_names_the_bentos_it_breaks(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1")
    make_bento(store, "svc", "b1", needs=("iris:m1",))
    make_bento(store, "svc", "b2", needs=("iris:m1",))

    Engine(config_for(store)).delete(["iris:m1"], kind="models", force=True)

    (removed,) = audit.named("version_removed")
    assert removed["broken_bentos"] == ["svc:b1", "svc:b2"]
    (broken,) = audit.named("bentos_broken")
    assert broken["bentos"] == ["svc:b1", "svc:b2"]
    assert "svc:b1" in broken["message"]


def test_a_delete_that_meets_a_new_bento_at_the_re_check_skips_the_model(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1")

    def build_then_list_processes() -> list[ProcessView]:
        # Called first by the refusal check, before the removal's own re-check.
        if not (store / "bentos" / "svc").exists():
            make_bento(store, "svc", "b1", needs=("iris:m1",))
        return []

    engine = Engine(config_for(store), processes=build_then_list_processes)
    result = engine.delete(["iris:m1"], kind="models")

    assert [(record.tag, reasons) for record, reasons in result.skipped] == [
        ("iris:m1", ("referenced",))
    ]
    assert os.path.isdir(store / "models" / "iris" / "m1")


def test_a_pointer_only_reference_by_latest_protects_what_latest_names(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "m1", created=NOW - 30 * DAY, size=SIZE)
    make_version(store, "iris", "m2", created=NOW - 20 * DAY, size=SIZE)
    point_latest(store, "iris", "m1")
    make_bento(store, "svc", "b1", needs=("iris:latest",))

    Engine(config_for(store, protect={"pins": ["svc:*"]})).cycle()

    assert removed_tags(audit) == ["models/iris:m2"]


# -- while a version is being archived ----------------------------------------------------


class ArchiveThen(Archiver):
    """A real archiver that, once the archive is written, does ``then`` (as time passes)."""

    def __init__(self, directory: Path, store: Path, then: Callable[[], object]) -> None:
        super().__init__(directory, store=store)
        self.then = then

    def write(self, record: VersionRecord, *, run_id: str | None = None) -> Path:
        path = super().write(record, run_id=run_id)
        self.then()
        return path


@pytest.mark.parametrize("meanwhile", ["a-bento-is-built", "it-is-pinned", "it-is-opened"])
def test_what_happens_while_a_version_is_archived_still_protects_it(
    store: Path, tmp_path: Path, audit: Audit, meanwhile: str
) -> None:
    victim = make_version(store, "iris", "m1", created=NOW - 30 * DAY, size=SIZE)
    make_version(store, "iris", "m2", created=NOW - 20 * DAY, size=SIZE, set_latest=True)
    config = config_for(store, protect={"keep_latest": True})
    holders: list[ProcessView] = []
    engine = Engine(config, processes=lambda: holders)
    actions: dict[str, Callable[[], object]] = {
        "a-bento-is-built": lambda: make_bento(store, "svc", "b1", needs=("iris:m1",)),
        "it-is-pinned": lambda: PinBoard(engine.state_dir).add(
            Pin("iris:m1", None, "test", datetime.now(tz=UTC))
        ),
        "it-is-opened": lambda: holders.append(
            ProcessView(4242, "server", (), None, (str(victim / "weights.bin"),))
        ),
    }
    archives = tmp_path / "archive"
    engine.archiver = ArchiveThen(archives, store, actions[meanwhile])
    engine.forget_process_table()

    result = engine.cycle()

    assert removed_tags(audit) == []
    assert victim.is_dir()
    assert [record.version for record, _reasons in result.skipped] == ["m1"]
    assert [event["version"] for event in audit.named("archive_written")] == ["m1"]
    assert len(list(archives.iterdir())) == 1  # the archive stays: nothing is lost either way

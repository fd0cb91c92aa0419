"""Engine and Pruner on real stores under tmp_path: pointers, trash, re-checks, crashes, lock."""

from __future__ import annotations

import errno
import itertools
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storewarden.config import Config, build_config
from storewarden.engine import CycleResult, Engine, RefusedError, UnknownTagError
from storewarden.inuse import ProcessView
from storewarden.prune import Operations, StoreBusyError, UnsafeStateDirError
from storewarden.store import census
from tests.conftest import Audit
from tests.storebuilder import NOW, make_version, point_latest, read_latest

DAY = timedelta(days=1)


def config_for(store: Path, **sections: Any) -> Config:
    """Return a config for ``store`` where fresh versions are not held back by settle/min_age.

    The triggers sit at the top of the scale so the real disk's usage never
    starts a pressure prune here; tests that want removals use retention or
    an explicit delete. ``sections`` are merged over these defaults.
    """
    data: dict[str, Any] = {
        "store": str(store),
        "trigger": {"high_percent": 99.9, "low_percent": 99.0},
        "protect": {"settle": 0, "min_age": 0},
    }
    for key, value in sections.items():
        base = data.get(key)
        data[key] = {**base, **value} if isinstance(base, dict) else value
    return build_config(data)


def store_tree(root: Path) -> dict[str, str]:
    """Return every entry under models/ and bentos/ as relative path -> what it is."""
    tree: dict[str, str] = {}
    for kind in ("models", "bentos"):
        top = root / kind
        if not top.exists():
            continue
        for base, directories, files in os.walk(top):
            for entry in [*directories, *files]:
                path = Path(base) / entry
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    what = f"symlink -> {os.readlink(path)}"
                elif stat.S_ISDIR(info.st_mode):
                    what = "directory"
                else:
                    what = f"file {info.st_size}"
                tree[str(path.relative_to(root))] = what
    return tree


def symlink_latest(root: Path, name: str, version: str, *, kind: str = "models") -> Path:
    """Point ``latest`` at ``version`` as other tools do: a relative symlink."""
    pointer = root / kind / name / "latest"
    pointer.unlink(missing_ok=True)
    os.symlink(version, pointer)
    return pointer


def set_latest(root: Path, name: str, version: str, form: str, *, kind: str = "models") -> None:
    """Point ``latest`` at ``version`` in ``form`` (file or symlink)."""
    if form == "symlink":
        symlink_latest(root, name, version, kind=kind)
    else:
        point_latest(root, name, version, kind=kind)


def assert_pointer(root: Path, name: str, version: str, form: str, *, kind: str = "models") -> None:
    """Assert ``latest`` names ``version`` in ``form``; a file is 0644 with no trailing newline."""
    pointer = root / kind / name / "latest"
    info = os.lstat(pointer)
    if form == "symlink":
        assert stat.S_ISLNK(info.st_mode)
        assert os.readlink(pointer) == version
    else:
        assert stat.S_ISREG(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o644
        assert pointer.read_bytes() == version.encode()


def removed_paths(audit: Audit) -> list[str]:
    """Return the path of every version_removed event, in order."""
    return [event["path"] for event in audit.named("version_removed")]


def state_entries(root: Path) -> dict[str, list[str]]:
    """Return what the trash and the temp directory of the default state dir hold."""
    state = root / ".storewarden"
    return {
        directory: sorted(os.listdir(state / directory))
        for directory in ("trash", "tmp")
        if (state / directory).exists()
    }


def under(path: Path, directory: Path) -> bool:
    """Return whether ``path`` is ``directory`` or lies below it."""
    return path == directory or directory in path.parents


# -- the latest pointer ------------------------------------------------------------


@pytest.fixture
def restrictive_umask() -> Iterator[None]:
    """Run with umask 077: a rewritten pointer must still be 0644, as BentoML writes it."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("restrictive_umask")
@pytest.mark.parametrize("form", ["file", "symlink"])
def test_removing_the_pointers_target_points_latest_at_the_newest_remaining_complete_version(
    store: Path, audit: Audit, form: str
) -> None:
    # Names sort in another order than creation times: the pointer must follow creation_time.
    make_version(store, "iris", "zz-oldest", created=NOW - 40 * DAY)
    make_version(store, "iris", "aa-newer", created=NOW - 10 * DAY)
    make_version(store, "iris", "mm-middle", created=NOW - 20 * DAY)
    make_version(store, "iris", "zzz-incomplete", descriptor=False)  # newest mtime, no model.yaml
    make_version(store, "iris", "target", created=NOW - 1 * DAY)
    set_latest(store, "iris", "target", form)

    result = Engine(config_for(store)).delete(["iris:target"])

    assert [outcome.record.version for outcome in result.removed] == ["target"]
    assert not (store / "models" / "iris" / "target").exists()
    assert_pointer(store, "iris", "aa-newer", form)
    (changed,) = audit.named("latest_changed")
    assert (changed["old"], changed["new"]) == ("target", "aa-newer")


def test_a_prune_cycle_removing_the_pointers_target_moves_latest_to_the_newest_version(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "v-old", created=NOW - 30 * DAY)
    make_version(store, "iris", "v-new", created=NOW - 5 * DAY)
    make_version(store, "iris", "v-mid", created=NOW - 9 * DAY)
    point_latest(store, "iris", "v-old")  # someone pointed latest back at an old version
    config = config_for(
        store,
        protect={"keep_latest": False, "keep_last": 0},
        retention={"max_versions": 2},
    )

    result = Engine(config).cycle()

    assert [outcome.record.version for outcome in result.removed] == ["v-old"]
    assert_pointer(store, "iris", "v-new", "file")
    assert [event["new"] for event in audit.named("latest_changed")] == ["v-new"]


@pytest.mark.parametrize("form", ["file", "symlink"])
def test_removing_a_names_last_version_removes_the_pointer_and_the_name_directory(
    store: Path, audit: Audit, form: str
) -> None:
    make_version(store, "solo", "v1")
    set_latest(store, "solo", "v1", form)
    make_version(store, "iris", "v1", set_latest=True)

    Engine(config_for(store)).delete(["solo:v1"])

    assert not (store / "models" / "solo").exists()
    assert read_latest(store, "iris") == "v1"
    assert [event["name"] for event in audit.named("latest_removed")] == ["solo"]
    assert [event["name"] for event in audit.named("name_removed")] == ["solo"]
    assert removed_paths(audit) == [str(store / "models" / "solo" / "v1")]


# -- nothing in models/ or bentos/, the trash --------------------------------------


class WatchingOperations(Operations):
    """Real operations that, before every step, record the store and the trash."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.before = store_tree(root)
        self.new_entries: set[str] = set()
        self.steps: list[tuple[str, Path]] = []
        self.trash_seen: set[str] = set()

    def step(self, name: str, path: Path) -> None:
        self.steps.append((name, path))
        self.new_entries |= set(store_tree(self.root)) - set(self.before)
        trash = self.root / ".storewarden" / "trash"
        for entry in os.listdir(trash):
            if (trash / entry / "model.yaml").exists() or (trash / entry / "bento.yaml").exists():
                self.trash_seen.add(entry)


def build_mixed_store(store: Path) -> None:
    """Two model names, a bento name, a dangling pointer and a symlink pointer."""
    for index in range(4):
        make_version(store, "iris", f"iris{index}", created=NOW - (40 - index) * DAY)
        make_version(store, "lily", f"lily{index}", created=NOW - (30 - index) * DAY)
        make_version(store, "svc", f"svc{index}", kind="bentos", created=NOW - (20 - index) * DAY)
    point_latest(store, "iris", "iris3")
    symlink_latest(store, "lily", "lily3")
    point_latest(store, "svc", "svc3", kind="bentos")
    make_version(store, "rose", "rose0")
    point_latest(store, "rose", "no-such-version")


def test_nothing_is_ever_created_inside_models_or_bentos(store: Path, audit: Audit) -> None:
    build_mixed_store(store)
    operations = WatchingOperations(store)
    engine = Engine(config_for(store, retention={"max_versions": 2}), operations=operations)

    cycle = engine.cycle(recover=True)
    engine.delete(["lily:latest", "svc:svc2", "rose:rose0"])

    assert len(cycle.removed) == 6
    assert len(audit.named("version_removed")) == 9
    assert not (store / "models" / "rose").exists()
    assert operations.steps  # the watch really ran, step by step
    assert operations.new_entries == set()
    assert set(store_tree(store)) < set(operations.before)
    # Every write is in the state directory or on an entry the store already had.
    state = store / ".storewarden"
    kind_dirs = (store / "models", store / "bentos")
    for _name, path in operations.steps:
        existed = path in kind_dirs or (
            any(under(path, kind_dir) for kind_dir in kind_dirs)
            and str(path.relative_to(store)) in operations.before
        )
        assert under(path, state) or existed


def test_the_trash_lives_under_the_store_and_is_empty_after_a_cycle(
    store: Path, audit: Audit
) -> None:
    build_mixed_store(store)
    operations = WatchingOperations(store)
    engine = Engine(config_for(store, retention={"max_versions": 1}), operations=operations)

    result = engine.cycle()

    assert len(result.removed) == 9
    assert len(operations.trash_seen) == 9  # every victim passed through <store>/.storewarden/trash
    assert state_entries(store) == {"trash": [], "tmp": []}
    assert all(read_latest(store, name) is not None for name in ("iris", "lily"))


# -- dry run -------------------------------------------------------------------------


def pointer_contents(root: Path) -> dict[str, str | None]:
    """Return what each name's latest names."""
    return {
        f"{kind}/{name.name}": read_latest(root, name.name, kind=kind)
        for kind in ("models", "bentos")
        for name in (root / kind).iterdir()
    }


@pytest.mark.parametrize("how", ["argument", "config"])
def test_a_dry_run_deletes_nothing_and_logs_would_remove(
    store: Path, audit: Audit, how: str
) -> None:
    build_mixed_store(store)
    before, pointers = store_tree(store), pointer_contents(store)
    config = config_for(store, retention={"max_versions": 1}, dry_run=how == "config")

    result = Engine(config).cycle(dry_run=True if how == "argument" else None)

    assert result.dry_run
    assert store_tree(store) == before
    assert pointer_contents(store) == pointers
    assert len(result.would_remove) == 9
    assert sorted(event["version"] for event in audit.named("would_remove")) == sorted(
        removal.version.version for removal in result.would_remove
    )
    assert audit.named("version_removed") == []
    assert audit.named("latest_changed") == []


def test_a_dry_run_delete_deletes_nothing_and_logs_would_remove(store: Path, audit: Audit) -> None:
    build_mixed_store(store)
    before, pointers = store_tree(store), pointer_contents(store)

    result = Engine(config_for(store)).delete(["iris:latest", "iris:iris0"], dry_run=True)

    assert store_tree(store) == before
    assert pointer_contents(store) == pointers
    assert sorted(event["version"] for event in audit.named("would_remove")) == ["iris0", "iris3"]
    assert result.removed == ()
    assert audit.named("version_removed") == []


# -- the re-check just before each removal ------------------------------------------


@dataclass
class AfterPlan:
    """A process table that is empty while the plan is made and then changes the world.

    The Engine asks for processes once while planning (after the census and
    after reading the clock) and again before each removal; ``change`` runs
    on the first call, so the plan is made from the old state.
    """

    change: Callable[[], None]
    holding: tuple[ProcessView, ...] = ()
    calls: int = 0

    def __call__(self) -> Iterable[ProcessView]:
        self.calls += 1
        if self.calls == 1:
            self.change()
            return ()
        return self.holding


def two_old_and_latest(store: Path) -> tuple[Path, Path, Path]:
    """Make v1 < v2 < v3 (latest) of 'iris'; max_versions=1 plans v1 and v2."""
    versions = tuple(
        make_version(store, "iris", f"v{index}", created=NOW - (10 - index) * DAY)
        for index in (1, 2, 3)
    )
    point_latest(store, "iris", "v3")
    return versions[0], versions[1], versions[2]


def planned_versions(result: CycleResult) -> list[str]:
    """Return the versions the cycle's plan meant to remove, in order."""
    return [removal.version.version for removal in result.plan.removals]


def test_a_version_that_became_in_use_after_the_plan_is_skipped(store: Path, audit: Audit) -> None:
    first, second, _ = two_old_and_latest(store)
    server = ProcessView(
        pid=4242,
        name="bentoml-serve",
        cmdline=("bentoml", "serve"),
        cwd=None,
        paths=(str(first / "weights.bin"),),
    )
    processes = AfterPlan(change=lambda: None, holding=(server,))
    engine = Engine(config_for(store, retention={"max_versions": 1}), processes=processes)

    result = engine.cycle()

    assert planned_versions(result) == ["v1", "v2"]
    assert [record.version for record, _reasons in result.skipped] == ["v1"]
    assert [outcome.record.version for outcome in result.removed] == ["v2"]
    assert (first / "model.yaml").exists()
    assert not second.exists()
    (skipped,) = audit.named("removal_skipped")
    assert (skipped["version"], skipped["reasons"]) == ("v1", ["in_use"])


def test_a_version_latest_was_pointed_back_at_after_the_plan_is_skipped(
    store: Path, audit: Audit
) -> None:
    first, second, _ = two_old_and_latest(store)

    def point_back() -> None:
        point_latest(store, "iris", "v1")

    processes = AfterPlan(change=point_back)
    engine = Engine(config_for(store, retention={"max_versions": 1}), processes=processes)

    result = engine.cycle()

    assert planned_versions(result) == ["v1", "v2"]
    assert [record.version for record, _reasons in result.skipped] == ["v1"]
    assert (first / "model.yaml").exists()
    assert read_latest(store, "iris") == "v1"
    assert not second.exists()
    (skipped,) = audit.named("removal_skipped")
    assert (skipped["version"], skipped["reasons"]) == ("v1", ["latest"])


def test_a_version_written_to_after_the_plan_is_skipped_while_it_settles(
    store: Path, audit: Audit
) -> None:
    first = make_version(store, "iris", "v1", created=NOW - 9 * DAY)
    make_version(store, "iris", "v2", created=NOW - 8 * DAY, set_latest=True)
    moment = {"now": datetime.now(tz=UTC) + DAY}  # a day on: every file has settled

    def write_late_shard() -> None:
        (first / "late-shard.bin").write_bytes(b"s" * 4096)
        moment["now"] = datetime.now(tz=UTC)

    engine = Engine(
        config_for(store, protect={"settle": 600}, retention={"max_versions": 1}),
        processes=AfterPlan(change=write_late_shard),
        clock=lambda: moment["now"],
    )

    result = engine.cycle()

    assert planned_versions(result) == ["v1"]
    assert result.removed == ()
    assert (first / "late-shard.bin").exists()
    (skipped,) = audit.named("removal_skipped")
    assert skipped["reasons"] == ["settle"]


def test_a_version_that_lost_its_descriptor_after_the_plan_is_skipped(
    store: Path, audit: Audit
) -> None:
    first, _, _ = two_old_and_latest(store)
    engine = Engine(
        config_for(store, retention={"max_versions": 2}),
        processes=AfterPlan(change=(first / "model.yaml").unlink),
    )

    result = engine.cycle()

    assert planned_versions(result) == ["v1"]
    assert result.removed == ()
    assert first.exists()
    (skipped,) = audit.named("removal_skipped")
    assert "incomplete" in skipped["reasons"]


def test_a_version_pinned_after_the_plan_is_skipped(store: Path, audit: Audit) -> None:
    first, second, _ = two_old_and_latest(store)
    pins: list[str] = []
    engine = Engine(
        config_for(store, retention={"max_versions": 1}),
        processes=AfterPlan(change=lambda: pins.append("iris:v2")),
        pins=lambda: tuple(pins),
    )

    result = engine.cycle()

    assert planned_versions(result) == ["v1", "v2"]
    assert [outcome.record.version for outcome in result.removed] == ["v1"]
    assert second.exists()
    assert not first.exists()
    (skipped,) = audit.named("removal_skipped")
    assert (skipped["version"], skipped["reasons"]) == ("v2", ["pinned"])


def test_a_version_that_vanished_after_the_plan_is_skipped_as_gone(
    store: Path, audit: Audit
) -> None:
    first, second, _ = two_old_and_latest(store)

    def someone_else_deletes() -> None:
        os.rename(first, store / "elsewhere")

    engine = Engine(
        config_for(store, retention={"max_versions": 1}),
        processes=AfterPlan(change=someone_else_deletes),
    )

    result = engine.cycle()

    assert [outcome.record.version for outcome in result.removed] == ["v2"]
    assert (store / "elsewhere" / "model.yaml").exists()
    assert not second.exists()
    (skipped,) = audit.named("removal_skipped")
    assert skipped["reasons"] == ["gone"]


# -- crash recovery ----------------------------------------------------------------------


class SimulatedCrash(BaseException):
    """The process 'dies' here: nothing after this step runs."""


class CrashingOperations(Operations):
    """Real operations that crash before the step after the first ``steps_allowed``.

    Before every step it also checks what BentoML would see at that instant:
    no stray entry in the store and no pointer naming a missing version.
    """

    def __init__(self, root: Path, steps_allowed: int) -> None:
        self.root = root
        self.steps_allowed = steps_allowed
        self.steps: list[tuple[str, Path]] = []
        self.invalid_moments: list[str] = []

    def step(self, name: str, path: Path) -> None:
        snapshot = census(self.root)
        broken = [pointer.problem for pointer in snapshot.pointers.values() if pointer.problem]
        broken += [problem.reason for problem in snapshot.problems]
        if broken:
            self.invalid_moments.append(f"before {name} {path}: {broken}")
        if len(self.steps) >= self.steps_allowed:
            raise SimulatedCrash(f"crash before {name} {path}")
        self.steps.append((name, path))


@dataclass(frozen=True)
class Scenario:
    """A store to build, the removal to crash in, and the version it removes."""

    name: str
    version: str
    form: str
    run: Callable[[Engine], object]
    config: dict[str, Any]


def build_crash_store(root: Path, scenario: Scenario) -> None:
    """Build 'iris' (three versions), 'solo' (one) and 'lily' (two, untouched)."""
    (root / "models").mkdir(parents=True)
    (root / "bentos").mkdir()
    for index, version in enumerate(("v-a", "v-b", "v-c")):
        make_version(root, "iris", version, created=NOW - (30 - 10 * index) * DAY, size=20_000)
    make_version(root, "solo", "only", created=NOW - 50 * DAY)
    make_version(root, "lily", "l1", created=NOW - 60 * DAY)
    make_version(root, "lily", "l2", created=NOW - 59 * DAY)
    for name, version in (("iris", "v-c"), ("solo", "only"), ("lily", "l2")):
        set_latest(root, name, version, scenario.form if name == scenario.name else "file")


SCENARIOS = [
    Scenario(
        "iris", "v-a", "file", lambda engine: engine.cycle(), {"retention": {"max_versions": 2}}
    ),
    Scenario("iris", "v-c", "file", lambda engine: engine.delete(["iris:v-c"]), {}),
    Scenario("iris", "v-c", "symlink", lambda engine: engine.delete(["iris:latest"]), {}),
    Scenario("solo", "only", "file", lambda engine: engine.delete(["solo:only"]), {}),
    Scenario("solo", "only", "symlink", lambda engine: engine.delete(["solo:only"]), {}),
]


def assert_store_consistent(root: Path, forms: dict[str, str]) -> None:
    """Assert every version is complete and every latest names the newest one, in its form."""
    snapshot = census(root)
    assert snapshot.problems == ()
    assert all(record.complete for record in snapshot.versions)
    for name in ("iris", "solo", "lily"):
        records = snapshot.versions_of("models", name)
        if not records:
            assert not (root / "models" / name).exists()
            continue
        newest = max(records, key=lambda record: record.creation_time)
        assert_pointer(root, name, newest.version, forms[name])


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario",
    SCENARIOS,
    ids=["normal-version", "latest-target-file", "latest-target-symlink", "last-file", "last-link"],
)
def test_recovery_after_a_crash_at_any_step_leaves_a_valid_store(
    tmp_path: Path, audit: Audit, scenario: Scenario
) -> None:
    crash_points = 0
    for steps_allowed in itertools.count():
        assert steps_allowed < 200, "the removal never completed"
        root = tmp_path / f"crash-{steps_allowed}" / "bentoml"
        build_crash_store(root, scenario)
        forms = {"iris": "file", "solo": "file", "lily": "file", scenario.name: scenario.form}
        victim = root / "models" / scenario.name / scenario.version
        config = config_for(root, **scenario.config)
        operations = CrashingOperations(root, steps_allowed)
        try:
            scenario.run(Engine(config, operations=operations))
        except SimulatedCrash:
            crashed = True
            crash_points += 1
        else:
            crashed = False
        assert operations.invalid_moments == []

        engine = Engine(config)
        with engine.lock.held():
            engine.recover()

        assert_store_consistent(root, forms)
        assert state_entries(root) == {"trash": [], "tmp": []}
        if victim.exists():
            assert crashed
            assert str(victim) not in removed_paths(audit)
        else:
            # At least once: a crash after the event but before the intent record
            # went makes recovery log it again, marked recovered.
            events = [e for e in audit.named("version_removed") if e["path"] == str(victim)]
            assert len(events) in (1, 2)
            assert all(event.get("recovered") for event in events[1:])
        untouched = {"lily:l1", "lily:l2"} | ({"solo:only"} if scenario.name == "iris" else set())
        assert untouched <= {record.tag for record in census(root).versions}
        if not crashed:
            assert not victim.exists()
            break
    # intent, (pointer,) rename, each file and the directory in the trash, the intent again
    assert crash_points >= 6
    assert audit.named("removal_rolled_back")
    assert any(event.get("recovered") for event in audit.named("version_removed"))


# -- pointer repair ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "text"),
    [
        ("file", "gone-version"),
        ("file", "../../etc"),
        ("file", "/etc/passwd"),
        ("symlink", "gone-version"),
        ("symlink", "../../etc"),
        # A symlink to a file outside the name directory is unknown, not invalid:
        # BentoML reads latest through it (see the next test).
    ],
)
def test_a_dangling_or_invalid_pointer_is_repaired_to_the_newest_complete_version(
    store: Path, audit: Audit, form: str, text: str
) -> None:
    make_version(store, "iris", "b-newest", created=NOW - 2 * DAY)
    make_version(store, "iris", "a-older", created=NOW - 9 * DAY)
    make_version(store, "iris", "c-broken", descriptor=False)
    set_latest(store, "iris", text, form)
    engine = Engine(config_for(store))

    with engine.lock.held():
        recovery = engine.recover()

    assert recovery.pointers_repaired == 1
    assert_pointer(store, "iris", "b-newest", form)
    (repaired,) = audit.named("pointer_repaired")
    assert (repaired["name"], repaired["new"]) == ("iris", "b-newest")
    assert repaired["problem"]


@pytest.mark.parametrize("meanwhile", ["saved-and-pointed", "pointed-elsewhere"])
def test_a_pointer_fixed_by_a_save_after_the_census_is_not_repaired_back(
    store: Path, audit: Audit, meanwhile: str
) -> None:
    # Found by review: the census listed the name directory, BentoML then saved
    # c-new and pointed latest at it, and the census read latest naming a
    # version its listing lacked: the repair put latest back on an older one.
    make_version(store, "iris", "a-old", created=NOW - 9 * DAY, set_latest=True)
    make_version(store, "iris", "b-settled", created=NOW - 2 * DAY)
    engine = Engine(config_for(store))

    def census_then_a_save() -> Any:
        point_latest(store, "iris", "c-new")  # what the census reads: a version it never listed
        snapshot = engine.census()
        if meanwhile == "saved-and-pointed":
            make_version(store, "iris", "c-new")  # the save finishes (in truth, before latest)
        else:
            point_latest(store, "iris", "b-settled")  # another writer moves it meanwhile
        return snapshot

    with engine.lock.held():
        recovery = engine.pruner.recover(lambda: 0.0, census_then_a_save)

    assert recovery.pointers_repaired == 0
    assert recovery.snapshot is None  # stale: the plan takes a census of its own
    assert audit.named("pointer_repaired") == []
    expected = "c-new" if meanwhile == "saved-and-pointed" else "b-settled"
    assert read_latest(store, "iris") == expected


@pytest.mark.parametrize("swapped", ["name", "kind"])
def test_a_directory_swapped_for_a_symlink_while_a_version_is_archived_is_not_removed_through(
    store: Path, tmp_path: Path, audit: Audit, monkeypatch: pytest.MonkeyPatch, swapped: str
) -> None:
    # Found by review: while the archive was written, models/iris was moved out of
    # the store and a symlink put in its place; the removal went through the link.
    make_version(store, "iris", "v1", created=NOW - 9 * DAY)
    make_version(store, "iris", "v2", created=NOW - DAY, set_latest=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    config = config_for(
        store, retention={"max_versions": 1}, archive={"dir": str(tmp_path / "archives")}
    )
    engine = Engine(config)
    assert engine.archiver is not None
    real_write = engine.archiver.write
    moved = store / "models" / "iris" if swapped == "name" else store / "models"

    def write_then_swap(record: Any, **options: Any) -> Path:
        written = real_write(record, **options)
        os.rename(moved, outside / moved.name)
        os.symlink(outside / moved.name, moved)
        return written

    monkeypatch.setattr(engine.archiver, "write", write_then_swap)

    result = engine.cycle(recover=True)

    assert result.removed == ()
    assert audit.named("version_removed") == []
    kept = outside / "iris" / "v1" if swapped == "name" else outside / "models" / "iris" / "v1"
    assert (kept / "weights.bin").is_file()


class SwappingOperations(Operations):
    """Real operations; just before the version's rename, its name directory is swapped.

    As a rename exchange would do it in the instant between the last check and
    the rename: the name directory moves out, a symlink to another directory
    holding a same-named version takes its place.
    """

    def __init__(self, name_dir: Path, outside: Path, victim: Path) -> None:
        self.name_dir, self.outside, self.victim = name_dir, outside, victim

    def step(self, name: str, path: Path) -> None:
        if name == "rename" and path.parent == self.name_dir and not self.name_dir.is_symlink():
            os.rename(self.name_dir, self.outside)
            os.symlink(self.victim, self.name_dir)


def test_a_name_swapped_for_a_symlink_in_the_instant_before_the_rename_is_not_followed(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    # Found by review: a swap timed on latest's rewrite (6 ms before the rename) had
    # the rename follow the link and remove a directory outside the store.
    make_version(store, "iris", "v1", created=NOW - 9 * DAY)
    make_version(store, "iris", "v2", created=NOW - DAY, set_latest=True)
    victim = tmp_path / "victim"
    (victim / "v2").mkdir(parents=True)
    (victim / "v2" / "keep.txt").write_text("not the store's")
    operations = SwappingOperations(store / "models" / "iris", tmp_path / "moved-iris", victim)
    engine = Engine(config_for(store), operations=operations)

    engine.delete(["iris:v2"])

    assert (victim / "v2" / "keep.txt").read_text() == "not the store's"
    assert not (tmp_path / "moved-iris" / "v2").exists()  # the store's own v2 went
    assert (tmp_path / "moved-iris" / "v1").is_dir()


def test_a_latest_linked_to_a_file_outside_its_name_directory_is_left_alone_and_protects_all(
    store: Path, audit: Audit
) -> None:
    # BentoML would read /etc/passwd as the version; the census reads nothing outside the
    # name directory, so what latest names is unknown: nothing of the name goes.
    make_version(store, "iris", "b-newest", created=NOW - 2 * DAY)
    make_version(store, "iris", "a-older", created=NOW - 9 * DAY)
    set_latest(store, "iris", "/etc/passwd", "symlink")
    config = config_for(store, trigger={"max_store_size": 1}, protect={"keep_last": 0})

    result = Engine(config).cycle(recover=True)

    assert audit.named("pointer_repaired") == []
    assert os.readlink(store / "models" / "iris" / "latest") == "/etc/passwd"
    assert result.removed == ()
    kept = {kept.version.version: kept.reasons for kept in result.plan.kept}
    assert all("latest_unreadable" in reasons for reasons in kept.values())
    assert set(kept) == {"a-older", "b-newest"}


def test_a_pointer_left_without_any_version_is_removed_with_its_name_directory(
    store: Path, audit: Audit
) -> None:
    (store / "models" / "ghost").mkdir()
    point_latest(store, "ghost", "v1")
    make_version(store, "iris", "v1", set_latest=True)

    Engine(config_for(store)).cycle(recover=True)

    assert not (store / "models" / "ghost").exists()
    assert read_latest(store, "iris") == "v1"
    (repaired,) = audit.named("pointer_repaired")
    assert (repaired["name"], repaired["new"]) == ("ghost", None)


# -- a full disk while the pointer is written ---------------------------------------------


class FullDiskOperations(Operations):
    """Real operations, except that writing the new pointer fails with ENOSPC."""

    def write_file(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name.startswith("latest"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        super().write_file(path, data, mode)


def test_enospc_while_writing_the_pointer_leaves_the_old_pointer_and_the_version(
    store: Path, audit: Audit
) -> None:
    make_version(store, "iris", "v1", created=NOW - 9 * DAY)
    victim = make_version(store, "iris", "v2", created=NOW - 2 * DAY, set_latest=True)
    before = store_tree(store)

    result = Engine(config_for(store), operations=FullDiskOperations()).delete(["iris:v2"])

    assert [record.version for record, _error in result.failed] == ["v2"]
    assert result.removed == ()
    assert store_tree(store) == before
    assert_pointer(store, "iris", "v2", "file")
    assert census(store).find("models", "iris", "v2") is not None
    assert (victim / "model.yaml").exists()
    (failed,) = audit.named("removal_failed")
    assert failed["version"] == "v2"
    assert "No space" in failed["error"]
    assert audit.named("version_removed") == []
    # Undone on the spot, twice: the removal was tried again once the rest of the
    # delete had run (a full disk may have freed some blocks meanwhile).
    assert state_entries(store) == {"trash": [], "tmp": []}
    assert [event["version"] for event in audit.named("removal_rolled_back")] == ["v2", "v2"]

    engine = Engine(config_for(store))
    with engine.lock.held():
        engine.recover()

    assert state_entries(store) == {"trash": [], "tmp": []}
    assert_pointer(store, "iris", "v2", "file")


# -- the store lock -----------------------------------------------------------------------


class ContendingOperations(Operations):
    """While the first engine removes a version, a second engine tries to run."""

    def __init__(self, second: Engine) -> None:
        self.second = second
        self.errors: list[Exception] = []

    def step(self, name: str, path: Path) -> None:
        if self.errors:
            return
        attempts: list[Callable[[], object]] = [
            lambda: self.second.cycle(lock_wait=0),
            lambda: self.second.delete(["iris:v2"], lock_wait=0),
        ]
        for attempt in attempts:
            try:
                attempt()
            except StoreBusyError as error:
                self.errors.append(error)


def test_a_second_engine_is_refused_while_the_first_holds_the_lock(
    store: Path, audit: Audit
) -> None:
    two_old_and_latest(store)
    config = config_for(store, retention={"max_versions": 1})
    second = Engine(config)
    operations = ContendingOperations(second)

    first = Engine(config, operations=operations).cycle(lock_wait=0)

    assert len(operations.errors) == 2
    assert [outcome.record.version for outcome in first.removed] == ["v1", "v2"]
    assert [event["version"] for event in audit.named("version_removed")] == ["v1", "v2"]
    assert second.cycle(lock_wait=0).removed == ()  # the lock is free again; nothing left to do


HOLD_LOCK = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_lock_held_by_another_process_is_honoured(store: Path, audit: Audit) -> None:
    first, second, _ = two_old_and_latest(store)
    engine = Engine(config_for(store, retention={"max_versions": 1}))
    engine.pruner.prepare()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(engine.lock.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        before = store_tree(store)

        with pytest.raises(StoreBusyError):
            engine.cycle(lock_wait=0)
        with pytest.raises(StoreBusyError):
            engine.delete(["iris:v1"], lock_wait=0)

        assert store_tree(store) == before
        assert audit.named("version_removed") == []
    finally:
        holder.communicate("", timeout=30)

    result = engine.cycle(lock_wait=0)

    assert [outcome.record.version for outcome in result.removed] == ["v1", "v2"]
    assert not first.exists()
    assert not second.exists()


# -- the state directory ------------------------------------------------------------------


@pytest.mark.tmpfs
def test_a_state_dir_on_another_filesystem_is_refused(
    store: Path, audit: Audit, tmpfs: Callable[[str], Path]
) -> None:
    two_old_and_latest(store)
    before = store_tree(store)
    engine = Engine(
        config_for(store, state_dir=str(tmpfs("4m") / "state"), retention={"max_versions": 1})
    )

    with pytest.raises(UnsafeStateDirError):
        engine.cycle()
    with pytest.raises(UnsafeStateDirError):
        engine.delete(["iris:v1"])

    assert store_tree(store) == before
    assert audit.named("version_removed") == []


@pytest.mark.parametrize(
    "state_dir",
    ["models", "models/.storewarden", "bentos/state", "models/iris/state", "link-to-models/s"],
)
def test_a_state_dir_inside_models_or_bentos_is_refused(
    store: Path, audit: Audit, state_dir: str
) -> None:
    two_old_and_latest(store)
    os.symlink(store / "models", store.parent / "link-to-models")
    before = store_tree(store)
    base = store.parent if state_dir.startswith("link") else store
    engine = Engine(
        config_for(store, state_dir=str(base / state_dir), retention={"max_versions": 1})
    )

    with pytest.raises(UnsafeStateDirError):
        engine.cycle()
    with pytest.raises(UnsafeStateDirError):
        engine.delete(["iris:v1"])

    assert store_tree(store) == before  # not even the state directory was made
    assert audit.named("version_removed") == []


# -- explicit delete ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags", [["iris:v1", "iris:nope"], ["ghost:v1"], ["iris"], ["iris:v1", "lily:latest"]]
)
def test_an_unknown_tag_is_refused_and_nothing_is_deleted(
    store: Path, audit: Audit, tags: list[str]
) -> None:
    two_old_and_latest(store)
    before = store_tree(store)

    with pytest.raises(UnknownTagError):
        Engine(config_for(store)).delete(tags)

    assert store_tree(store) == before
    assert audit.named("version_removed") == []


def test_name_latest_resolves_to_the_pointers_target(store: Path, audit: Audit) -> None:
    two_old_and_latest(store)
    point_latest(store, "iris", "v2")

    result = Engine(config_for(store)).delete(["iris:latest"])

    assert [outcome.record.version for outcome in result.removed] == ["v2"]
    assert read_latest(store, "iris") == "v3"
    assert [event["reason"] for event in audit.named("version_removed")] == ["explicit"]


def test_a_bento_is_deleted_with_kind_bentos(store: Path, audit: Audit) -> None:
    make_version(store, "svc", "b1", kind="bentos", created=NOW - 5 * DAY)
    make_version(store, "svc", "b2", kind="bentos", set_latest=True)
    make_version(store, "svc", "b1")  # a model of the same name and version stays

    Engine(config_for(store)).delete(["svc:b1"], kind="bentos")

    assert not (store / "bentos" / "svc" / "b1").exists()
    assert (store / "models" / "svc" / "b1" / "model.yaml").exists()
    assert removed_paths(audit) == [str(store / "bentos" / "svc" / "b1")]


@pytest.mark.parametrize("pinned_by", ["config", "engine"])
def test_a_pinned_version_is_refused_unless_forced(
    store: Path, audit: Audit, pinned_by: str
) -> None:
    first, _, _ = two_old_and_latest(store)
    config = config_for(store, protect={"pins": ["iris:v1"]} if pinned_by == "config" else {})
    engine = Engine(config, pins=lambda: ("iris:v*",) if pinned_by == "engine" else ())
    before = store_tree(store)

    with pytest.raises(RefusedError, match="pinned"):
        engine.delete(["iris:v1", "iris:v2"] if pinned_by == "config" else ["iris:v1"])

    assert store_tree(store) == before
    engine.delete(["iris:v1"], force=True)
    assert not first.exists()
    assert removed_paths(audit) == [str(first)]


def test_a_version_a_running_process_works_in_is_refused_unless_forced(
    store: Path, audit: Audit
) -> None:
    first, _, _ = two_old_and_latest(store)
    engine = Engine(config_for(store))
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        cwd=first,
        stdin=subprocess.PIPE,
    )
    try:
        with pytest.raises(RefusedError, match=f"in_use.*pid {server.pid}"):
            engine.delete(["iris:v1"])
        assert (first / "model.yaml").exists()

        engine.delete(["iris:v1"], force=True)

        assert not first.exists()
        assert removed_paths(audit) == [str(first)]
    finally:
        server.communicate(b"", timeout=30)


def test_a_version_still_being_written_is_refused_unless_forced(store: Path, audit: Audit) -> None:
    first, _, _ = two_old_and_latest(store)
    engine = Engine(config_for(store, protect={"settle": 600}))

    with pytest.raises(RefusedError, match="settle"):
        engine.delete(["iris:v1"])
    assert first.exists()

    engine.delete(["iris:v1"], force=True)
    assert not first.exists()


# -- another filesystem mounted inside the store ---------------------------------------------


@pytest.mark.tmpfs
@pytest.mark.parametrize("what", ["another-filesystem", "a-bind-mount-of-the-same-one"])
@pytest.mark.parametrize("where", ["inside-a-version", "at-a-version"])
def test_a_filesystem_mounted_in_the_store_is_never_touched(
    store: Path, tmp_path: Path, tmpfs: Callable[[str], Path], where: str, what: str
) -> None:
    make_version(store, "iris", "v1", created=NOW - 9 * DAY)
    make_version(store, "iris", "v2", created=NOW - 2 * DAY, set_latest=True)
    if what == "another-filesystem":
        other = tmpfs("4m")
    else:  # keeps st_dev: only the mount table tells it from a directory of the store
        other = tmp_path / "outside-the-store"
        other.mkdir()
    (other / "precious.txt").write_text("not the store's\n")
    (other / "sub").mkdir()
    (other / "sub" / "y").write_text("y\n")
    if where == "inside-a-version":
        version = store / "models" / "iris" / "v1"
        target = version / "data"
    else:
        version = target = store / "models" / "iris" / "v0"
        (other / "model.yaml").write_text("creation_time: '2026-01-01T00:00:00+00:00'\n")
    target.mkdir()
    before = sorted(str(path.relative_to(other)) for path in other.rglob("*"))
    subprocess.run(["mount", "--bind", str(other), str(target)], check=True)
    try:
        config = config_for(store, trigger={"max_store_size": 1}, protect={"keep_last": 0})
        pruned = Engine(config).cycle()
        forced = Engine(config).delete([f"iris:{version.name}"], force=True)
    finally:
        subprocess.run(["umount", str(target)], check=True)

    assert sorted(str(path.relative_to(other)) for path in other.rglob("*")) == before
    assert (other / "precious.txt").read_text() == "not the store's\n"
    assert version.is_dir()
    assert version not in {outcome.record.path for outcome in pruned.removed}
    (kept,) = [kept for kept in pruned.plan.kept if kept.version.path == version]
    assert kept.reasons[0] == "unreadable"
    assert [reasons for _record, reasons in forced.skipped] == [("mounted",)]


@pytest.mark.parametrize("what", ["another-filesystem", "a-bind-mount-of-the-same-one"])
def test_the_trash_never_deletes_into_a_filesystem_mounted_inside_an_entry(
    store: Path, tmp_path: Path, tmpfs: Callable[[str], Path], audit: Audit, what: str
) -> None:
    # Mounted after the last look: the entry left the store, but what the mount holds stays.
    engine = Engine(config_for(store))
    engine.pruner.prepare()
    entry = store / ".storewarden" / "trash" / "0123456789ab-1"
    (entry / "data").mkdir(parents=True)
    (entry / "weights.bin").write_bytes(b"w" * 100)
    if what == "another-filesystem":
        other = tmpfs("4m")
    else:
        other = tmp_path / "outside-the-store"
        other.mkdir()
    (other / "precious.txt").write_text("keep\n")
    subprocess.run(["mount", "--bind", str(other), str(entry / "data")], check=True)
    try:
        with engine.lock.held():
            engine.recover()
        kept = (entry / "data" / "precious.txt").read_text()
    finally:
        subprocess.run(["umount", str(entry / "data")], check=True)

    assert kept == "keep\n"
    assert (entry / "weights.bin").exists()  # nothing of the entry was removed
    (event,) = audit.named("trash_not_emptied")
    assert "mounted here" in event["error"]

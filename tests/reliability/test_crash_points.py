"""A SIGKILL after every single step of a removal, and of the recovery that follows.

tests/integration/test_prune.py crashes a removal by raising an exception
before each Operations step. An exception runs every ``except`` and
``finally`` on its way out (``write_pointer`` deletes its temp file); a kill
runs nothing. Here each crash is a real SIGKILL of a forked child, and the
crash points are every Operations step **and every audit line**: a kill
between a deletion and its ``version_removed`` line must not lose the line.
The recovery after each crash is itself killed at each of its own steps
before a last recovery runs. The versions hold a subdirectory, several files,
a symlink and a hard link out of the store; bentos are among the victims.

After the last recovery the crash loop's invariants hold (tests/invariants.py:
every version left whole, latest the newest, trash empty, outside untouched,
nothing protected gone, every disappearance logged) and BentoML's own
``list()`` and ``get("name:latest")`` read every store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO, cast

import pytest

from storewarden import logs
from storewarden.archive import Archiver
from storewarden.config import Config, build_config
from storewarden.engine import Engine
from storewarden.prune import Operations
from tests import invariants
from tests.reliability.support import make_outside, make_rich_version
from tests.storebuilder import NOW, bento_yaml, make_version, point_latest

pytestmark = pytest.mark.slow

DAY = timedelta(days=1)


# -- crashing a child at one point ------------------------------------------------------


class Ticker:
    """Counts the crash points a child passes and SIGKILLs it when it reaches ``crash_at``.

    Each point passed is written (and flushed) to ``record`` before its action
    runs, so the parent knows every point up to the kill.
    """

    def __init__(self, crash_at: int | None, record: TextIO, root: Path) -> None:
        self.crash_at = crash_at
        self.record = record
        self.root = root
        self.count = 0

    def tick(self, label: str) -> None:
        """Pass one crash point: die here if it is the chosen one."""
        if self.count == self.crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.record.write(label + "\n")
        self.record.flush()
        self.count += 1

    def describe(self, path: Path) -> str:
        """Return a path relative to the store, with run-specific ids masked."""
        text = os.path.relpath(path, self.root).replace(".storewarden/", "")
        text = re.sub(r"latest-[0-9a-f]{32}", "latest-<temp>", text)
        text = re.sub(r"[0-9a-f]{12}-\d+\+[^/]*", "<intent>", text)
        return re.sub(r"[0-9a-f]{12}-\d+", "<id>", text)


class KillingOperations(Operations):
    """Real operations; each step is a crash point."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker

    def step(self, name: str, path: Path) -> None:
        self.ticker.tick(f"{name} {self.ticker.describe(path)}")


class KillingStream:
    """The audit log's stream: writing each line is a crash point (the line is not written)."""

    def __init__(self, file: TextIO, ticker: Ticker) -> None:
        self.file = file
        self.ticker = ticker

    def write(self, text: str) -> int:
        self.ticker.tick(f"log {json.loads(text)['event']}")
        return self.file.write(text)

    def flush(self) -> None:
        self.file.flush()


Work = Callable[[Engine], object]
NEVER = -1  # a crash point no child reaches: it runs to the end, recording its points


@dataclass(frozen=True)
class ChildRun:
    """What a forked child did: the crash points it passed, and whether it was killed."""

    points: list[str]
    killed: bool


def run_child(
    root: Path, config: Config, work: Work, crash_at: int | None, log: Path, name: str
) -> ChildRun:
    """Fork; in the child run ``work`` on an Engine whose every step is a crash point.

    The child appends its audit lines to ``log`` and is SIGKILLed at point
    ``crash_at`` (None: never). Fail if it dies any other way.
    """
    points_path = log.with_name(f"{name}.points")
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            with log.open("a") as log_file, points_path.open("w") as record:
                ticker = Ticker(crash_at, record, root)
                stream = cast(TextIO, KillingStream(log_file, ticker))
                logs.configure(store=root, stream=stream, strict=True)
                work(Engine(config, operations=KillingOperations(ticker), processes=lambda: ()))
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    points = points_path.read_text().splitlines()
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        assert crash_at is not None and len(points) == crash_at
        return ChildRun(points, killed=True)
    assert os.WEXITSTATUS(status) == 0, f"the {name} child failed (its traceback is above)"
    return ChildRun(points, killed=False)


def recover(engine: Engine) -> object:
    """What every command does first: take the lock and recover."""
    with engine.lock.held():
        return engine.recover()


# -- the stores ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A store, one piece of work to crash in, and what it removes when it completes.

    ``also`` are further victims (a bento's model after the bento); ``needs``
    gives bentos of the store the model tags their bento.yaml names.
    """

    name: str
    work: Work
    victim: tuple[str, str, str] | None
    symlink_latest: tuple[str, ...] = ()
    dangling: bool = False
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    also: tuple[tuple[str, str, str], ...] = ()
    needs: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


PROTECT = invariants.ProtectSpec(pinned=("lily",), kept_names=())


def build(directory: Path, scenario: Scenario) -> tuple[Path, invariants.Baseline]:
    """Build the scenario's store beside an ``outside`` directory; return root and baseline.

    models: iris (v-a < v-b < v-c, latest v-c), solo (only), lily (pinned);
    bentos: svc (s1 < s2, latest s2). Every version links out of the store.
    """
    root = directory / "bentoml"
    outside = make_outside(directory / "outside")
    (root / "models").mkdir(parents=True)
    (root / "bentos").mkdir()
    for index, version in enumerate(("v-a", "v-b", "v-c")):
        make_rich_version(root, "iris", version, created=NOW - (30 - index) * DAY, outside=outside)
    make_rich_version(root, "solo", "only", created=NOW - 50 * DAY, outside=outside)
    make_version(root, "lily", "l1", created=NOW - 60 * DAY)
    for index, version in enumerate(("s1", "s2")):
        created = NOW - (20 - index) * DAY
        path = make_rich_version(
            root, "svc", version, kind="bentos", created=created, outside=outside
        )
        if version in scenario.needs:
            (path / "bento.yaml").write_text(
                bento_yaml("svc", version, created=created, needs=scenario.needs[version])
            )
    for kind, name, version in (
        ("models", "iris", "v-c"),
        ("models", "solo", "only"),
        ("models", "lily", "l1"),
        ("bentos", "svc", "s2"),
    ):
        if name in scenario.symlink_latest:
            os.symlink(version, root / kind / name / "latest")
        else:
            point_latest(root, name, version, kind=kind)
    baseline = invariants.capture(root, outside, PROTECT)
    if scenario.dangling:  # after the capture: the baseline's forms are what must stay
        pointer = root / "models" / "iris" / "latest"
        pointer.unlink()
        point_latest(root, "iris", "gone-version")
    return root, baseline


def config_for(root: Path, scenario: Scenario) -> Config:
    """Protections off except the pin; the scenario's own settings on top."""
    data: dict[str, Any] = {
        "store": str(root),
        "trigger": {"high_percent": 99.9, "low_percent": 99.0},
        "protect": {"settle": 0, "min_age": 0, "pins": ["lily:*"]},
        **scenario.config,
    }
    return build_config(data)


SCENARIOS = [
    Scenario(
        "prune-a-version-latest-does-not-name",
        lambda engine: engine.cycle(),
        ("models", "iris", "v-a"),
        config={"rules": [{"match": "iris", "max_versions": 2}]},
    ),
    Scenario(
        "delete-the-version-latest-names",
        lambda engine: engine.delete(["iris:v-c"]),
        ("models", "iris", "v-c"),
    ),
    Scenario(
        "delete-the-version-a-symlinked-latest-names",
        lambda engine: engine.delete(["iris:latest"]),
        ("models", "iris", "v-c"),
        symlink_latest=("iris",),
    ),
    Scenario(
        "delete-a-names-last-version",
        lambda engine: engine.delete(["solo:only"]),
        ("models", "solo", "only"),
    ),
    Scenario(
        "delete-a-names-last-version-under-a-symlinked-latest",
        lambda engine: engine.delete(["solo:only"]),
        ("models", "solo", "only"),
        symlink_latest=("solo",),
    ),
    Scenario(
        "delete-the-bento-latest-names",
        lambda engine: engine.delete(["svc:latest"], kind="bentos"),
        ("bentos", "svc", "s2"),
    ),
    Scenario("repair-a-dangling-latest-at-start-up", recover, None, dangling=True),
    Scenario(
        "prune-a-bento-then-the-model-only-it-needed",
        lambda engine: engine.cycle(),
        ("bentos", "svc", "s1"),
        config={
            "rules": [
                {"match": "svc", "max_versions": 1},
                {"match": "iris", "max_versions": 2},
            ]
        },
        also=(("models", "iris", "v-a"),),
        needs={"s1": ("iris:v-a",), "s2": ("iris:v-b", "iris:latest")},
    ),
    Scenario(
        "delete-a-bento-and-its-model-together",
        lambda engine: engine.delete(["iris:v-a", "svc:s1"]),
        ("bentos", "svc", "s1"),
        also=(("models", "iris", "v-a"),),
        needs={"s1": ("iris:v-a",)},
    ),
]

# The crash points of removing the version latest names, in order: a kill right
# after each of them (and before the first) is tried. The trash entry holds the
# version's files, its assets/ directory and the links out of the store.
LATEST_TARGET_POINTS = [
    "write_file trash/<intent>",  # the intent record, an empty file named for the removal
    "fsync_dir trash",
    "write_file tmp/latest-<temp>",  # the new pointer, written aside
    "fsync_file tmp/latest-<temp>",
    "rename tmp/latest-<temp>",  # ... and renamed over latest
    "fsync_dir models/iris",
    "log latest_changed",
    "rename models/iris/v-c",  # the version leaves the store in one rename, into the trash
    "fsync_dir models/iris",  # both directories, so a power loss cannot bring it back
    "fsync_dir trash",
    *sorted(
        [
            "unlink trash/<id>/assets/merges.txt",
            "unlink trash/<id>/assets/vocab.txt",
            "unlink trash/<id>/hard.bin",
            "unlink trash/<id>/model.yaml",
            "unlink trash/<id>/shared-tree",
            "unlink trash/<id>/shared.bin",
            "unlink trash/<id>/weights.bin",
            "rmdir trash/<id>/assets",
        ]
    ),
    "rmdir trash/<id>",
    "log version_removed",
    "unlink trash/<intent>",  # the intent goes last: until then a restart can finish the job
]

TRASH_FILES = "<the files of the version in the trash, as above>"

# Removing a name's last version: the pointer goes, then the version, then the name directory.
LAST_VERSION_POINTS = [
    "write_file trash/<intent>",
    "fsync_dir trash",
    "unlink models/solo/latest",
    "fsync_dir models/solo",
    "log latest_removed",
    "rename models/solo/only",
    "fsync_dir models/solo",
    "fsync_dir trash",
    "rmdir models/solo",  # the name directory, now empty
    "fsync_dir models",
    "log name_removed",
    TRASH_FILES,
    "rmdir trash/<id>",
    "log version_removed",
    "unlink trash/<intent>",
]


def in_trash_order(points: list[str]) -> list[str]:
    """Sort the trash's file steps (directory order is the filesystem's) for comparison."""
    inside = [point for point in points if "trash/<id>/" in point]
    first = points.index(inside[0]) if inside else len(points)
    return points[:first] + sorted(inside) + points[first + len(inside) :]


def collapse_trash(points: list[str]) -> list[str]:
    """Replace the run of file steps inside the trash entry with one placeholder."""
    collapsed: list[str] = []
    for point in points:
        if "trash/<id>/" in point:
            if collapsed[-1:] != [TRASH_FILES]:
                collapsed.append(TRASH_FILES)
            continue
        collapsed.append(point)
    return collapsed


@dataclass
class Outcome:
    """A crash point tried: where it was, what recovery found, what the checks say."""

    after: str
    problems: list[str]
    root: Path
    baseline: invariants.Baseline


def crash_then_recover(
    directory: Path,
    scenario: Scenario,
    crash_at: int | None,
    recovery_crash_at: int | None = None,
    *,
    saved_meanwhile: bool = False,
) -> tuple[ChildRun, ChildRun | None, Outcome]:
    """Build, run the work killed at ``crash_at``, recover (killed at ``recovery_crash_at``
    if set, then once more to the end), and check the invariants."""
    root, baseline = build(directory, scenario)
    config = config_for(root, scenario)
    log = directory / "audit.log"
    work = run_child(root, config, scenario.work, crash_at, log, "work")
    # At the instant of the kill, as BentoML would find the store if it looked now.
    at_kill = [f"at the kill: {problem}" for problem in invariants.bentos_without_models(root)]
    if saved_meanwhile:
        # While the warden was down, BentoML saved a newer version and pointed latest at it.
        outside = baseline.outside
        make_rich_version(root, "iris", "v-new", created=NOW, outside=outside)
        point_latest(root, "iris", "v-new")
        facts = invariants.capture(root, outside, PROTECT).versions
        key = ("models", "iris", "v-new")
        baseline = dataclasses.replace(baseline, versions={**baseline.versions, key: facts[key]})
    interrupted = None
    if recovery_crash_at is not None:
        interrupted = run_child(root, config, recover, recovery_crash_at, log, "recovery-1")
    run_child(root, config, recover, None, log, "recovery-2")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    problems = at_kill + invariants.check_store(baseline, events)
    victims = {scenario.victim, *scenario.also} if scenario.victim else set()
    for victim in sorted(victims):
        if not work.killed and invariants.present(baseline, victim):
            problems.append(f"the work completed but {victim} is still there")
    gone = {key for key in baseline.versions if not invariants.present(baseline, key)}
    if gone - victims:
        problems.append(f"more than the victims went: {sorted(gone)}")
    if scenario.also and not work.killed:
        order = [
            (event["kind"], event["name"], event["version"])
            for event in events
            if event["event"] == "version_removed"
        ]
        if order != [scenario.victim, *scenario.also]:
            problems.append(f"removed in the wrong order: {order}")
    after = work.points[-1] if work.points else "(before the first step)"
    return work, interrupted, Outcome(after, problems, root, baseline)


def every_crash_point(directory: Path, scenario: Scenario) -> tuple[list[str], list[Outcome]]:
    """Try a kill before each crash point of the work; return the points and the outcomes.

    A kill before point k is a kill right after point k-1; the run that is not
    killed stands for a kill after the last point.
    """
    full, _, control = crash_then_recover(directory / "complete", scenario, None)
    outcomes = [control]
    for crash_at in range(len(full.points)):
        work, _, outcome = crash_then_recover(directory / f"crash-{crash_at}", scenario, crash_at)
        assert work.killed and work.points == full.points[:crash_at]
        outcomes.append(outcome)
    return full.points, outcomes


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.name for scenario in SCENARIOS])
def test_a_kill_after_any_step_is_finished_or_undone_at_restart(
    tmp_path: Path, scenario: Scenario
) -> None:
    points, outcomes = every_crash_point(tmp_path, scenario)

    problems = [f"kill after {o.after!r}: {p}" for o in outcomes for p in o.problems]
    assert problems == []
    assert invariants.check_with_bentoml([outcome.baseline for outcome in outcomes]) == []
    assert len(outcomes) == len(points) + 1
    if scenario.name == "delete-the-version-latest-names":
        assert in_trash_order(points) == LATEST_TARGET_POINTS
    if scenario.name == "delete-a-names-last-version":
        assert collapse_trash(points) == LAST_VERSION_POINTS


@pytest.mark.parametrize(
    "scenario",
    [SCENARIOS[1], SCENARIOS[3], SCENARIOS[6]],
    ids=["latest-target", "last-version", "dangling-latest"],
)
def test_a_kill_during_the_recovery_of_a_kill_is_recovered_in_turn(
    tmp_path: Path, scenario: Scenario
) -> None:
    full, _, _ = crash_then_recover(tmp_path / "complete", scenario, None)
    tried = 0
    outcomes = []
    for crash_at in range(len(full.points)):
        base = tmp_path / f"crash-{crash_at}"
        _, whole, _ = crash_then_recover(base / "whole", scenario, crash_at, NEVER)
        assert whole is not None and not whole.killed
        for recovery_at in range(len(whole.points)):
            _, interrupted, outcome = crash_then_recover(
                base / f"recovery-{recovery_at}", scenario, crash_at, recovery_at
            )
            assert interrupted is not None and interrupted.killed
            outcome.after += f", then recovery killed after {interrupted.points[-1:]}"
            outcomes.append(outcome)
            tried += 1

    assert [f"{o.after}: {p}" for o in outcomes for p in o.problems] == []
    assert tried >= 10, "the recoveries had too few steps to interrupt"
    assert invariants.check_with_bentoml([outcome.baseline for outcome in outcomes[::5]]) == []


def test_a_version_saved_while_the_warden_was_down_stays_latest_after_recovery(
    tmp_path: Path,
) -> None:
    scenario = SCENARIOS[1]
    full, _, _ = crash_then_recover(tmp_path / "complete", scenario, None)
    outcomes = []
    for crash_at in range(len(full.points)):
        _, _, outcome = crash_then_recover(
            tmp_path / f"crash-{crash_at}", scenario, crash_at, saved_meanwhile=True
        )
        outcomes.append(outcome)

    assert [f"kill after {o.after!r}: {p}" for o in outcomes for p in o.problems] == []
    for outcome in outcomes:
        assert (outcome.root / "models" / "iris" / "latest").read_text() == "v-new"


# -- restore: a kill at every step of putting an archived version back -----------------------


def restore_scenario(directory: Path, newest: bool) -> tuple[Path, Path, dict[str, str], Path]:
    """A store from which iris v-r (older than all, or the newest) was archived and removed.

    Return the root, the archive, the version's digest before it went, and its path.
    """
    root, _baseline = build(directory, SCENARIOS[0])
    version = "v-r"
    created = NOW if newest else NOW - 40 * DAY  # newer than v-c (latest), or older than all
    path = make_version(root, "iris", version, created=created, size=3000)
    (path / "assets").mkdir()
    (path / "assets" / "vocab.txt").write_text("a\nb\n")
    digest = invariants.digest_tree(path)
    config = config_for(root, SCENARIOS[0])
    engine = Engine(config, processes=lambda: ())
    engine.archiver = Archiver(directory / "archive", store=root)
    engine.delete([f"iris:{version}"])
    (archive,) = (directory / "archive").iterdir()
    return root, archive, digest, path


@pytest.mark.parametrize("newest", [False, True], ids=["an-old-version", "the-newest-version"])
def test_a_kill_at_any_step_of_a_restore_leaves_the_version_whole_or_absent(
    tmp_path: Path, newest: bool
) -> None:
    def restore_work(archive: Path) -> Work:
        return lambda engine: engine.restore(archive)

    root, archive, digest, path = restore_scenario(tmp_path / "complete", newest)
    full = run_child(
        root, config_for(root, SCENARIOS[0]), restore_work(archive), None,
        tmp_path / "complete" / "audit.log", "work",
    )  # fmt: skip
    assert invariants.digest_tree(path) == digest
    problems: list[str] = []
    baselines = []
    for crash_at in range(len(full.points)):
        directory = tmp_path / f"crash-{crash_at}"
        root, archive, digest, path = restore_scenario(directory, newest)
        config = config_for(root, SCENARIOS[0])
        log = directory / "audit.log"
        work = run_child(root, config, restore_work(archive), crash_at, log, "work")
        run_child(root, config, recover, None, log, "recovery")
        where = f"kill after {work.points[-1] if work.points else '(start)'!r}"
        if path.exists() and invariants.digest_tree(path) != digest:
            problems.append(f"{where}: the version is back but not whole")
        present = sorted(entry.name for entry in path.parent.iterdir() if entry.name != "latest")
        latest = (path.parent / "latest").read_text()
        if latest not in present:
            problems.append(f"{where}: latest names {latest}, not a version there")
        state = root / ".storewarden"
        leftovers = os.listdir(state / "tmp") + os.listdir(state / "trash")
        if leftovers:
            problems.append(f"{where}: left in the state directory: {leftovers}")
        baselines.append(
            invariants.capture(root, tmp_path / f"crash-{crash_at}" / "outside", PROTECT)
        )

    assert problems == []
    assert len(full.points) >= 3  # the rename into the store, its fsync, the event (and latest)
    assert invariants.check_with_bentoml(baselines) == []

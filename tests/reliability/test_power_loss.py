"""A power loss at any step of a removal: what was not fsynced is gone, what was logged is done.

A SIGKILL (test_crash_points.py) leaves the kernel's page cache intact: every
rename and unlink made so far survives. A power loss does not. Here each
removal runs on a fresh tmpfs with every Operations step recorded; then, for
each step, the store is rebuilt as a power loss right after it would leave
it: starting from a copy of the store taken before the work, only the steps
made durable by a later fsync are replayed (a new or removed entry needs an
fsync of its directory, a rename one of both directories, a file's data one
of the file). Recovery then runs on that, and:

- a removal logged as done (``version_removed`` before the power loss) is
  done: the version is not back;
- the store is valid: every ``latest`` names a version that is there, every
  version there is whole, and nothing else went.

This models the filesystem pessimistically (ext4 and xfs keep more than this);
it is the contract storewarden writes against. issue 10.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

import pytest
import structlog

from storewarden import logs
from storewarden.config import build_config
from storewarden.engine import Engine
from storewarden.prune import Operations
from tests import invariants
from tests.storebuilder import NOW, make_version, point_latest

pytestmark = [pytest.mark.slow, pytest.mark.tmpfs]

DAY = 86400


@dataclass(frozen=True)
class Step:
    """One recorded step: what it did, and to which paths."""

    name: str
    path: Path
    destination: Path | None = None


class Recorder(Operations):
    """Real operations, each one recorded before it runs."""

    def __init__(self) -> None:
        self.trace: list[Step] = []
        self.events: list[tuple[int, dict[str, Any]]] = []  # (steps done before it, event)

    def step(self, name: str, path: Path) -> None:
        self.trace.append(Step(name, path))

    def rename(self, source: Path, destination: Path, *, source_dir: int | None = None) -> None:
        self.trace.append(Step("rename", source, destination))
        if source_dir is None:
            os.rename(source, destination)
        else:
            os.rename(source.name, destination, src_dir_fd=source_dir)


class EventStream:
    """The audit log's stream: each line is noted with how many steps had run."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def write(self, text: str) -> int:
        self.recorder.events.append((len(self.recorder.trace), json.loads(text)))
        return len(text)

    def flush(self) -> None:
        return None


def durable(trace: list[Step]) -> list[Step]:
    """Return the steps of ``trace`` a power loss right after its last step would keep."""
    kept = []
    for index, step in enumerate(trace):
        later = trace[index + 1 :]
        synced_dirs = {s.path for s in later if s.name == "fsync_dir"}
        synced_files = {s.path for s in later if s.name == "fsync_file"}
        if step.name == "rename":
            assert step.destination is not None
            if {step.path.parent, step.destination.parent} <= synced_dirs:
                kept.append(step)
        elif step.name == "write_file":
            if step.path.parent in synced_dirs:
                kept.append(
                    Step("write_file", step.path, step.path if step.path in synced_files else None)
                )
        elif (
            step.name in ("unlink", "rmdir", "mkdir", "symlink") and step.path.parent in synced_dirs
        ):
            kept.append(step)
    return kept


def replay(steps: list[Step], source: Path, target: Path, written: Path) -> None:
    """Apply ``steps`` (paths under ``source``) to the copy at ``target``.

    A kept file takes its content from where the real run left it (``written``
    is the real run's tree), or empty if its data was never fsynced.
    """

    def moved(path: Path) -> Path:
        return target / path.relative_to(source)

    for step in steps:
        path = moved(step.path)
        if step.name == "rename":
            assert step.destination is not None
            if os.path.lexists(path):
                moved(step.destination).parent.mkdir(parents=True, exist_ok=True)
                os.rename(path, moved(step.destination))
        elif step.name == "write_file" and path.parent.is_dir() and not os.path.lexists(path):
            real = written / step.path.relative_to(source)
            data = real.read_bytes() if step.destination and real.is_file() else b""
            path.write_bytes(data)
            path.chmod(0o644)
        elif step.name == "unlink" and os.path.lexists(path) and not path.is_dir():
            path.unlink()
        elif step.name == "rmdir" and path.is_dir() and not os.listdir(path):
            path.rmdir()
        elif step.name == "mkdir" and path.parent.is_dir() and not path.exists():
            path.mkdir()


@dataclass(frozen=True)
class Scenario:
    name: str
    work: Callable[[Engine], object]
    victim: tuple[str, str]


SCENARIOS = [
    Scenario("prune-a-version-latest-does-not-name", lambda engine: engine.cycle(), ("iris", "v1")),
    Scenario("delete-the-version-latest-names", lambda e: e.delete(["iris:v3"]), ("iris", "v3")),
    Scenario("delete-a-names-last-version", lambda e: e.delete(["solo:only"]), ("solo", "only")),
]


def build(root: Path) -> None:
    (root / "models").mkdir(parents=True)
    for index, version in enumerate(("v1", "v2", "v3")):
        path = make_version(root, "iris", version, created=NOW.replace(day=1 + index), size=3000)
        (path / "assets").mkdir()
        (path / "assets" / "vocab.txt").write_text("a\n")
    point_latest(root, "iris", "v3")
    make_version(root, "solo", "only", size=2000, set_latest=True)


def config_for(root: Path) -> Any:
    return build_config(
        {
            "store": str(root),
            "trigger": {"high_percent": 99.9, "low_percent": 99.0},
            "protect": {"settle": 0, "min_age": 0},
            "rules": [{"match": "iris", "max_versions": 2}],
        }
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.name for scenario in SCENARIOS])
def test_a_power_loss_after_any_step_loses_nothing_logged_and_leaves_a_valid_store(
    tmpfs: Callable[[str], Path], scenario: Scenario
) -> None:
    disk = tmpfs("64m")
    root, before = disk / "run" / "bentoml", disk / "before"
    build(root)
    Engine(config_for(root)).pruner.prepare()  # the state directory exists before the work
    shutil.copytree(root.parent, before, symlinks=True)
    recorder = Recorder()
    logs.configure(store=root, stream=cast(TextIO, EventStream(recorder)), strict=True)
    try:
        scenario.work(Engine(config_for(root), operations=recorder, processes=lambda: ()))
    finally:
        structlog.reset_defaults()
    removed_at = [
        (position, (event["name"], event["version"]))
        for position, event in recorder.events
        if event["event"] == "version_removed"
    ]
    assert [tag for _position, tag in removed_at] == [scenario.victim]
    problems: list[str] = []
    for crash in range(len(recorder.trace) + 1):
        after = disk / f"after-{crash}"
        shutil.copytree(before, after, symlinks=True)
        replay(durable(recorder.trace[:crash]), root.parent, after, root.parent)
        store = after / "bentoml"
        Engine(config_for(store)).recover()
        where = (
            f"power loss after step {crash} ({recorder.trace[crash - 1].name if crash else '-'})"
        )
        for position, (name, version) in removed_at:
            if position <= crash and (store / "models" / name / version).exists():
                problems.append(f"{where}: {name}:{version} was logged removed but is back")
        problems += [f"{where}: {p}" for p in valid(store, before / "bentoml")]
        shutil.rmtree(after)
    assert problems == []


def valid(store: Path, before: Path) -> list[str]:
    """Return how the store breaks BentoML's expectations, against what it held before."""
    problems = invariants.bentos_without_models(store)
    for name_dir in sorted((store / "models").iterdir()):
        versions = sorted(entry.name for entry in name_dir.iterdir() if entry.name != "latest")
        latest = name_dir / "latest"
        if not versions:
            problems.append(f"{name_dir.name}: a name directory without versions")
        elif not latest.is_file() or latest.read_text() not in versions:
            problems.append(f"{name_dir.name}: latest names nothing there")
        for version in versions:
            path, original = name_dir / version, before / "models" / name_dir.name / version
            if invariants.digest_tree(path) != invariants.digest_tree(original):
                problems.append(f"{name_dir.name}:{version} is not whole")
    trash = store / ".storewarden" / "trash"
    if [entry for entry in os.listdir(trash) if not stat.S_ISDIR(os.lstat(trash / entry).st_mode)]:
        problems.append(f"intents left in the trash: {os.listdir(trash)}")
    return problems

"""Pressure prunes on a real 64 MiB tmpfs, measured with the real psutil.

Each test fills a fresh tmpfs with ~2 MiB versions, runs one Engine cycle and
then checks the filesystem itself: what df would say, which versions are
left, and whether the audit events told the truth about it.
"""

from __future__ import annotations

import errno
import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from storewarden.config import build_config
from storewarden.engine import Engine
from storewarden.store import census
from tests.conftest import Audit
from tests.storebuilder import NOW, make_version, point_latest

pytestmark = pytest.mark.tmpfs

MiB = 1 << 20
VERSION_BYTES = 2 * MiB
TMPFS_SIZE = "64m"
NAMES = ("alpha", "beta", "gamma")
PINNED = "alpha:alpha-00"


@dataclass(frozen=True)
class Made:
    """One version the test wrote."""

    kind: str
    name: str
    version: str
    created: datetime
    path: Path

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"


def fill(root: Path, per_name: int, *, bentos: int = 0) -> list[Made]:
    """Write ``per_name`` versions of each model name, interleaved in time, oldest first.

    Version ``index`` of every name is created before version ``index + 1`` of
    any name, so "oldest first" across names is a real order to check. Each
    name's latest names its newest version. ``bentos`` adds that many versions
    of the bento 'svc' at the oldest end.
    """
    (root / "models").mkdir(parents=True)
    (root / "bentos").mkdir()
    start = NOW - timedelta(days=200)
    made: list[Made] = []
    for index in range(bentos):
        created = start - timedelta(days=bentos - index)
        version = f"svc-{index:02d}"
        path = make_version(
            root, "svc", version, kind="bentos", created=created, size=VERSION_BYTES
        )
        made.append(Made("bentos", "svc", version, created, path))
    if bentos:
        point_latest(root, "svc", made[-1].version, kind="bentos")
    for index in range(per_name):
        for offset, name in enumerate(NAMES):
            created = start + timedelta(days=index, hours=offset)
            version = f"{name}-{index:02d}"
            path = make_version(root, name, version, created=created, size=VERSION_BYTES)
            made.append(Made("models", name, version, created, path))
    for name in NAMES:
        point_latest(root, name, f"{name}-{per_name - 1:02d}")
    return made


@dataclass(frozen=True)
class Disk:
    """The tmpfs as psutil sees it."""

    used: int
    free: int

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used / (self.used + self.free)


def disk(mount: Path) -> Disk:
    """Return the real usage of the filesystem at ``mount``."""
    usage = psutil.disk_usage(str(mount))
    return Disk(usage.used, usage.free)


def store_blocks(root: Path) -> int:
    """Return st_blocks * 512 of every version directory and its contents, counted here.

    The store's size is its versions' size: the ``latest`` pointers (a block
    each) are not part of it.
    """
    total = 0
    for version in [*root.glob("models/*/*"), *root.glob("bentos/*/*")]:
        if version.name == "latest":
            continue
        total += os.lstat(version).st_blocks * 512
        for base, directories, files in os.walk(version):
            for entry in [*directories, *files]:
                total += os.lstat(Path(base) / entry).st_blocks * 512
    return total


def engine_for(root: Path, **sections: Any) -> Engine:
    """Return an Engine on ``root`` whose fresh versions are not held back by settle/min_age."""
    data: dict[str, Any] = {
        "store": str(root),
        "protect": {"settle": 0, "min_age": 0, "keep_last": 2, "pins": [PINNED]},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return Engine(build_config(data))


def tolerance(mount: Path, blocks: int = 2) -> float:
    """Return how many percentage points ``blocks`` filesystem blocks are, plus rounding."""
    capacity = disk(mount).used + disk(mount).free
    return 100.0 * blocks * os.statvfs(mount).f_frsize / capacity + 0.01


def protected(made: list[Made], per_name: int, keep_last: int = 2) -> set[str]:
    """Return the tags that latest, keep_last and the pin protect."""
    kept = {PINNED}
    for name in NAMES:
        kept |= {f"{name}:{name}-{index:02d}" for index in range(per_name - keep_last, per_name)}
    bentos = [item for item in made if item.kind == "bentos"]
    kept |= {item.tag for item in bentos[-keep_last:]}
    return kept


def assert_oldest_first(made: list[Made], removed: list[dict[str, Any]], keep: set[str]) -> None:
    """Assert the removals are, in order, the oldest versions nothing protects."""
    eligible = sorted((item for item in made if item.tag not in keep), key=lambda i: i.created)
    removed_tags = [f"{event['name']}:{event['version']}" for event in removed]
    assert removed_tags == [item.tag for item in eligible[: len(removed)]]


def assert_events_match_reality(
    removed: list[dict[str, Any]], before: Disk, after: Disk, mount: Path
) -> None:
    """Assert used_percent_before/after of the events agree with psutil, within two blocks."""
    slack = tolerance(mount)
    assert removed[0]["used_percent_before"] == pytest.approx(before.used_percent, abs=slack)
    for earlier, later in itertools.pairwise(removed):
        assert later["used_percent_before"] == pytest.approx(
            earlier["used_percent_after"], abs=slack
        )
        assert later["used_percent_after"] < later["used_percent_before"]
    assert removed[-1]["used_percent_after"] == pytest.approx(after.used_percent, abs=slack)


def survivors(root: Path) -> set[str]:
    """Return the tags left in the store."""
    return {record.tag for record in census(root).versions}


@pytest.fixture
def mount(tmpfs: Callable[[str], Path]) -> Path:
    """A fresh 64 MiB tmpfs."""
    return tmpfs(TMPFS_SIZE)


def test_high_percent_prunes_oldest_first_down_to_low_percent(mount: Path, audit: Audit) -> None:
    root = mount / "bentoml"
    made = fill(root, per_name=9, bentos=3)
    engine = engine_for(root, trigger={"high_percent": 90, "low_percent": 60})
    engine.pruner.prepare()
    engine.census()  # the warden's own state (its census cache) takes its blocks first
    before = disk(mount)
    assert before.used_percent >= 90  # 30 versions of 2 MiB on 64 MiB

    result = engine.cycle()

    after = disk(mount)
    removed = audit.named("version_removed")
    assert after.used_percent <= 60
    assert removed[-1]["used_percent_before"] > 60  # it stopped as soon as the target held
    assert len(removed) == len(result.removed) >= 10
    keep = protected(made, per_name=9)
    assert_oldest_first(made, removed, keep)
    assert keep <= survivors(root)
    for name in NAMES:
        assert (root / "models" / name / "latest").read_text() == f"{name}-08"
    assert_events_match_reality(removed, before, after, mount)
    (finished,) = audit.named("prune_finished")
    assert finished["target_reached"] is True
    assert finished["shortfall_bytes"] == 0
    assert finished["used_percent_after"] == pytest.approx(after.used_percent, abs=tolerance(mount))
    assert result.target_reached


def test_below_high_percent_nothing_is_removed(mount: Path, audit: Audit) -> None:
    root = mount / "bentoml"
    fill(root, per_name=5)
    assert disk(mount).used_percent < 60

    result = engine_for(root, trigger={"high_percent": 60, "low_percent": 10}).cycle()

    assert result.plan.triggers == ()
    assert result.removed == ()
    assert len(survivors(root)) == 15
    assert audit.named("version_removed") == []


def test_min_free_prunes_until_that_much_is_free(mount: Path, audit: Audit) -> None:
    root = mount / "bentoml"
    made = fill(root, per_name=9)
    min_free = 24 * MiB
    before = disk(mount)
    assert before.free < min_free

    result = engine_for(
        root, trigger={"high_percent": 100, "low_percent": 99, "min_free": "24MiB"}
    ).cycle()

    after = disk(mount)
    removed = audit.named("version_removed")
    assert result.plan.triggers == ("min_free",)
    assert after.free >= min_free
    assert after.free - removed[-1]["bytes"] < min_free  # one fewer removal would not do
    assert [event["reason"] for event in removed] == ["min_free"] * len(removed)
    keep = protected(made, per_name=9)
    assert_oldest_first(made, removed, keep)
    assert keep <= survivors(root)
    assert_events_match_reality(removed, before, after, mount)
    assert result.target_reached


def test_max_store_size_prunes_until_the_store_fits(mount: Path, audit: Audit) -> None:
    root = mount / "bentoml"
    made = fill(root, per_name=8, bentos=2)
    limit = 30 * MiB
    assert store_blocks(root) > limit

    result = engine_for(
        root, trigger={"high_percent": 100, "low_percent": 99, "max_store_size": "30MiB"}
    ).cycle()

    removed = audit.named("version_removed")
    assert result.plan.triggers == ("max_store_size",)
    assert store_blocks(root) <= limit
    assert store_blocks(root) + removed[-1]["bytes"] > limit  # one fewer removal would not do
    keep = protected(made, per_name=8)
    assert_oldest_first(made, removed, keep)
    assert keep <= survivors(root)
    assert result.usage_after is not None
    assert result.usage_after.store_bytes == store_blocks(root)
    assert result.target_reached


def test_a_target_out_of_reach_reports_its_shortfall(mount: Path, audit: Audit) -> None:
    root = mount / "bentoml"
    made = fill(root, per_name=9)
    before = disk(mount)

    result = engine_for(
        root,
        trigger={"high_percent": 80, "low_percent": 20},
        protect={"keep_last": 100},
    ).cycle()

    assert result.plan.triggers == ("high_percent",)
    assert result.removed == ()
    assert survivors(root) == {item.tag for item in made}
    capacity = before.used + before.free
    expected_shortfall = disk(mount).used - int(capacity * 0.20)
    assert result.shortfall_bytes == pytest.approx(expected_shortfall, abs=2 * 4096)
    assert not result.target_reached
    (finished,) = audit.named("prune_finished")
    assert finished["shortfall_bytes"] > 0
    assert finished["target_reached"] is False
    assert finished["removed"] == 0


def test_a_target_only_partly_reachable_removes_every_candidate_and_reports_the_rest(
    mount: Path, audit: Audit
) -> None:
    root = mount / "bentoml"
    made = fill(root, per_name=9)

    result = engine_for(
        root,
        trigger={"high_percent": 80, "low_percent": 20},
        protect={"keep_last": 5},
    ).cycle()

    after = disk(mount)
    keep = protected(made, per_name=9, keep_last=5)
    removed = audit.named("version_removed")
    assert survivors(root) == keep
    assert len(removed) == len(made) - len(keep)
    assert_oldest_first(made, removed, keep)
    expected_shortfall = after.used - int((after.used + after.free) * 0.20)
    assert result.shortfall_bytes == pytest.approx(expected_shortfall, abs=2 * 4096)
    (finished,) = audit.named("prune_finished")
    assert finished["target_reached"] is False
    assert finished["shortfall_bytes"] == result.shortfall_bytes


def fill_to_the_brim(mount: Path) -> Path:
    """Fill what is left of the tmpfs with a file outside the store; return it."""
    filler = mount / "other-data.bin"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, b"x" * 65536)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    return filler


def test_a_full_filesystem_is_pruned_and_leaves_the_store_and_the_lock_sound(
    mount: Path, audit: Audit
) -> None:
    root = mount / "bentoml"
    made = fill(root, per_name=6)
    fill_to_the_brim(mount)
    assert disk(mount).free == 0
    engine = engine_for(root, trigger={"high_percent": 90, "low_percent": 60})

    result = engine.cycle()

    # Intent records are empty files (no data block), so the first removals need no
    # space; a pointer rewrite that still hits ENOSPC is retried once space is freed.
    assert result.removed
    assert not audit.named("removal_failed")
    removed = {f"{event['name']}:{event['version']}" for event in audit.named("version_removed")}
    assert survivors(root) == {item.tag for item in made} - removed
    for name in NAMES:
        latest = (root / "models" / name / "latest").read_text()
        assert (root / "models" / name / latest / "model.yaml").is_file()
    assert os.listdir(root / ".storewarden" / "trash") == []
    # The lock was released: the next cycle runs (and finds nothing more it may remove).
    engine.cycle(recover=True)
    assert os.listdir(root / ".storewarden" / "trash") == []


def test_a_completely_full_filesystem_can_still_be_pruned(mount: Path, audit: Audit) -> None:
    root = mount / "bentoml"
    fill(root, per_name=6)
    fill_to_the_brim(mount)

    engine = engine_for(root, trigger={"high_percent": 90, "low_percent": 60})
    result = engine.cycle()

    assert result.failed == ()
    assert result.removed
    # The filler outside the store keeps the target out of reach: everything the
    # policy allows is gone, and what is left is protected.
    assert result.target_reached or not engine.make_plan().plan.removals
    assert disk(mount).free >= sum(outcome.bytes_freed for outcome in result.removed) - 4096


# -- models/ on a filesystem of its own (issue 14, case 9) ------------------------------------


@pytest.fixture(params=["a-directory-of-another-disk", "a-whole-disk"])
def split_store(
    request: pytest.FixtureRequest, tmpfs: Callable[[str], Path]
) -> Iterator[tuple[Path, Path]]:
    """A store on one tmpfs whose models/ is another filesystem, mounted there.

    Either a directory of a second tmpfs bind-mounted at models/, or a whole
    tmpfs mounted at models/. Return the store root and the second one's
    mount point (what to measure it by).
    """
    root = tmpfs(TMPFS_SIZE) / "bentoml"
    (root / "models").mkdir(parents=True)
    (root / "bentos").mkdir()
    models = root / "models"
    if request.param == "a-directory-of-another-disk":
        disk_b = tmpfs(TMPFS_SIZE)
        (disk_b / "models-data").mkdir()
        subprocess.run(["mount", "--bind", str(disk_b / "models-data"), str(models)], check=True)
    else:
        disk_b = models
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(models)], check=True
        )
    yield root, disk_b
    subprocess.run(["umount", "-l", str(models)], check=True)


def test_a_models_filesystem_of_its_own_is_measured_and_pruned_on_its_own(
    split_store: tuple[Path, Path], audit: Audit
) -> None:
    root, disk_b = split_store
    made = []
    for index in range(30):  # ~60 MiB of models on the second filesystem
        created = NOW - timedelta(days=100 - index)
        made.append(
            make_version(root, "iris", f"v{index:02d}", created=created, size=VERSION_BYTES)
        )
    point_latest(root, "iris", "v29")
    old_bento = make_version(root, "svc", "b0", kind="bentos", created=NOW - timedelta(days=300))
    point_latest(root, "svc", "b0", kind="bentos")
    assert disk(disk_b).used_percent > 90
    assert disk(root).used_percent < 10  # the store root's filesystem is nearly empty

    engine = engine_for(root, trigger={"high_percent": 90, "low_percent": 60})
    result = engine.cycle()

    assert disk(disk_b).used_percent <= 60
    assert result.target_reached, result.failed
    assert result.plan.triggers == ("high_percent",)
    removed = [event["version"] for event in audit.named("version_removed")]
    assert removed == [path.name for path in made[: len(removed)]]  # oldest first
    assert old_bento.is_dir()  # its filesystem is under no pressure
    assert os.listdir(root / ".storewarden" / "trash") == []  # every intent done
    assert sorted(os.listdir(root / "models")) == ["iris"]  # nothing of the warden's in models/
    filesystems = audit.named("prune_started")[0]["usage"]["filesystems"]
    assert [fs["kinds"] for fs in filesystems] == [["bentos"], ["models"]]

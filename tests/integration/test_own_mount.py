"""Removal in place: ``models/`` a filesystem of its own, so no trash can be on it.

A version there leaves its name in one rename, into a hidden name directory
on the same mount (``models/storewarden-removing-<id>/``), before any file
of it goes: from that instant BentoML cannot resolve its tag (nothing can be
built on it or load it), and its listing stays valid while the files go,
descriptor last. A crash before the rename is undone at restart, whatever
was pinned or built meanwhile; one after it is finished. Files that cannot
be removed wait, logged, without stopping any later prune.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from storewarden.engine import Engine
from storewarden.pins import Pin, PinBoard
from storewarden.prune import Operations
from storewarden.tags import REMOVING_PREFIX
from tests import invariants
from tests.conftest import Audit
from tests.integration.test_thresholds import engine_for, split_store
from tests.storebuilder import NOW, make_bento, make_version, point_latest

__all__ = ["split_store"]  # the fixture, used by name

pytestmark = pytest.mark.tmpfs


def in_hidden(path: Path) -> bool:
    """Return whether a step's path lies in a hidden directory of a removal in place.

    Its files go through a descriptor of that directory (``/proc/self/fd/N/...``).
    """
    return REMOVING_PREFIX in str(path) or str(path).startswith("/proc/self/fd/")


class Stop(BaseException):
    """Stands for a crash."""


def hidden_dirs(root: Path) -> list[str]:
    """Return the warden's hidden name directories under models/."""
    return sorted(
        entry for entry in os.listdir(root / "models") if entry.startswith(REMOVING_PREFIX)
    )


def three_versions(root: Path) -> Path:
    """iris v1 (with a subdirectory), v2, v3 (latest); return v1."""
    victim = make_version(root, "iris", "v1", created=NOW - timedelta(days=9))
    (victim / "assets").mkdir()
    (victim / "assets" / "vocab.txt").write_text("a\n")
    (victim / "assets" / "locked.bin").write_bytes(b"l" * 4096)
    make_version(root, "iris", "v2", created=NOW - timedelta(days=5))
    make_version(root, "iris", "v3", created=NOW - timedelta(days=2))
    point_latest(root, "iris", "v3")
    return victim


def test_a_crash_after_the_rename_is_finished_at_restart_and_the_listing_stayed_valid(
    split_store: tuple[Path, Path], audit: Audit
) -> None:
    root, _disk_b = split_store
    victim = three_versions(root)
    unlinked: list[str] = []

    class Crashing(Operations):
        def step(self, name: str, path: Path) -> None:
            if name == "unlink" and in_hidden(path):
                unlinked.append(path.name)
                if len(unlinked) == 2:
                    raise Stop

    config = engine_for(root).config
    with pytest.raises(Stop):
        Engine(config, operations=Crashing()).delete(["iris:v1"])

    assert not victim.exists()  # out of its name before any file went
    (hidden,) = hidden_dirs(root)
    assert (root / "models" / hidden / "v1" / "model.yaml").is_file()  # descriptor last

    engine = Engine(config)
    with engine.lock.held():
        engine.recover()

    assert hidden_dirs(root) == []
    assert "model.yaml" not in unlinked
    (event,) = [e for e in audit.named("version_removed") if e.get("recovered")]
    assert event["version"] == "v1"
    assert os.listdir(root / ".storewarden" / "trash") == []
    assert sorted(os.listdir(root / "models" / "iris")) == ["latest", "v2", "v3"]


def test_a_crash_before_the_rename_is_undone_whatever_was_pinned_or_built_meanwhile(
    split_store: tuple[Path, Path], audit: Audit
) -> None:
    root, _disk_b = split_store
    victim = three_versions(root)
    before = invariants.digest_tree(victim)

    class Crashing(Operations):
        def step(self, name: str, path: Path) -> None:
            if name == "rename":
                raise Stop

    config = engine_for(root).config
    with pytest.raises(Stop):
        Engine(config, operations=Crashing()).delete(["iris:v1"])
    # While the warden is down: a bento is built on v1, and v1 is pinned.
    make_bento(root, "svc", "b1", needs=("iris:v1",), created=NOW)
    PinBoard(root / ".storewarden").add(Pin("iris:v1", "models", "ops", NOW))

    engine = Engine(config)
    with engine.lock.held():
        engine.recover()
    result = Engine(config).cycle()  # no trigger: nothing to remove

    assert invariants.digest_tree(victim) == before
    assert hidden_dirs(root) == []
    assert audit.named("removal_rolled_back")[0]["version"] == "v1"
    assert [e for e in audit.named("version_removed") if e["version"] == "v1"] == []
    assert result.removed == ()
    assert os.listdir(root / ".storewarden" / "trash") == []


def test_files_that_cannot_be_removed_wait_without_stopping_any_later_prune(
    split_store: tuple[Path, Path], audit: Audit
) -> None:
    root, _disk_b = split_store
    three_versions(root)
    make_version(root, "iris", "v0", created=NOW - timedelta(days=20))

    class Immutable(Operations):  # as `chattr +i` on one file, or another user's directory
        def step(self, name: str, path: Path) -> None:
            if name == "unlink" and path.name == "locked.bin":
                raise PermissionError(1, "Operation not permitted", str(path))

    config = engine_for(root).config
    first = Engine(config, operations=Immutable()).delete(["iris:v1"])

    assert [outcome.record.version for outcome in first.removed] == ["v1"]  # out of the store
    assert audit.named("trash_not_emptied")[0]["path"].startswith(
        str(root / "models" / REMOVING_PREFIX)
    )
    (waiting,) = os.listdir(root / ".storewarden" / "trash")
    assert waiting.endswith("+h")

    # Still immutable: the next prune recovers around it and removes another version.
    second = engine_for(root, retention={"max_versions": 2}).config
    result = Engine(second, operations=Immutable()).cycle(recover=True)
    assert [outcome.record.version for outcome in result.removed] == ["v0"]
    assert len(audit.named("trash_not_emptied")) == 2

    # Once the file can go, the next start empties it, and logs no second removal.
    Engine(config).cycle(recover=True)
    assert hidden_dirs(root) == []
    assert os.listdir(root / ".storewarden" / "trash") == []
    assert sorted(e["version"] for e in audit.named("version_removed")) == ["v0", "v1"]


BENTOML_VIEW = """
import json, sys
import bentoml
from bentoml.exceptions import NotFound
listed = sorted(str(model.tag) for model in bentoml.models.list())
try:
    bentoml.models.get(sys.argv[1])
    resolves = True
except NotFound:
    resolves = False
print(json.dumps({"listed": listed, "resolves": resolves}))
"""

SAVE = """
import bentoml
for _ in range(2):
    with bentoml.models.create("iris") as model:
        with open(model.path_of("weights.bin"), "wb") as handle:
            handle.write(b"w" * 65536)
print(" ".join(str(model.tag) for model in bentoml.models.list()))
"""


@pytest.mark.slow
def test_bentoml_lists_the_store_but_cannot_resolve_a_version_once_its_removal_began(
    split_store: tuple[Path, Path],
) -> None:
    root, _disk_b = split_store
    environment = {**os.environ, "BENTOML_HOME": str(root), "BENTOML_DO_NOT_TRACK": "True"}
    saved = subprocess.run(
        [sys.executable, "-c", SAVE], env=environment, capture_output=True, text=True, check=True
    )
    tags = saved.stdout.split()
    oldest = min(tags, key=lambda tag: (root / "models" / tag.replace(":", "/")).stat().st_mtime)
    seen: list[dict[str, Any]] = []

    class Looking(Operations):  # BentoML looks while the files go
        def step(self, name: str, path: Path) -> None:
            if name == "unlink" and in_hidden(path) and not seen:
                view = subprocess.run(
                    [sys.executable, "-c", BENTOML_VIEW, oldest],
                    env=environment,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                seen.append(json.loads(view.stdout))

    config = engine_for(root, protect={"keep_last": 0}).config
    Engine(config, operations=Looking()).delete([oldest])

    assert seen and seen[0]["resolves"] is False
    assert oldest in seen[0]["listed"]  # listed from its hidden directory: no error
    after = subprocess.run(
        [sys.executable, "-c", BENTOML_VIEW, oldest],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(after.stdout)["listed"] == sorted(set(tags) - {oldest})


def test_models_bind_mounted_from_the_same_filesystem_is_pruned_in_place(
    tmpfs: Callable[[str], Path], audit: Audit
) -> None:
    # Same st_dev as the root, yet another mount: rename into the trash fails with EXDEV.
    disk = tmpfs("64m")
    root = disk / "bentoml"
    (root / "models").mkdir(parents=True)
    (disk / "models-data").mkdir()
    subprocess.run(["mount", "--bind", str(disk / "models-data"), str(root / "models")], check=True)
    try:
        victim = three_versions(root)
        engine = engine_for(root, trigger={"max_store_size": 1}, protect={"keep_last": 1})
        assert any("models/ is a mount of its own" in line for line in engine.preflight())

        result = engine.cycle()
    finally:
        subprocess.run(["umount", "-l", str(root / "models")], check=True)

    assert audit.named("removal_failed") == []
    assert {outcome.record.version for outcome in result.removed} == {"v1", "v2"}
    assert not victim.exists()
    assert sorted(os.listdir(disk / "models-data")) == ["iris"]  # no hidden directory left
    assert sorted(os.listdir(disk / "models-data" / "iris")) == ["latest", "v3"]


def test_a_hidden_directory_swapped_for_a_symlink_while_its_files_go_is_never_followed(
    split_store: tuple[Path, Path], tmp_path: Path, audit: Audit
) -> None:
    # Found by review: the hidden directory sits in models/, which its owner may write;
    # exchanged for a symlink while its files went, the walk by path followed it and
    # removed a same-named tree elsewhere.
    root, _disk_b = split_store
    three_versions(root)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "v1" / "assets").mkdir(parents=True)
    for name in ("model.yaml", "weights.bin", "assets/vocab.txt", "assets/locked.bin"):
        (elsewhere / "v1" / name).write_text("not the store's")
    swapped: list[Path] = []

    class Swapping(Operations):
        def step(self, name: str, path: Path) -> None:
            if name == "unlink" and in_hidden(path) and not swapped:
                (hidden,) = hidden_dirs(root)
                moved = root / "models" / f"moved-{hidden}"
                os.rename(root / "models" / hidden, moved)
                os.symlink(elsewhere, root / "models" / hidden)
                swapped.append(moved)

    Engine(engine_for(root).config, operations=Swapping()).delete(["iris:v1"])

    assert swapped
    kept = sorted(str(path.relative_to(elsewhere)) for path in elsewhere.rglob("*"))
    assert kept == sorted(
        [
            "v1",
            "v1/assets",
            "v1/model.yaml",
            "v1/weights.bin",
            "v1/assets/vocab.txt",
            "v1/assets/locked.bin",
        ]
    )
    assert not (swapped[0] / "v1").exists()  # the store's own files went, where they were

"""The warden's state directory is its own, and check refuses what start and reload refuse.

Issue 14, cases 4 and 10: a state_dir pointing at a directory that holds
anything else (or at the store itself) must be refused by ``check`` and at
start, before the warden empties its ``tmp/`` and ``trash/``; a config that
``check`` accepts must never stop a daemon on SIGHUP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storewarden.prune import STATE_MARKER
from tests.conftest import _mount_tmpfs
from tests.e2e.test_cli import run_cli
from tests.e2e.test_daemon import DaemonProcess, fast_config, start_daemon
from tests.storebuilder import NOW, make_version, point_latest

__all__ = ["start_daemon"]  # the fixture, used by name


def user_directory(path: Path) -> dict[str, bytes]:
    """Fill ``path`` as a user might: files, and tmp/ and trash/ of their own."""
    files = {
        "notes.txt": b"mine\n",
        "tmp/draft.txt": b"a draft I still need\n",
        "trash/keep-me.bin": b"not really trash\n",
    }
    for relative, content in files.items():
        (path / relative).parent.mkdir(parents=True, exist_ok=True)
        (path / relative).write_bytes(content)
    return files


def unchanged(path: Path, files: dict[str, bytes]) -> bool:
    """Return whether every file is still there with its content, and nothing was added."""
    present = sorted(
        str(Path(base, name).relative_to(path))
        for base, _directories, names in os.walk(path)
        for name in names
    )
    return present == sorted(files) and all(
        (path / relative).read_bytes() == content for relative, content in files.items()
    )


def config_with(tmp_path: Path, **values: object) -> Path:
    """Write a config of ``values`` (JSON is YAML) and return its path."""
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(values))
    return path


@pytest.mark.parametrize("command", ["check", "prune", "status", "pin"])
def test_a_state_dir_holding_other_files_is_refused_and_left_untouched(
    store: Path, tmp_path: Path, command: str
) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    mine = tmp_path / "my-things"
    mine.mkdir()
    files = user_directory(mine)
    config = config_with(tmp_path, state_dir=str(mine))
    arguments = ["iris:v1"] if command == "pin" else []

    result = run_cli(store, command, *arguments, "--config", str(config))

    if command == "status":  # read-only: it never writes into the state directory
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"storewarden: state_dir {mine} holds files")
        assert "notes.txt" in result.stderr
    assert unchanged(mine, files)


@pytest.mark.parametrize("where", ["the-store", "above-the-store"])
def test_a_state_dir_that_is_or_holds_the_store_is_refused(
    store: Path, tmp_path: Path, where: str
) -> None:
    # As the store root, the warden's tmp/ would be BentoML's own $BENTOML_HOME/tmp.
    staging = store / "tmp" / "bentoml_bento_svcab12cd34"
    staging.mkdir(parents=True)
    (staging / "bento.yaml").write_text("name: svc\n")
    state = store if where == "the-store" else store.parent
    config = config_with(tmp_path, state_dir=str(state))

    for command in ("check", "prune"):
        result = run_cli(store, command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert "is the store" in result.stderr
    assert (staging / "bento.yaml").read_text() == "name: svc\n"


def test_the_state_dir_an_older_warden_left_is_adopted(store: Path, tmp_path: Path) -> None:
    state = store / ".storewarden"
    for directory in ("trash", "tmp"):
        (state / directory).mkdir(parents=True)
    (state / "lock").write_text("123\n")
    (state / "census-cache.json").write_text("{}")
    (state / "tmp" / "latest-0123abcd").write_text("v1")  # left by a crash

    result = run_cli(store, "prune")

    assert result.returncode == 0, result.stderr
    assert (state / STATE_MARKER).is_file()
    assert os.listdir(state / "tmp") == []
    (emptied,) = [json.loads(line) for line in result.stdout.splitlines() if "tmp_emptied" in line]
    assert emptied["entries"] == 1


def test_a_given_state_dir_holding_files_named_as_the_wardens_is_adopted_only_when_marked(
    store: Path, tmp_path: Path
) -> None:
    # Named as a warden names its own, yet nothing says a warden made them.
    make_version(store, "iris", "v1", set_latest=True)
    state = tmp_path / "state"
    (state / "trash" / "deadbeef-1").mkdir(parents=True)
    (state / "trash" / "deadbeef-1" / "important.txt").write_text("mine\n")
    (state / "census-cache.json").write_text("my notes\n")
    config = config_with(tmp_path, state_dir=str(state))

    for command in ("check", "prune"):
        result = run_cli(store, command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert "is not marked as storewarden's" in result.stderr
        assert f"touch {state / STATE_MARKER}" in result.stderr
    assert (state / "trash" / "deadbeef-1" / "important.txt").read_text() == "mine\n"
    assert (state / "census-cache.json").read_text() == "my notes\n"

    (state / STATE_MARKER).touch()  # the operator says it is the warden's
    assert run_cli(store, "prune", "--config", str(config)).returncode == 0
    assert not (state / "trash" / "deadbeef-1").exists()


def test_a_given_state_dir_that_is_new_or_empty_is_made_the_wardens(
    store: Path, tmp_path: Path
) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    for state in (tmp_path / "new", tmp_path / "empty"):
        if state.name == "empty":
            (state / "tmp").mkdir(parents=True)
        config = config_with(tmp_path, state_dir=str(state))
        result = run_cli(store, "prune", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert (state / STATE_MARKER).is_file()


def _older_state(store: Path) -> Path:
    """A state directory as an older warden (before the marker) left it."""
    state = store / ".storewarden"
    for directory in ("trash", "tmp"):
        (state / directory).mkdir(parents=True)
    (state / "lock").write_text("123\n")
    return state


@pytest.mark.parametrize("where", ["tmp", "trash"])
def test_an_unmarked_state_dir_whose_tmp_or_trash_holds_a_users_files_is_refused(
    store: Path, tmp_path: Path, where: str
) -> None:
    # Names alone are not enough: a user's project directory called tmp/ is not ours.
    make_version(store, "iris", "v1", set_latest=True)
    mine = tmp_path / "my-things"
    (mine / where / "project").mkdir(parents=True)
    (mine / where / "project" / "notes.txt").write_text("mine\n")
    config = config_with(tmp_path, state_dir=str(mine))

    for command in ("check", "prune"):
        result = run_cli(store, command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert f"{mine / where} holds entries that are not storewarden's (project)" in (
            result.stderr
        )
    assert (mine / where / "project" / "notes.txt").read_text() == "mine\n"
    assert not (mine / STATE_MARKER).exists()


@pytest.mark.parametrize("marked", [False, True], ids=["unmarked", "marked"])
@pytest.mark.parametrize("where", ["tmp", "trash"])
def test_a_tmp_or_trash_that_is_a_symlink_is_refused_and_its_target_kept(
    store: Path, tmp_path: Path, where: str, marked: bool
) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    state = _older_state(store)
    if marked:
        (state / STATE_MARKER).touch()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.bin").write_bytes(b"p" * 100)
    os.rmdir(state / where)
    os.symlink(elsewhere, state / where)

    for command in ("check", "prune"):
        result = run_cli(store, command)
        assert result.returncode == 2, result.stderr
        assert f"{state / where} is a symlink" in result.stderr
    assert (elsewhere / "precious.bin").read_bytes() == b"p" * 100


@pytest.mark.tmpfs
@pytest.mark.parametrize("what", ["another-filesystem", "a-bind-mount-of-the-same-one"])
@pytest.mark.parametrize("where", ["tmp", "trash"])
def test_a_filesystem_mounted_on_the_state_dirs_tmp_or_trash_is_refused_and_left_whole(
    store: Path, tmp_path: Path, where: str, what: str
) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    assert run_cli(store, "prune").returncode == 0  # a state directory of its own, marked
    wiped = store / ".storewarden" / where
    outside = tmp_path / "outside-the-store"
    outside.mkdir()
    try:
        if what == "another-filesystem":
            _mount_tmpfs(wiped, "1m")
        else:  # keeps st_dev: only the mount table tells it from the warden's own directory
            subprocess.run(
                ["mount", "--bind", str(outside), str(wiped)], check=True, capture_output=True
            )
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        pytest.skip(f"cannot mount here (needs root or CAP_SYS_ADMIN): {error}")
    try:
        (wiped / "work").mkdir()
        (wiped / "work" / "file").write_text("another filesystem's\n")
        (wiped / "latest-0123abcd").write_text("named as the warden names its own\n")

        for command in ("check", "prune"):
            result = run_cli(store, command)
            assert result.returncode == 2, result.stderr
            assert f"{wiped} is a mount point" in result.stderr
        assert (wiped / "work" / "file").read_text() == "another filesystem's\n"
        assert (wiped / "latest-0123abcd").exists()
    finally:
        subprocess.run(["umount", "-l", str(wiped)], check=False)


@pytest.mark.tmpfs
def test_a_state_dir_that_is_a_bind_mount_of_the_same_filesystem_is_refused(
    store: Path, tmp_path: Path
) -> None:
    # Same st_dev as the store, yet another mount: every rename into its trash is EXDEV.
    make_version(store, "iris", "v1", created=NOW - timedelta(days=9))
    make_version(store, "iris", "v2", set_latest=True)
    source = tmp_path / "state-source"
    source.mkdir()
    state = store / ".storewarden"
    state.mkdir()
    try:
        subprocess.run(
            ["mount", "--bind", str(source), str(state)], check=True, capture_output=True
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        pytest.skip(f"cannot mount here (needs root or CAP_SYS_ADMIN): {error}")
    try:
        for command in ("check", "prune"):
            result = run_cli(store, command)
            assert result.returncode == 2, result.stderr
            assert "is under another mount" in result.stderr
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    assert (store / "models" / "iris" / "v1" / "model.yaml").is_file()


@pytest.mark.parametrize("inside", [".storewarden/trash", ".storewarden/tmp/x", ".storewarden"])
def test_an_archive_dir_the_warden_would_empty_is_refused(
    store: Path, tmp_path: Path, inside: str
) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    make_version(store, "iris", "v2", set_latest=True)
    config = config_with(
        tmp_path, archive={"dir": str(store / inside)}, retention={"max_versions": 1}
    )

    for command in ("check", "prune"):
        result = run_cli(store, command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert f"archive.dir {store / inside} is" in result.stderr
    assert (store / "models" / "iris" / "v1" / "model.yaml").is_file()


def test_a_fresh_state_dir_is_created_and_marked(store: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"

    result = run_cli(store, "prune", "--config", str(config_with(tmp_path, state_dir=str(state))))

    assert result.returncode == 0, result.stderr
    # The prune's usage sample too: the history the forecast reads.
    assert sorted(os.listdir(state)) == sorted(
        [STATE_MARKER, "lock", "trash", "tmp", "history.jsonl", "history.lock"]
    )


def test_a_dry_run_leaves_the_state_dir_as_it_was(store: Path, tmp_path: Path) -> None:
    # Found by review: a dry run appended a usage sample to the history.
    make_version(store, "iris", "v1", created=NOW - timedelta(days=30))
    make_version(store, "iris", "v2", set_latest=True)
    state = tmp_path / "state"
    config = str(
        config_with(tmp_path, state_dir=str(state), protect={"settle": "0s", "min_age": "0s"})
    )
    assert run_cli(store, "status", "--config", config).returncode == 0
    assert run_cli(store, "prune", "--config", config, "--dry-run").returncode == 0
    first = run_cli(store, "prune", "--config", config)  # makes the state dir, one sample
    assert first.returncode == 0, first.stderr
    before = {path.name: path.read_bytes() for path in state.iterdir() if path.is_file()}

    for command in (["prune", "--dry-run"], ["delete", "iris:v1", "--dry-run"]):
        result = run_cli(store, *command, "--config", config)
        assert result.returncode == 0, result.stderr

    after = {path.name: path.read_bytes() for path in state.iterdir() if path.is_file()}
    assert after == before
    assert (store / "models" / "iris" / "v1").is_dir()


def test_a_dry_run_on_a_store_without_a_state_dir_makes_none(store: Path, tmp_path: Path) -> None:
    make_version(store, "iris", "v1", created=NOW - timedelta(days=30))
    make_version(store, "iris", "v2", set_latest=True)
    config = str(config_with(tmp_path, protect={"settle": "0s", "min_age": "0s"}))
    root_before = os.stat(store).st_mtime_ns

    for command in (["prune", "--dry-run"], ["delete", "iris:v1", "--dry-run"]):
        result = run_cli(store, *command, "--config", config)
        assert result.returncode == 0, result.stderr

    assert not (store / ".storewarden").exists()
    assert os.stat(store).st_mtime_ns == root_before


@pytest.mark.slow
@pytest.mark.tmpfs
def test_a_reload_that_would_fail_at_start_is_rejected_and_the_daemon_keeps_working(
    tmp_path: Path,
    store: Path,
    tmpfs: Callable[[str], Path],
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    for index in range(4):
        make_version(
            store,
            "iris",
            f"v{index}x",
            size=64 * 1024,
            created=datetime.now(tz=UTC) - timedelta(days=10 - index),
        )
    point_latest(store, "iris", "v3x")
    daemon = start_daemon(fast_config(store))
    daemon.wait_for(lambda events: any(e["event"] == "daemon_ready" for e in events), "ready")
    elsewhere = tmpfs("4m") / "state"  # another filesystem: the trash could not be renamed into
    bad = fast_config(store, state_dir=str(elsewhere))
    config_path = tmp_path / "config-0.yaml"
    config_path.write_text(json.dumps(bad))

    checked = run_cli(store, "check", "--config", str(config_path))
    assert checked.returncode == 2
    assert "another filesystem" in checked.stderr

    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda events: any(e["event"] == "config_rejected" for e in events), "reject")
    (rejected,) = daemon.named("config_rejected")
    assert any("another filesystem" in problem for problem in rejected["problems"])
    assert not daemon.named("config_reloaded")

    # Still running, still under the old config: a good reload is taken and prunes.
    assert daemon.process.poll() is None
    config_path.write_text(json.dumps(fast_config(store, trigger={"max_store_size": "100KiB"})))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(
        lambda events: any(e["event"] == "prune_finished" for e in events),
        "a prune under the reloaded config",
    )
    assert daemon.stop() == 0

"""``log.file`` is written only where it is safe: never through a symlink, never into the store.

Red team, round four, case 3: the audit log was appended through a symlink at
its path (as root: to any file), again at every SIGHUP; and a log.file
inside ``models/`` made ``bentoml models list`` fail (``.audit is not a
valid BentoML tag``) once ``check`` had created its directory. Both are
refused with exit 2 at ``check`` and at start, before anything is created,
and at a reload the daemon logs ``config_rejected`` and keeps its old log.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_cli import audit_lines, named, run_cli
from tests.e2e.test_daemon import DaemonProcess, fast_config, start_daemon
from tests.e2e.test_state_dir import config_with
from tests.storebuilder import make_version

__all__ = ["start_daemon"]  # the fixture, used by name

VICTIM = b"root:x:0:0:root:/root:/bin/bash\n"


def tree(root: Path) -> list[str]:
    """Return every path under ``root``, relative, sorted."""
    return sorted(
        str(Path(base, name).relative_to(root))
        for base, directories, files in os.walk(root)
        for name in directories + files
    )


@pytest.mark.parametrize("command", ["check", "prune", "status", "run"])
def test_a_log_file_that_is_a_symlink_is_refused_and_its_target_left_alone(
    store: Path, tmp_path: Path, command: str
) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    logs = tmp_path / "x" / "logs"
    logs.mkdir(parents=True)
    (logs / "audit.log").symlink_to(victim)
    config = config_with(tmp_path, log={"file": str(logs / "audit.log")})

    result = run_cli(store, command, "--config", str(config))

    assert result.returncode == 2, result.stderr
    assert f"log.file {logs / 'audit.log'} is a symlink" in result.stderr
    assert victim.read_bytes() == VICTIM


def test_a_log_file_that_is_not_a_regular_file_is_refused(store: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "audit.log"
    os.mkfifo(fifo)
    config = config_with(tmp_path, log={"file": str(fifo)})

    for command in ("check", "prune"):
        result = run_cli(store, command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert f"log.file {fifo} is not a regular file" in result.stderr


@pytest.mark.parametrize(
    "inside",
    [
        "models/.audit/audit.log",
        "models/audit.log",
        "bentos/.audit/audit.log",
        ".storewarden/trash/audit.log",
        ".storewarden/tmp/logs/audit.log",
        "a-link-to-models/.audit/audit.log",
    ],
)
def test_a_log_file_in_the_store_or_where_the_warden_empties_is_refused_creating_nothing(
    store: Path, tmp_path: Path, inside: str
) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    (store / "bentos").mkdir(exist_ok=True)
    run_cli(store, "prune")  # the state directory, its trash/ and tmp/
    if inside.startswith("a-link-to-models"):
        base = tmp_path / "a-link-to-models"
        base.symlink_to(store / "models")
        log_file = base / inside.partition("/")[2]
    else:
        log_file = store / inside
    config = config_with(tmp_path, log={"file": str(log_file)})
    before = tree(store)

    for command in ("check", "prune", "status", "run"):
        result = run_cli(store, command, "--config", str(config))
        assert result.returncode == 2, (command, result.stderr)
        assert f"storewarden: log.file {log_file} is inside" in result.stderr, command
    assert tree(store) == before


def test_a_log_file_of_its_own_is_created_and_written(store: Path, tmp_path: Path) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    log_file = tmp_path / "var" / "log" / "audit.log"
    config = config_with(tmp_path, log={"file": str(log_file)})

    result = run_cli(store, "pin", "iris:v1", "--config", str(config))

    assert result.returncode == 0, result.stderr
    assert named(audit_lines(log_file.read_text()), "pin_added")
    assert log_file.stat().st_mode & 0o777 == 0o640 & ~current_umask()


def current_umask() -> int:
    """Return this process's umask (the CLI it starts inherits it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_a_log_file_made_a_symlink_before_a_reload_is_refused_and_logged(
    store: Path, tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    log_file = tmp_path / "logs" / "audit.log"
    daemon = start_daemon(fast_config(store, log={"file": str(log_file)}))
    daemon.wait_for(lambda events: any(e["event"] == "daemon_ready" for e in events), "ready")

    log_file.unlink()
    log_file.symlink_to(victim)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda events: any(e["event"] == "config_rejected" for e in events), "reject")

    (rejected,) = daemon.named("config_rejected")
    assert any(f"log.file {log_file} is a symlink" in p for p in rejected["problems"])
    assert not daemon.named("config_reloaded")
    assert victim.read_bytes() == VICTIM
    assert daemon.process.poll() is None
    assert daemon.stop() == 0
    assert victim.read_bytes() == VICTIM

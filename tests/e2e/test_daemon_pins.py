"""A running daemon honours ``storewarden pin`` and ``unpin`` at its next check, no restart."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.test_cli import run_cli
from tests.e2e.test_daemon import DaemonProcess, fast_config, start_daemon
from tests.storebuilder import make_version, point_latest

__all__ = ["start_daemon"]  # the fixture, shared with the daemon's own tests

UNIT = 64 * 1024


def removed(daemon: DaemonProcess) -> list[str]:
    """Return the versions the daemon reported removed, in order."""
    return [event["version"] for event in daemon.named("version_removed")]


@pytest.mark.slow
def test_a_pin_made_while_the_daemon_runs_holds_until_it_is_unpinned(
    store: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    now = datetime.now(tz=UTC)
    make_version(store, "iris", "v0", created=now - timedelta(days=10), size=UNIT)
    make_version(store, "iris", "v1", created=now - timedelta(days=9), size=UNIT)
    point_latest(store, "iris", "v1")
    # v0 and v1 fit under the limit; all four do not, nor do the pinned v0 and the larger v3.
    config = fast_config(
        store, trigger={"max_store_size": "200KiB"}, protect={"in_use": False}
    )  # in_use off: a test run elsewhere on the machine may name the same tags
    daemon = start_daemon(config)
    daemon.wait_for(lambda events: any(e["event"] == "daemon_ready" for e in events), "ready")

    pinned = run_cli(store, "pin", "iris:v0", "--reason", "under investigation")
    assert pinned.returncode == 0, pinned.stderr
    make_version(store, "iris", "v2", created=now - timedelta(days=8), size=UNIT)
    make_version(store, "iris", "v3", created=now - timedelta(days=7), size=2 * UNIT)
    point_latest(store, "iris", "v3")
    # The writes bring a check forward: it removes the unpinned v1 and v2 and stops short.
    daemon.wait_for(
        lambda events: any(
            e["event"] == "prune_finished" and e["removed"] and not e["target_reached"]
            for e in events
        ),
        "a prune that kept the pinned version and fell short",
    )
    assert removed(daemon) == ["v1", "v2"]
    assert (store / "models" / "iris" / "v0").is_dir()
    kept = daemon.named("prune_finished")[-1]
    assert kept["shortfall_bytes"] > 0

    unpinned = run_cli(store, "unpin", "iris:v0")
    assert unpinned.returncode == 0, unpinned.stderr
    # Nothing in the store changed: only the next scheduled check can see the unpin.
    daemon.wait_for(
        lambda events: any(
            e["event"] == "version_removed" and e["version"] == "v0" for e in events
        ),
        "the unpinned version removed",
    )
    assert removed(daemon) == ["v1", "v2", "v0"]
    assert not (store / "models" / "iris" / "v0").exists()
    assert (store / "models" / "iris" / "v3").is_dir()
    assert daemon.stop() == 0

"""`storewarden run` serving metrics as a real process: scraped, reloaded by SIGHUP, stopped."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_daemon import DaemonProcess, fast_config
from tests.promtext import parse, scrape
from tests.storebuilder import make_version, point_latest
from tests.waiting import WAIT

KIB = 1024


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], DaemonProcess]]:
    """Start ``storewarden run`` with a config written from a mapping; SIGKILL it if left."""
    started: list[DaemonProcess] = []

    def launch(config: dict[str, Any]) -> DaemonProcess:
        path = tmp_path / "config.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        daemon = DaemonProcess(path, tmp_path / "daemon.log", dict(os.environ))
        started.append(daemon)
        return daemon

    yield launch
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def listening_port(daemon: DaemonProcess, count: int = 1) -> int:
    """Wait for the ``count``-th metrics_listening event and return its port."""
    daemon.wait_for(
        lambda events: sum(event["event"] == "metrics_listening" for event in events) >= count,
        f"metrics_listening #{count}",
    )
    return int(daemon.named("metrics_listening")[count - 1]["port"])


@pytest.mark.slow
def test_the_daemon_serves_its_removals_keeps_them_across_a_reload_and_closes_on_stop(
    tmp_path: Path, store: Path, start: Callable[[dict[str, Any]], DaemonProcess]
) -> None:
    base = datetime.now(tz=UTC) - timedelta(days=10)
    for index in range(4):
        make_version(
            store, "iris", f"v{index}x", size=64 * KIB, created=base + timedelta(hours=index)
        )
    point_latest(store, "iris", "v3x")
    textfile = tmp_path / "storewarden.prom"
    config = fast_config(
        store,
        trigger={"max_store_size": "100KiB"},
        metrics={"port": 0, "textfile": str(textfile)},
    )
    daemon = start(config)
    port = listening_port(daemon)
    daemon.wait_for(
        lambda events: any(event["event"] == "prune_finished" for event in events), "a prune"
    )
    removed = daemon.named("version_removed")
    assert [event["version"] for event in removed] == ["v0x", "v1x", "v2x"]

    # The metrics are updated once the cycle has returned, a moment after prune_finished.
    deadline = time.monotonic() + WAIT
    samples = scrape(port)
    while samples.value("storewarden_removals_total", reason="max_store_size") < 3:
        assert time.monotonic() < deadline, "the removals never reached the metrics"
        time.sleep(0.05)
        samples = scrape(port)
    assert samples.value("storewarden_removals_total", reason="max_store_size") == 3
    assert samples.value("storewarden_bytes_freed_total", reason="max_store_size") == sum(
        event["bytes"] for event in removed
    )
    assert samples.value("storewarden_store_versions", kind="models") == 1
    # The textfile is rewritten right after the metrics are updated.
    while not (
        textfile.exists()
        and parse(textfile.read_text()).value("storewarden_store_versions", kind="models") == 1
    ):
        assert time.monotonic() < deadline, "the textfile never showed the prune"
        time.sleep(0.05)

    # SIGHUP restarts the endpoint (port 0: on a new port) and keeps the counters.
    daemon.signal(signal.SIGHUP)
    new_port = listening_port(daemon, 2)
    reloaded = scrape(new_port)
    assert reloaded.value("storewarden_removals_total", reason="max_store_size") == 3

    assert daemon.stop() == 0
    with pytest.raises(OSError, match="refused"):
        scrape(new_port)

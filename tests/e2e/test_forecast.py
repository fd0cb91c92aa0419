"""The fill forecast end to end: a writer fills a real tmpfs at a steady rate while the daemon runs.

Once the daemon's history spans 10 check intervals, `storewarden status
--json` must put the high mark within 25% of where the writer's measured
rate puts it, and the daemon must have logged ``forecast_warning``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.test_audit import storewarden
from tests.e2e.test_daemon import DaemonProcess, fast_config, start_daemon
from tests.storebuilder import make_series

__all__ = ["start_daemon"]  # the fixture, shared with the daemon's own tests

REPOSITORY = Path(__file__).resolve().parents[2]
# Saves a version of SIZE bytes every PERIOD seconds into the store; prints each save's
# time and its bytes on disk (as the census counts them) until killed.
WRITER = """
import os, sys, time
from pathlib import Path
from tests.storebuilder import make_version
store, size, period = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
index = 0
next_at = time.monotonic()
while True:
    path = make_version(store, "steady", f"v{index:05d}", size=size)
    on_disk = sum(os.lstat(os.path.join(d, f)).st_blocks * 512
                  for d, _s, files in os.walk(path) for f in files)
    on_disk += sum(os.lstat(d).st_blocks * 512 for d, _s, _f in os.walk(path))
    print(time.monotonic(), on_disk, flush=True)
    index += 1
    next_at += period
    time.sleep(max(0.0, next_at - time.monotonic()))
"""
SIZE = 512 * 1024
PERIOD = 0.25


def test_the_forecast_finds_the_high_mark_of_a_steady_writer(
    tmpfs: Callable[[str], Path], start_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    root = tmpfs("64m")
    store = root / "bentoml"
    make_series(store, "base", 2, size=SIZE)
    daemon = start_daemon(
        fast_config(store, alert={"forecast_horizon": "1h"}, trigger={"high_percent": 85})
    )
    daemon.wait_for(lambda events: any(e["event"] == "daemon_ready" for e in events), "ready")
    writes = tmp_path / "writes.txt"
    with writes.open("w") as output:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store), str(SIZE), str(PERIOD)],
            stdout=output,
            cwd=REPOSITORY,
        )
        try:
            time.sleep(13.0)  # more than 10 check intervals of 1 s
            status = storewarden(
                "status",
                "--store",
                str(store),
                "--json",
                "--config",
                str(tmp_path / "config-0.yaml"),
            )
            used_now = psutil.disk_usage(str(root)).used
        finally:
            writer.kill()
            writer.wait()
    daemon.wait_for(
        lambda events: any(e["event"] == "forecast_warning" for e in events), "forecast_warning"
    )
    assert daemon.stop() == 0
    assert status.returncode == 0, status.stderr
    forecast: dict[str, Any] = json.loads(status.stdout)["forecast"]
    saves = [tuple(map(float, line.split())) for line in writes.read_text().splitlines()]
    # The writer's own rate over the last ten seconds of its saves.
    recent = [save for save in saves if save[0] >= saves[-1][0] - 10.0]
    true_rate = sum(bytes_ for _at, bytes_ in recent[1:]) / (recent[-1][0] - recent[0][0])
    disk = psutil.disk_usage(str(root))
    capacity = disk.used + disk.free
    high_mark = -(-capacity * 85 // 100)
    truth = (high_mark - used_now) / true_rate

    assert forecast["history_seconds"] >= forecast["history_needed_seconds"]
    assert forecast["rate_bytes_per_day"] is not None
    assert forecast["high_mark_seconds"] is not None
    assert abs(forecast["high_mark_seconds"] - truth) <= 0.25 * truth, (forecast, truth)
    [warning, *_] = daemon.named("forecast_warning")
    assert warning["eta"] in ("high_mark", "disk_full")
    assert warning["horizon_seconds"] == 3600

"""The daemon as a real process on a real size-limited tmpfs, driven by real signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from storewarden.logs import check_event
from tests.storebuilder import make_version, point_latest, read_latest
from tests.waiting import WAIT, wait_until

MIB = 1024 * 1024


class DaemonProcess:
    """A running ``storewarden run`` with its JSON log lines."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "storewarden", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def events(self) -> list[dict[str, Any]]:
        """Return every event so far, each held to the audit schema."""
        parsed = []
        for line in self.log_path.read_text().splitlines():
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            check_event(event)
            parsed.append(event)
        return parsed

    def named(self, name: str) -> list[dict[str, Any]]:
        """Return the events called ``name``."""
        return [event for event in self.events() if event["event"] == name]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        """Wait until ``predicate(events)`` holds; fail with the log if it never does."""
        wait_until(
            self.events,
            predicate,
            f"the daemon got to {what} (log: {self.log_path})",
            interval=0.1,
            gave_up=lambda _events: self.process.poll() is not None,
        )

    def signal(self, number: int) -> None:
        """Send a signal to the daemon."""
        self.process.send_signal(number)

    def stop(self) -> int:
        """SIGTERM the daemon and return its exit code (it must exit within 5 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=5)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons with a config written from a mapping; SIGKILL any left at the end."""
    started: list[DaemonProcess] = []

    def start(config: dict[str, Any], extra_env: dict[str, str] | None = None) -> DaemonProcess:
        path = tmp_path / f"config-{len(started)}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        env = {**os.environ, **(extra_env or {})}
        daemon = DaemonProcess(path, tmp_path / f"daemon-{len(started)}.log", env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def fast_config(store: Path, **overrides: Any) -> dict[str, Any]:
    """A config for tests: fresh versions prunable at once, checks every second."""
    config: dict[str, Any] = {
        "store": str(store),
        "protect": {"min_age": "0s", "settle": "0s", "keep_last": 1},
        "schedule": {"check_interval": "1s", "reconcile_interval": "10s", "debounce": "0.2s"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    return config


def used_percent(path: Path) -> float:
    """Return the real used percent of the filesystem holding ``path``."""
    return float(psutil.disk_usage(str(path)).percent)


@pytest.mark.slow
@pytest.mark.tmpfs
@pytest.mark.parametrize("observer", ["auto", "polling"])
def test_daemon_brings_a_filling_tmpfs_under_the_low_mark_oldest_first(
    tmpfs: Callable[[str], Path], start_daemon: Callable[..., DaemonProcess], observer: str
) -> None:
    store = tmpfs("64m")
    (store / "models").mkdir()
    pinned = make_version(
        store,
        "keeper",
        "pinned1",
        created=datetime.now(tz=UTC) - timedelta(days=400),
        size=2 * MIB,
    )
    config = fast_config(
        store,
        trigger={"high_percent": 70, "low_percent": 50},
        protect={"pins": ["keeper:*"]},
        schedule={"observer": observer, "poll_interval": "0.5s"},
    )
    daemon = start_daemon(config)
    daemon.wait_for(lambda events: any(e["event"] == "daemon_ready" for e in events), "ready")

    # A writer saves 3 MiB versions of two names until the filesystem crosses the high mark.
    base = datetime.now(tz=UTC) - timedelta(days=30)
    created: dict[str, datetime] = {}
    index = 0
    while used_percent(store) < 72:
        name = "resnet" if index % 2 else "bert"
        version = f"v{index:03d}a"
        created[f"{name}:{version}"] = base + timedelta(hours=index)
        make_version(store, name, version, created=created[f"{name}:{version}"], size=3 * MIB)
        point_latest(store, name, version)
        index += 1
    crossed = used_percent(store)

    daemon.wait_for(
        lambda events: any(e["event"] == "prune_finished" and e["target_reached"] for e in events),
        "a prune that reached its target",
    )
    assert used_percent(store) <= 50.0, f"crossed at {crossed:.1f}%"
    removed = daemon.named("version_removed")
    assert removed, "the daemon removed nothing"
    removed_tags = [f"{event['name']}:{event['version']}" for event in removed]
    # Oldest first, across names: the removed are exactly the oldest of the unprotected.
    order = sorted(created, key=created.__getitem__)
    latest = {read_latest(store, "bert"), read_latest(store, "resnet")}
    unprotected = [tag for tag in order if tag.split(":")[1] not in latest]
    assert removed_tags == unprotected[: len(removed_tags)]
    for event in removed:
        assert not (store / "models" / event["name"] / event["version"]).exists()
    # Protected versions survived: the pins, and each name's latest.
    assert pinned.is_dir()
    for name in ("bert", "resnet"):
        target = read_latest(store, name)
        assert target is not None
        assert (store / "models" / name / target / "model.yaml").is_file()
    assert daemon.stop() == 0
    assert daemon.named("daemon_stopped")[-1]["signal"] == "SIGTERM"


@pytest.mark.slow
def test_daemon_waits_for_a_store_created_after_it_started(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    store = tmp_path / "later" / "bentoml"
    daemon = start_daemon(fast_config(store, trigger={"max_store_size": "100KiB"}))
    daemon.wait_for(lambda events: any(e["event"] == "store_missing" for e in events), "missing")
    for index in range(4):
        make_version(
            store,
            "iris",
            f"v{index}x",
            size=64 * 1024,
            created=datetime.now(tz=UTC) - timedelta(days=10 - index),
        )
    point_latest(store, "iris", "v3x")
    daemon.wait_for(lambda events: any(e["event"] == "prune_finished" for e in events), "a prune")
    names = [event["event"] for event in daemon.events()]
    assert names.index("store_appeared") < names.index("daemon_ready")
    assert daemon.named("version_removed")[0]["version"] == "v0x"
    assert (store / "models" / "iris" / "v3x").is_dir()
    assert daemon.stop() == 0


@pytest.mark.slow
def test_sighup_applies_a_valid_config_and_keeps_the_old_one_when_broken(
    tmp_path: Path, store: Path, start_daemon: Callable[..., DaemonProcess]
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
    config_path = tmp_path / "config-0.yaml"

    config_path.write_text("trigger: {low_percent: 90, high_percent: 80}\nbogus: 1\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda events: any(e["event"] == "config_rejected" for e in events), "reject")
    rejected = daemon.named("config_rejected")[0]
    assert any("bogus" in problem for problem in rejected["problems"])
    assert daemon.process.poll() is None, "a broken config must not stop the daemon"
    assert len(list((store / "models" / "iris").iterdir())) == 5  # nothing pruned

    config_path.write_text(json.dumps(fast_config(store, trigger={"max_store_size": "100KiB"})))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(
        lambda events: any(e["event"] == "prune_finished" for e in events),
        "a prune under the reloaded config",
    )
    assert daemon.named("config_reloaded")
    assert not (store / "models" / "iris" / "v0x").exists()
    assert (store / "models" / "iris" / "v3x").is_dir()
    assert daemon.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("observer", ["auto", "polling"])
def test_a_version_deleted_by_someone_else_is_gone_not_removed(
    store: Path, start_daemon: Callable[..., DaemonProcess], observer: str
) -> None:
    for index in range(3):
        make_version(
            store, "iris", f"v{index}x", created=datetime.now(tz=UTC) - timedelta(days=5 - index)
        )
    point_latest(store, "iris", "v2x")
    daemon = start_daemon(
        fast_config(
            store,
            schedule={"observer": observer, "poll_interval": "0.5s", "reconcile_interval": "10m"},
        )
    )
    daemon.wait_for(lambda events: any(e["event"] == "daemon_ready" for e in events), "ready")
    shutil.rmtree(store / "models" / "iris" / "v0x")
    daemon.wait_for(
        lambda events: any(e["event"] == "version_gone" for e in events), "version_gone"
    )
    gone = daemon.named("version_gone")
    assert [(event["name"], event["version"]) for event in gone] == [("iris", "v0x")]
    assert not daemon.named("version_removed")
    # A new complete version is reported as added, and the pointer change as observed.
    make_version(store, "iris", "v9x", created=datetime.now(tz=UTC))
    point_latest(store, "iris", "v9x")
    daemon.wait_for(
        lambda events: (
            any(e["event"] == "version_added" for e in events)
            and any(e["event"] == "latest_changed" for e in events)
        ),
        "version_added and latest_changed",
    )
    assert daemon.named("version_added")[0]["version"] == "v9x"
    change = daemon.named("latest_changed")[0]
    assert (change["old"], change["new"], change["reason"]) == ("v2x", "v9x", "observed")
    assert daemon.stop() == 0


@pytest.mark.slow
def test_daemon_speaks_the_systemd_notify_protocol(
    tmp_path: Path, store: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(WAIT)
    try:
        daemon = start_daemon(
            fast_config(store), {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
        )
        received: list[str] = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not (
            "READY=1" in received
            and any(message.startswith("STATUS=used") for message in received)
            and received.count("WATCHDOG=1") >= 2
        ):
            received.extend(listener.recv(4096).decode().splitlines())
        assert "READY=1" in received
        assert any(message.startswith("STATUS=used") for message in received)
        assert received.count("WATCHDOG=1") >= 2, "the scheduler pings at half WATCHDOG_USEC"
        assert daemon.stop() == 0
        listener.settimeout(5)
        tail = listener.recv(4096).decode()
        while "STOPPING=1" not in tail:
            tail = listener.recv(4096).decode()
        assert "STOPPING=1" in tail
    finally:
        listener.close()


@pytest.mark.slow
@pytest.mark.parametrize("observer", ["auto", "polling"])
def test_a_kind_directory_that_appears_after_start_is_watched(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess], observer: str
) -> None:
    store = tmp_path / "fresh-agent"
    store.mkdir()  # the root exists, models/ does not yet
    config = fast_config(store, schedule={"observer": observer, "poll_interval": "0.5s"})
    config["schedule"]["reconcile_interval"] = "10m"  # only the watcher can see what follows
    daemon = start_daemon(config)
    daemon.wait_for(lambda events: any(e["event"] == "daemon_ready" for e in events), "ready")
    make_version(store, "iris", "v1x", created=datetime.now(tz=UTC) - timedelta(days=3))
    point_latest(store, "iris", "v1x")
    daemon.wait_for(lambda events: any(e["event"] == "version_added" for e in events), "v1x")
    make_version(store, "iris", "v2x", created=datetime.now(tz=UTC) - timedelta(days=2))
    daemon.wait_for(
        lambda events: any(e["event"] == "version_added" and e["version"] == "v2x" for e in events),
        "version_added for a version saved inside the late models/ directory",
    )
    assert daemon.stop() == 0

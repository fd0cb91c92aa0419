"""The real Prometheus and the real node_exporter (Debian's packages) reading storewarden.

Prometheus scrapes a running daemon's endpoint every second, loads the
shipped rules and evaluates them every second, while the daemon prunes a
store on a size-limited tmpfs whose protected versions cannot fit under the
target; the test reads Prometheus's HTTP API until the series and the alerts
are there. node_exporter reads the textfile a one-shot ``storewarden prune``
writes. Every server listens on 127.0.0.1 only, on a free port, and is
killed when its test ends; each test skips, saying why, where its binary is
missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_daemon import DaemonProcess, fast_config
from tests.e2e.test_metrics import listening_port
from tests.promtext import parse
from tests.storebuilder import make_version, point_latest
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "storewarden.rules.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
MIB = 1024 * 1024
SERVER_WAIT = 30.0  # a server that is not up in 30 s is broken, not slow
# Labels every scraped series has besides its own: Prometheus adds instance and
# job, storewarden adds store.
COMMON_LABELS = {"__name__", "instance", "job", "store"}
# No proxy: an http_proxy in the environment must not intercept a loopback request.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

pytestmark = pytest.mark.slow


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 just now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str) -> bytes | None:
    """Return the body of ``url``, or None while the server does not answer (or errs)."""
    try:
        with OPENER.open(url, timeout=5) as response:
            return bytes(response.read())
    except OSError:
        return None


def binary(name: str) -> str:
    """Return the path of the server binary ``name``; skip the test if it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package of that name), so it cannot run")
    return path


class Server:
    """A server process on 127.0.0.1:port, its output in a log file."""

    def __init__(self, command: list[str], port: int, log: Path) -> None:
        self.name = Path(command[0]).name
        self.port = port
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on the server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, path: str) -> None:
        """Wait until ``path`` answers; fail with the server's log if it exits or never does."""
        wait_until(
            lambda: http_get(self.url(path)),
            lambda body: body is not None,
            f"{self.name} answered {path} (log: {self.log.read_text()[-2000:]})",
            timeout=SERVER_WAIT,
            interval=0.1,
            gave_up=lambda _body: self.process.poll() is not None,
        )

    def stop(self) -> None:
        """Kill the server and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Collect the servers a test starts; kill each at the end, whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Collect the daemons a test starts; stop each at the end."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop()


def rules_firing_at_once(directory: Path) -> Path:
    """Write the shipped rules with every alert's ``for:`` set to 0s; return the copy's path.

    The shipped durations (15 minutes for a missed target) are right for a
    build agent and are unit-tested by promtool; here only the expressions
    matter, so the copy fires as soon as one holds. Nothing else changes.
    """
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    copy = directory / RULES.name
    copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return copy


def start_prometheus(directory: Path, target: str, servers: list[Server]) -> Server:
    """Start Prometheus scraping ``target`` as job storewarden every second, with the rules."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_firing_at_once(directory))],
        "scrape_configs": [
            {"job_name": "storewarden", "static_configs": [{"targets": [target]}]},
        ],
    }
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    server = Server(
        [
            binary("prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        port,
        directory / "prometheus.log",
    )
    servers.append(server)
    server.wait_ready("/-/ready")
    return server


def api(server: Server, path: str, **parameters: str) -> Any:
    """Return the ``data`` of a Prometheus API answer, or None while there is none."""
    query = f"?{urllib.parse.urlencode(parameters)}" if parameters else ""
    body = http_get(server.url(f"/api/v1/{path}{query}"))
    if body is None:
        return None
    answer = json.loads(body)
    return answer["data"] if answer.get("status") == "success" else None


def documented_labels() -> dict[str, set[str]]:
    """Return each series of the operations guide's table with the labels it lists."""
    rows = re.findall(
        r"^\| `(storewarden_[a-z_]+)` \|[^|]+\|([^|]*)\|",
        OPERATIONS.read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    return {name: set(re.findall(r"`([a-z_]+)`", labels)) for name, labels in rows}


def expected_labels(sample: str, documented: dict[str, set[str]]) -> set[str] | None:
    """Return the labels the guide documents for the sample name ``sample``, or None.

    A counter is documented as ``..._total`` and also exposes ``..._created``;
    a histogram as its family, exposed as ``_bucket`` (with ``le``), ``_sum``, ``_count``.
    """
    if sample in documented:
        return documented[sample]
    for suffix, extra in (
        ("_created", set()),
        ("_bucket", {"le"}),
        ("_sum", set()),
        ("_count", set()),
    ):
        base = sample.removesuffix(suffix)
        for name in (base, f"{base}_total"):
            if base != sample and name in documented:
                return documented[name] | extra
    return None


def alerts_firing(server: Server) -> dict[str, dict[str, str]]:
    """Return the firing alerts by name, with their labels."""
    data = api(server, "alerts")
    if data is None:
        return {}
    return {
        alert["labels"]["alertname"]: alert["labels"]
        for alert in data["alerts"]
        if alert["state"] == "firing"
    }


@pytest.mark.tmpfs
def test_prometheus_scrapes_the_documented_series_and_fires_the_missed_target_alert(
    tmp_path: Path,
    tmpfs: Callable[[str], Path],
    servers: list[Server],
    daemons: list[DaemonProcess],
) -> None:
    binary("prometheus")
    store = tmpfs("64m")
    created = datetime.now(tz=UTC) - timedelta(days=3)
    # 30 MiB pinned and 16 MiB of iris (the older 8 MiB removable) on 64 MiB: 72% used
    # against a 50% high mark. Pruning frees 8 MiB and stops at 59%, above the 40%
    # target: the rest is protected.
    for index in range(3):
        make_version(
            store, "keeper", f"k{index}", size=10 * MIB, created=created + timedelta(hours=index)
        )
    point_latest(store, "keeper", "k2")
    for index in range(2):
        make_version(
            store, "iris", f"v{index}", size=8 * MIB, created=created + timedelta(hours=index)
        )
    point_latest(store, "iris", "v1")
    config = fast_config(
        store,
        trigger={"high_percent": 50, "low_percent": 40},
        protect={"pins": ["keeper:*"]},
        metrics={"port": 0, "address": "127.0.0.1"},
    )
    config_path = tmp_path / "storewarden.yaml"
    config_path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    daemon = DaemonProcess(config_path, tmp_path / "daemon.log", dict(os.environ))
    daemons.append(daemon)
    port = listening_port(daemon)
    daemon.wait_for(
        lambda events: any(event["event"] == "prune_finished" for event in events), "a prune"
    )
    assert [event["version"] for event in daemon.named("version_removed")] == ["v0"]

    prometheus = start_prometheus(tmp_path, f"127.0.0.1:{port}", servers)

    # The series, as Prometheus stored them, with the labels the guide documents.
    series = wait_until(
        lambda: api(
            prometheus,
            "query",
            query='storewarden_removals_total{job="storewarden", reason="high_percent"} > 0',
        ),
        lambda data: bool(data and data["result"]),
        "Prometheus stored the prune's removal",
        timeout=SERVER_WAIT,
        interval=0.2,
    )
    (removal,) = series["result"]
    assert removal["value"][1] == "1"
    scraped = api(prometheus, "query", query='{__name__=~"storewarden_.+", job="storewarden"}')
    documented = documented_labels()
    wrong = {}
    for sample in scraped["result"]:
        labels = sample["metric"]
        assert labels["store"] == str(store)
        assert labels["instance"] == f"127.0.0.1:{port}"
        expected = expected_labels(labels["__name__"], documented)
        if expected is None or set(labels) - COMMON_LABELS != expected:
            wrong[labels["__name__"]] = sorted(set(labels) - COMMON_LABELS)
    assert wrong == {}
    names = {sample["metric"]["__name__"] for sample in scraped["result"]}
    histograms = {"storewarden_prune_duration_seconds"}  # stored as _bucket, _sum and _count
    assert {name for name in documented if name not in names} == histograms

    # The alerts: the prune missed its target, and the protected versions alone are
    # over the high mark; nothing says the daemon is down.
    firing = wait_until(
        lambda: alerts_firing(prometheus),
        lambda alerts: (
            {"StorewardenTargetMissed", "StorewardenProtectedAboveHighMark"} <= set(alerts)
        ),
        "the missed-target and protected-data alerts fired",
        timeout=SERVER_WAIT,
        interval=0.2,
    )
    assert firing["StorewardenTargetMissed"]["store"] == str(store)
    assert firing["StorewardenTargetMissed"]["severity"] == "warning"
    assert "StorewardenDown" not in firing
    assert "StorewardenPinsUnreadable" not in firing


def test_node_exporter_serves_the_textfile_of_a_one_shot_prune_without_error(
    tmp_path: Path, store: Path, servers: list[Server]
) -> None:
    exporter = binary("prometheus-node-exporter")
    collector = tmp_path / "textfile_collector"
    collector.mkdir()
    created = datetime.now(tz=UTC) - timedelta(days=3)
    for index in range(3):
        make_version(
            store, "iris", f"v{index}", size=64 * 1024, created=created + timedelta(hours=index)
        )
    point_latest(store, "iris", "v2")
    config = fast_config(
        store,
        trigger={"max_store_size": "100KiB"},
        metrics={"textfile": str(collector / "storewarden.prom")},
    )
    config_path = tmp_path / "storewarden.yaml"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    pruned = subprocess.run(
        [sys.executable, "-m", "storewarden", "prune", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert pruned.returncode == 0, pruned.stderr
    port = free_port()
    server = Server(
        [
            exporter,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={collector}",
        ],
        port,
        tmp_path / "node_exporter.log",
    )
    servers.append(server)
    server.wait_ready("/metrics")

    body = http_get(server.url("/metrics"))

    assert body is not None
    samples = parse(body.decode("utf-8"))
    assert samples.value("node_textfile_scrape_error") == 0
    assert samples.stores - {""} == frozenset({str(store)})  # "": node_exporter's own
    assert samples.value("storewarden_store_versions", kind="models") == 1
    assert samples.value("storewarden_last_prune_target_reached") == 1
    assert samples.value("storewarden_pins_unreadable") == 0
    assert samples.value("storewarden_high_mark_ratio") == pytest.approx(0.85)

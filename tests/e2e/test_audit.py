"""`storewarden audit` over a trail written by real prunes, deletes and dry runs.

One module-scoped trail: a store is pruned by the installed command (a dry
run, a prune under max_store_size, an explicit delete of a `latest`, a prune
that pins keep from its target), every run appending to the same
``log.file``. The report is then checked against the lines of that file.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storewarden.logs import check_event
from tests.storebuilder import make_version, point_latest

KIB = 1024


def storewarden(
    *arguments: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m storewarden`` with ``stdin`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "storewarden", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        env={key: value for key, value in os.environ.items() if key != "BENTOML_HOME"},
        cwd=cwd,
        timeout=120,
        check=False,
    )


@dataclass(frozen=True)
class Trail:
    """The audit log a few real runs wrote, and the config that names it."""

    config: Path
    log: Path
    store: Path

    def events(self) -> list[dict[str, Any]]:
        """Return the events in the log, each held to the schema."""
        events = [json.loads(line) for line in self.log.read_text().splitlines()]
        for event in events:
            check_event(event)
        return events

    def named(self, name: str) -> list[dict[str, Any]]:
        """Return the logged events called ``name``."""
        return [event for event in self.events() if event["event"] == name]


def write_config(path: Path, store: Path, log: Path, **overrides: Any) -> Path:
    """Write a config for ``store`` logging to ``log`` and return its path."""
    config: dict[str, Any] = {
        "store": str(store),
        "protect": {"min_age": "0s", "settle": "0s", "keep_last": 1},
        "log": {"file": str(log)},
    }
    config.update(overrides)
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    """Prune a store four ways with the installed command, all into one log file."""
    root = tmp_path_factory.mktemp("audit")
    store = root / "bentoml"
    now = datetime.now(tz=UTC)
    for index in range(5):  # the oldest: pressure takes these first
        created = now - timedelta(days=30) + timedelta(hours=index)
        make_version(store, "iris", f"v{index}x", created=created, size=64 * KIB)
    point_latest(store, "iris", "v4x")
    for index in range(3):
        created = now - timedelta(days=10) + timedelta(hours=index)
        make_version(store, "bert", f"v{index}x", created=created, size=64 * KIB)
    point_latest(store, "bert", "v2x")
    log = root / "log" / "audit.log"
    budget = {"trigger": {"max_store_size": "400KiB"}}
    config = write_config(root / "storewarden.yaml", store, log, **budget)
    pinned = write_config(
        root / "pinned.yaml",
        store,
        log,
        trigger={"max_store_size": "1KiB"},
        protect={"min_age": "0s", "settle": "0s", "pins": ["*:*"]},
    )
    steps = [
        ("prune", "--config", str(config), "--dry-run"),
        ("prune", "--config", str(config)),
        ("delete", "--config", str(config), "iris:latest"),
        ("prune", "--config", str(pinned)),
    ]
    for step in steps:
        finished = storewarden(*step)
        assert finished.returncode == 0, (step, finished.stderr)
    return Trail(config, log, store)


def report(*arguments: str, stdin: str = "") -> dict[str, Any]:
    """Run ``storewarden audit --json`` and return its report."""
    finished = storewarden("audit", "--json", *arguments, stdin=stdin)
    assert finished.returncode == 0, finished.stderr
    data: dict[str, Any] = json.loads(finished.stdout)
    return data


def test_the_report_of_a_real_trail_matches_its_lines(trail: Trail) -> None:
    data = report("--config", str(trail.config))  # FILE defaults to the config's log.file

    events = trail.events()
    assert data["lines"] == data["events"] == len(events)
    assert (data["unparseable"], data["malformed"]) == (0, 0)
    assert data["counts"] == dict(sorted(Counter(event["event"] for event in events).items()))
    # Removals per name, with the bytes the lines give.
    removed = trail.named("version_removed")
    assert {(group["name"], group["versions"], group["bytes"]) for group in data["removals"]} == {
        (
            name,
            sum(1 for event in removed if event["name"] == name),
            sum(event["bytes"] for event in removed if event["name"] == name),
        )
        for name in {event["name"] for event in removed}
    }
    iris = next(group for group in data["removals"] if group["name"] == "iris")
    assert iris["reasons"] == {"max_store_size": 3, "explicit": 1}
    assert [item["version"] for item in iris["removed"]] == ["v0x", "v1x", "v2x", "v4x"]
    # The delete of iris:latest moved the pointer first.
    assert [(c["name"], c["old"], c["new"], c["reason"]) for c in data["pointer_changes"]] == [
        ("iris", "v4x", "v3x", "removed")
    ]
    # The dry run's plan, and the pinned prune that could not reach its target.
    would = trail.named("would_remove")
    assert [(plan["versions"], plan["bytes"]) for plan in data["dry_run_plans"]] == [
        (len(would), sum(event["bytes"] for event in would))
    ]
    missed = trail.named("prune_finished")[-1]
    assert missed["target_reached"] is False
    assert [(m["run_id"], m["shortfall_bytes"]) for m in data["missed_targets"]] == [
        (missed["run_id"], missed["shortfall_bytes"])
    ]
    assert (data["prune_runs"], data["dry_runs"], data["errors"]) == (2, 1, [])


def test_the_text_report_reads_as_a_summary(trail: Trail) -> None:
    finished = storewarden("audit", str(trail.log))

    assert finished.returncode == 0, finished.stderr
    text = finished.stdout.splitlines()
    assert "prune runs: 2, dry runs: 1, missed target: 1" in text
    assert "removed: 4 versions, " in "\n".join(text)
    assert any(line.startswith("  models/iris: 4 versions, ") for line in text)
    assert any(line.endswith("models/iris latest v4x -> v3x  (removed)") for line in text)
    assert "runs that missed their target: 1" in text
    assert "dry-run plans: 1" in text
    assert "errors: 0" in text


def test_journalctl_output_on_stdin_with_its_noise_gives_the_same_report(trail: Trail) -> None:
    journal = (
        "config ok (/etc/storewarden/storewarden.yaml)\n"
        + trail.log.read_text()
        + "Traceback (most recent call last):\n"
        + "-- Boot 5f0e0c4b0b6c4a0e8f1d2c3b4a596877 --\n"
    )

    from_stdin = report("-", stdin=journal)
    from_file = report(str(trail.log))

    assert from_stdin["unparseable"] == 3
    assert {
        key: value for key, value in from_stdin.items() if key not in ("lines", "unparseable")
    } == {key: value for key, value in from_file.items() if key not in ("lines", "unparseable")}


def test_since_leaves_out_an_older_removal(trail: Trail, tmp_path: Path) -> None:
    old = trail.named("version_removed")[0] | {
        "version": "ancient",
        "timestamp": (datetime.now(tz=UTC) - timedelta(days=10)).isoformat(),
    }
    log = tmp_path / "audit.log"
    log.write_text(json.dumps(old) + "\n" + trail.log.read_text())

    everything = report(str(log))
    recent = report(str(log), "--since", "7d")

    def versions(data: dict[str, Any]) -> set[str]:
        return {item["version"] for group in data["removals"] for item in group["removed"]}

    assert "ancient" in versions(everything)
    assert "ancient" not in versions(recent)
    assert recent["before_since"] == 1
    assert recent["removed"]["versions"] == everything["removed"]["versions"] - 1


def test_rotated_and_compressed_logs_are_read_in_turn(trail: Trail, tmp_path: Path) -> None:
    lines = trail.log.read_text().splitlines(keepends=True)
    older, newer = tmp_path / "audit.log.1.gz", tmp_path / "audit.log"
    with gzip.open(older, "wt") as handle:
        handle.writelines(lines[: len(lines) // 2])
    newer.write_text("".join(lines[len(lines) // 2 :]))

    split = report(str(older), str(newer))

    whole = report(str(trail.log))
    assert split == whole


def test_without_a_file_or_a_log_file_the_command_says_what_to_give(tmp_path: Path) -> None:
    finished = storewarden("audit", cwd=tmp_path)

    assert finished.returncode == 2
    assert "no audit log to read: give FILE, or '-'" in finished.stderr
    assert "journalctl -u storewarden -o cat | storewarden audit -" in finished.stderr


def test_an_unreadable_file_is_exit_1_and_a_bad_since_exit_2(tmp_path: Path) -> None:
    missing = storewarden("audit", str(tmp_path / "nope.log"))
    broken = tmp_path / "broken.log.gz"
    broken.write_bytes(gzip.compress(b'{"event": "x"}\n' * 100)[:40])
    truncated = storewarden("audit", str(broken))
    since = storewarden("audit", "-", "--since", "last tuesday")

    assert missing.returncode == 1
    assert f"cannot read the audit log {tmp_path / 'nope.log'}: No such file" in missing.stderr
    assert truncated.returncode == 1
    assert "cannot read the audit log" in truncated.stderr
    assert since.returncode == 2
    assert "expected a duration like 24h or 7d" in since.stderr

"""The installed ``storewarden`` command, run as a user runs it: a subprocess on a real store.

Every test builds a store under ``tmp_path`` with versions created relative to
the real clock (the CLI has no injectable clock), points ``BENTOML_HOME`` at
it, and runs ``python -m storewarden`` (once, the console script). Audit
lines on stdout are parsed one by one and each is held to the schema.

Exit codes verified here: 0 done (also ``check`` on a store that does not
exist yet); 1 unknown tag, or a store that does not exist for a command that
reads it; 2 invalid configuration; 3 another warden holds the store lock;
4 a delete refused (pinned, in use) without ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import pytest

import storewarden
from storewarden import logs
from storewarden.cli import main as cli_group
from storewarden.config import Config
from tests.storebuilder import NOW, backdate_arrivals, make_version, point_latest, read_latest

UNIT = 256 * 1024  # the weights of one version; descriptors and blocks add a few KiB
CONSOLE_SCRIPT = Path(sys.executable).parent / "storewarden"

# Takes the store lock with storewarden's own StoreLock, says so, holds it until stdin closes.
LOCK_HOLDER = """
import sys
from pathlib import Path
from storewarden.prune import StoreLock
lock = StoreLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""

# Opens the file named by $HOLD_FILE (not on its command line), says so, waits for stdin to close.
FILE_HOLDER = """
import os, sys
with open(os.environ["HOLD_FILE"], "rb") as handle:
    print("open", flush=True)
    sys.stdin.read()
"""


def run_cli(
    home: Path, *arguments: str, script: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run storewarden with BENTOML_HOME=home and return the finished process."""
    command = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "storewarden"]
    environment = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run(
        [*command, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd or home.parent,
        timeout=120,
        check=False,
    )


def audit_lines(text: str) -> list[dict[str, Any]]:
    """Parse every line of ``text`` as a JSON audit event held to the schema."""
    events = []
    for line in text.splitlines():
        event = json.loads(line)
        logs.check_event(event)
        events.append(event)
    return events


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Return the events called ``name``, in order."""
    return [event for event in events if event["event"] == name]


def tags_of(events: list[dict[str, Any]]) -> list[str]:
    """Return ``name:version`` of each event, in order."""
    return [f"{event['name']}:{event['version']}" for event in events]


def disk_bytes(path: Path) -> int:
    """Return the blocks (x512) of a version directory and everything in it, as ``du`` counts."""
    total = os.lstat(path).st_blocks * 512
    for directory, subdirectories, files in os.walk(path):
        for entry in [*subdirectories, *files]:
            total += os.lstat(os.path.join(directory, entry)).st_blocks * 512
    return total


def tree(root: Path) -> dict[str, str]:
    """Return every entry under ``root``: relative path -> 'dir', 'link:<target>' or a digest."""
    entries: dict[str, str] = {}
    if not root.exists():
        return entries
    for directory, subdirectories, files in os.walk(root):
        for entry in [*subdirectories, *files]:
            path = Path(directory, entry)
            relative = str(path.relative_to(root))
            if path.is_symlink():
                entries[relative] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                entries[relative] = "dir"
            else:
                entries[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def store_tree(home: Path) -> dict[str, str]:
    """Return the tree of the store's models/ and bentos/ (what BentoML reads)."""
    return {
        f"{kind}/{path}": value
        for kind in ("models", "bentos")
        for path, value in tree(home / kind).items()
    }


@dataclass(frozen=True)
class Scenario:
    """A store of three names, a config whose plan is known, and the facts to check it by.

    iris: iris10d, iris3d, iris1d (latest). mnist: mnist8d, mnist2d (latest),
    a rule removes versions older than 7 days. scratch: scratch9d (label
    stage=prod), scratch4d (latest, a symlink), a rule lifts latest and
    keep_last protection. max_store_size asks for 2.5 versions' worth: the
    retention removal mnist8d first, then the oldest unprotected pressure
    victims iris10d and scratch4d.
    """

    home: Path
    config: Path
    bytes: dict[str, int]

    def path(self, tag: str) -> Path:
        """Return the directory of model ``name:version``."""
        name, _, version = tag.partition(":")
        return self.home / "models" / name / version


PLANNED = ["mnist:mnist8d", "iris:iris10d", "scratch:scratch4d"]
PLANNED_REASONS = ["max_age", "max_store_size", "max_store_size"]


def scenario_config(max_store_size: int, extra: str = "") -> str:
    """Return the scenario's YAML config with ``extra`` appended."""
    return f"""\
trigger:
  high_percent: 100
  low_percent: 99.99
  max_store_size: {max_store_size}
protect:
  settle: 0s
  min_age: 0s
  labels:
    stage: prod
rules:
  - match: scratch
    keep_latest: false
    keep_last: 0
  - match: mnist
    max_age: 7d
{extra}"""


def build_scenario(home: Path, tmp_path: Path, extra_config: str = "") -> Scenario:
    """Create the scenario's store under ``home`` and its config file; return both."""
    now = datetime.now(tz=UTC)
    ages = {
        "iris:iris10d": 10,
        "iris:iris3d": 3,
        "iris:iris1d": 1,
        "mnist:mnist8d": 8,
        "mnist:mnist2d": 2,
        "scratch:scratch9d": 9,
        "scratch:scratch4d": 4,
    }
    sizes: dict[str, int] = {}
    for tag, days in ages.items():
        name, _, version = tag.partition(":")
        labels = {"stage": "prod"} if tag == "scratch:scratch9d" else {"stage": "dev"}
        path = make_version(
            home, name, version, created=now - timedelta(days=days), size=UNIT, labels=labels
        )
        sizes[tag] = disk_bytes(path)
    point_latest(home, "iris", "iris1d")
    point_latest(home, "mnist", "mnist2d")
    os.symlink("scratch4d", home / "models" / "scratch" / "latest")
    # Saved in this store when they were created, not imported just now.
    backdate_arrivals(
        home,
        {
            ("models", *tag.partition(":")[::2]): now - timedelta(days=days)
            for tag, days in ages.items()
        },
    )
    total = sum(sizes.values())
    config = tmp_path / "storewarden.yaml"
    config.write_text(scenario_config(total - UNIT * 5 // 2, extra_config))
    return Scenario(home, config, sizes)


@pytest.fixture
def scenario(store: Path, tmp_path: Path) -> Scenario:
    """The scenario store (see :class:`Scenario`) with BENTOML_HOME's root at ``store``."""
    return build_scenario(store, tmp_path)


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    """Collect helper processes a test starts; close their stdin and reap them afterwards."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def start_helper(
    script: str, *arguments: str, environment: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start a Python helper and wait for its first line (it holds what it holds from then)."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(environment or {})},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() in {"held", "open"}
    return process


# -- the command itself ------------------------------------------------------------


def test_version_prints_the_installed_package_version(store: Path) -> None:
    result = run_cli(store, "--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"storewarden, version {storewarden.__version__}"
    assert storewarden.__version__ == installed_version("storewarden")


def test_console_script_next_to_the_interpreter_runs_the_same_cli(scenario: Scenario) -> None:
    assert CONSOLE_SCRIPT.is_file(), f"the console script is not installed at {CONSOLE_SCRIPT}"

    version = run_cli(scenario.home, "--version", script=True)
    status = run_cli(
        scenario.home, "status", "--json", "--config", str(scenario.config), script=True
    )

    assert version.returncode == 0
    assert version.stdout.strip() == f"storewarden, version {storewarden.__version__}"
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["store"] == os.path.realpath(scenario.home)


def test_top_level_help_lists_every_command_with_examples(store: Path) -> None:
    result = run_cli(store, "--help")

    assert result.returncode == 0
    assert "Examples:" in result.stdout
    for command in cli_group.commands:
        assert command in result.stdout


@pytest.mark.parametrize("command", sorted(cli_group.commands))
def test_help_of_each_command_shows_an_example(store: Path, command: str) -> None:
    result = run_cli(store, command, "--help")

    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout
    assert f"storewarden {command}" in result.stdout


# -- check --------------------------------------------------------------------------


def test_check_accepts_a_valid_config_and_an_existing_store(scenario: Scenario) -> None:
    result = run_cli(scenario.home, "check", "--config", str(scenario.config))

    assert result.returncode == 0, result.stderr
    assert f"config ok ({scenario.config})" in result.stdout
    assert f"store {scenario.home} exists" in result.stdout


def test_check_lists_every_problem_of_an_invalid_config_exits_2_and_touches_nothing(
    scenario: Scenario, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "colour: blue\n"
        "trigger:\n  high_percent: 80\n  low_percent: 90\n"
        "protect:\n  keep_last: -1\n  min_age: soon\n"
    )
    before = tree(scenario.home)

    result = run_cli(scenario.home, "check", "--config", str(bad))

    assert result.returncode == 2
    assert "config ok" not in result.stdout
    problems = [
        line.strip() for line in result.stderr.splitlines() if line.strip().startswith("at '")
    ]
    assert len(problems) == 4, result.stderr
    for path in ("colour", "trigger", "protect.keep_last", "protect.min_age"):
        assert any(problem.startswith(f"at '{path}':") for problem in problems), (path, problems)
    assert str(bad) in result.stderr
    assert tree(scenario.home) == before


def test_prune_with_an_invalid_config_exits_2_and_removes_nothing(
    scenario: Scenario, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(scenario.config.read_text() + "retention:\n  max_versions: many\n")
    before = tree(scenario.home)

    result = run_cli(scenario.home, "prune", "--config", str(bad))

    assert result.returncode == 2
    assert "at 'retention.max_versions'" in result.stderr
    assert result.stdout == ""
    assert tree(scenario.home) == before


def test_check_reports_a_missing_store_without_failing_or_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"

    result = run_cli(missing, "check", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "config ok (embedded defaults)" in result.stdout
    assert f"store {missing} does not exist yet" in result.stdout
    assert not missing.exists()


def test_status_of_a_missing_store_exits_1_with_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"

    result = run_cli(missing, "status", cwd=tmp_path)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("storewarden: ")
    assert str(missing) in lines[0]
    assert "does not exist" in lines[0]


# -- status and plan ------------------------------------------------------------------


def test_status_json_shows_versions_bytes_latest_and_protection_reasons(scenario: Scenario) -> None:
    result = run_cli(scenario.home, "status", "--json", "--config", str(scenario.config))

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["versions"] == 7
    assert data["store_bytes"] == sum(scenario.bytes.values())
    names = {(entry["kind"], entry["name"]): entry for entry in data["names"]}
    assert set(names) == {("models", "iris"), ("models", "mnist"), ("models", "scratch")}
    expected_latest = {"iris": "iris1d", "mnist": "mnist2d", "scratch": "scratch4d"}
    expected_protected = {
        "iris:iris1d": {"latest", "keep_last"},
        "iris:iris3d": set(),
        "iris:iris10d": set(),
        "mnist:mnist2d": {"latest", "keep_last"},
        "mnist:mnist8d": set(),
        "scratch:scratch9d": {"label"},
        "scratch:scratch4d": set(),
    }
    seen_protected: dict[str, set[str]] = {}
    would_remove: dict[str, str] = {}
    for (_kind, name), entry in names.items():
        assert entry["latest"] == expected_latest[name]
        versions = {f"{name}:{item['version']}": item for item in entry["versions"]}
        assert entry["bytes"] == sum(scenario.bytes[tag] for tag in versions)
        for tag, item in versions.items():
            assert item["bytes"] == scenario.bytes[tag]
            assert item["complete"] is True
            seen_protected[tag] = set(item["protected"])
            if item["would_remove"] is not None:
                would_remove[tag] = item["would_remove"]
    assert seen_protected == expected_protected
    assert would_remove == dict(zip(PLANNED, PLANNED_REASONS, strict=True))
    scratch = {item["version"]: item for item in names[("models", "scratch")]["versions"]}
    assert scratch["scratch9d"]["labels"] == {"stage": "prod"}


def test_status_table_has_one_row_per_name_with_protection_counts(scenario: Scenario) -> None:
    result = run_cli(scenario.home, "status", "--config", str(scenario.config))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"store {os.path.realpath(scenario.home)}: 7 versions")
    assert lines[1] == "triggers holding: max_store_size"
    # The same columns, in the same order, as the table on a terminal.
    assert lines[2].split() == ["NAME", "KIND", "VERSIONS", "SIZE", "LATEST", "PROTECTED"]
    rows = {line.split()[0]: line for line in lines[3:] if line.split()[1:2] == ["models"]}
    assert set(rows) == {"iris", "mnist", "scratch"}
    assert rows["iris"].split()[2] == "3"
    assert "iris1d" in rows["iris"]
    assert "keep_last 1, latest 1" in rows["iris"]
    assert rows["mnist"].split()[2] == "2"
    assert "label 1" in rows["scratch"]
    assert "scratch4d" in rows["scratch"]


def test_plan_json_lists_removals_in_order_with_their_reasons_and_changes_nothing(
    scenario: Scenario,
) -> None:
    before = tree(scenario.home)

    result = run_cli(scenario.home, "plan", "--json", "--config", str(scenario.config))

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["triggers"] == ["max_store_size"]
    remove = data["remove"]
    assert [f"{item['name']}:{item['version']}" for item in remove] == PLANNED
    assert [item["reason"] for item in remove] == PLANNED_REASONS
    for item in remove:
        tag = f"{item['name']}:{item['version']}"
        assert item["kind"] == "models"
        assert item["bytes"] == scenario.bytes[tag]
    assert data["bytes_to_free"] == sum(scenario.bytes[tag] for tag in PLANNED)
    assert data["shortfall_bytes"] == 0
    assert tree(scenario.home) == before


def test_plan_table_names_each_removal_and_its_reason(scenario: Scenario) -> None:
    result = run_cli(scenario.home, "plan", "--config", str(scenario.config))

    assert result.returncode == 0, result.stderr
    removals = [line.split() for line in result.stdout.splitlines() if line.startswith("  remove ")]
    assert [words[1] for words in removals] == [f"models/{tag}" for tag in PLANNED]
    assert [words[4] for words in removals] == PLANNED_REASONS
    assert "after 3 removals" in result.stdout


# -- prune --------------------------------------------------------------------------


def test_prune_dry_run_prints_would_remove_lines_and_deletes_nothing(scenario: Scenario) -> None:
    before = store_tree(scenario.home)

    result = run_cli(scenario.home, "prune", "--dry-run", "--config", str(scenario.config))

    assert result.returncode == 0, result.stderr
    events = audit_lines(result.stdout)
    assert tags_of(named(events, "would_remove")) == PLANNED
    assert [event["reason"] for event in named(events, "would_remove")] == PLANNED_REASONS
    assert named(events, "version_removed") == []
    assert [event["dry_run"] for event in named(events, "prune_finished")] == [True]
    assert store_tree(scenario.home) == before
    assert "would remove 3 versions" in result.stderr


def test_prune_removes_the_plan_moves_latest_and_logs_every_step_as_json(
    scenario: Scenario,
) -> None:
    result = run_cli(scenario.home, "prune", "--config", str(scenario.config))

    assert result.returncode == 0, result.stderr
    events = audit_lines(result.stdout)
    assert events[-1]["event"] == "prune_finished"
    assert all(event["store"] == os.path.realpath(scenario.home) for event in events)
    removed = named(events, "version_removed")
    started = named(events, "prune_started")
    assert len(started) == 1
    assert events.index(started[0]) < events.index(removed[0])
    assert tags_of(removed) == PLANNED
    assert [event["reason"] for event in removed] == PLANNED_REASONS
    assert [event["bytes"] for event in removed] == [scenario.bytes[tag] for tag in PLANNED]
    assert len({event["run_id"] for event in removed + named(events, "prune_started")}) == 1
    changed = named(events, "latest_changed")
    assert [(event["name"], event["old"], event["new"]) for event in changed] == [
        ("scratch", "scratch4d", "scratch9d")
    ]
    # The pointer moves before its version leaves: it is valid at every instant.
    assert events.index(changed[0]) < events.index(removed[2])
    finished = events[-1]
    assert finished["removed"] == 3
    assert finished["bytes_freed"] >= sum(scenario.bytes[tag] for tag in PLANNED)
    assert finished["target_reached"] is True
    for tag in PLANNED:
        assert not scenario.path(tag).exists(), tag
    for tag in set(scenario.bytes) - set(PLANNED):
        assert (scenario.path(tag) / "model.yaml").is_file(), tag
    # The symlink form of scratch's pointer is kept; the file forms stay files.
    scratch_latest = scenario.home / "models" / "scratch" / "latest"
    assert scratch_latest.is_symlink()
    assert os.readlink(scratch_latest) == "scratch9d"
    assert read_latest(scenario.home, "iris") == "iris1d"
    assert not (scenario.home / "models" / "iris" / "latest").is_symlink()
    assert "removed 3 versions" in result.stderr


def test_prune_again_after_reaching_the_target_removes_nothing(scenario: Scenario) -> None:
    first = run_cli(scenario.home, "prune", "--config", str(scenario.config))
    after_first = store_tree(scenario.home)

    second = run_cli(scenario.home, "prune", "--config", str(scenario.config))

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert named(audit_lines(second.stdout), "version_removed") == []
    assert store_tree(scenario.home) == after_first


def test_prune_exits_3_and_removes_nothing_while_another_warden_holds_the_lock(
    scenario: Scenario, holder: list[subprocess.Popen[str]]
) -> None:
    lock_path = Path(os.path.realpath(scenario.home)) / ".storewarden" / "lock"
    holder.append(start_helper(LOCK_HOLDER, str(lock_path)))
    before = store_tree(scenario.home)

    busy = run_cli(scenario.home, "prune", "--wait", "0", "--config", str(scenario.config))

    assert busy.returncode == 3
    assert "another storewarden holds" in busy.stderr
    assert named(audit_lines(busy.stdout), "version_removed") == []
    assert store_tree(scenario.home) == before

    lock_holder = holder[0]
    assert lock_holder.stdin is not None
    lock_holder.stdin.close()
    assert lock_holder.wait(timeout=10) == 0
    free = run_cli(scenario.home, "prune", "--wait", "0", "--config", str(scenario.config))
    assert free.returncode == 0, free.stderr
    assert tags_of(named(audit_lines(free.stdout), "version_removed")) == PLANNED


# -- delete -------------------------------------------------------------------------


def test_delete_of_an_unknown_tag_exits_1_names_it_and_deletes_nothing(scenario: Scenario) -> None:
    before = store_tree(scenario.home)

    result = run_cli(
        scenario.home,
        "delete",
        "iris:iris10d",
        "iris:nosuchversion",
        "--config",
        str(scenario.config),
    )

    assert result.returncode == 1
    assert "iris:nosuchversion" in result.stderr
    assert "no such version" in result.stderr
    assert "iris:iris10d" not in result.stderr.replace("iris:nosuchversion", "")
    assert named(audit_lines(result.stdout), "version_removed") == []
    assert store_tree(scenario.home) == before


def test_delete_of_the_latest_version_removes_it_and_moves_latest_to_the_newest_remaining(
    scenario: Scenario,
) -> None:
    result = run_cli(scenario.home, "delete", "iris:iris1d", "--config", str(scenario.config))

    assert result.returncode == 0, result.stderr
    events = audit_lines(result.stdout)
    assert tags_of(named(events, "version_removed")) == ["iris:iris1d"]
    assert named(events, "version_removed")[0]["reason"] == "explicit"
    assert [(e["old"], e["new"]) for e in named(events, "latest_changed")] == [("iris1d", "iris3d")]
    assert not scenario.path("iris:iris1d").exists()
    assert read_latest(scenario.home, "iris") == "iris3d"
    assert scenario.path("iris:iris10d").is_dir()


def test_delete_by_name_latest_deletes_what_latest_names(scenario: Scenario) -> None:
    result = run_cli(scenario.home, "delete", "mnist:latest", "--config", str(scenario.config))

    assert result.returncode == 0, result.stderr
    assert tags_of(named(audit_lines(result.stdout), "version_removed")) == ["mnist:mnist2d"]
    assert read_latest(scenario.home, "mnist") == "mnist8d"


def test_delete_of_every_version_of_a_name_removes_the_name(scenario: Scenario) -> None:
    result = run_cli(
        scenario.home,
        "delete",
        "mnist:mnist8d",
        "mnist:mnist2d",
        "--config",
        str(scenario.config),
    )

    assert result.returncode == 0, result.stderr
    events = audit_lines(result.stdout)
    assert sorted(tags_of(named(events, "version_removed"))) == ["mnist:mnist2d", "mnist:mnist8d"]
    assert not (scenario.home / "models" / "mnist").exists()
    assert sorted(os.listdir(scenario.home / "models")) == ["iris", "scratch"]


def test_delete_of_a_pinned_version_exits_4_unless_forced(store: Path, tmp_path: Path) -> None:
    scenario = build_scenario(store, tmp_path)
    config = tmp_path / "pinned.yaml"
    config.write_text(
        scenario.config.read_text().replace(
            "protect:\n", "protect:\n  pins:\n    - 'iris:iris3d'\n", 1
        )
    )

    refused = run_cli(scenario.home, "delete", "iris:iris3d", "--config", str(config))

    assert refused.returncode == 4
    assert "iris:iris3d" in refused.stderr
    assert "pinned" in refused.stderr
    assert "--force" in refused.stderr
    assert scenario.path("iris:iris3d").is_dir()

    forced = run_cli(scenario.home, "delete", "iris:iris3d", "--force", "--config", str(config))

    assert forced.returncode == 0, forced.stderr
    assert tags_of(named(audit_lines(forced.stdout), "version_removed")) == ["iris:iris3d"]
    assert not scenario.path("iris:iris3d").exists()


def test_delete_of_a_version_a_running_process_holds_open_exits_4(
    scenario: Scenario, holder: list[subprocess.Popen[str]]
) -> None:
    held = scenario.path("iris:iris3d") / "weights.bin"
    holder.append(start_helper(FILE_HOLDER, environment={"HOLD_FILE": str(held)}))

    refused = run_cli(scenario.home, "delete", "iris:iris3d", "--config", str(scenario.config))

    assert refused.returncode == 4
    assert "in_use" in refused.stderr
    assert f"pid {holder[0].pid}" in refused.stderr
    assert held.is_file()


def test_delete_dry_run_prints_would_remove_and_deletes_nothing(scenario: Scenario) -> None:
    before = store_tree(scenario.home)

    result = run_cli(
        scenario.home, "delete", "--dry-run", "iris:iris1d", "--config", str(scenario.config)
    )

    assert result.returncode == 0, result.stderr
    events = audit_lines(result.stdout)
    assert tags_of(named(events, "would_remove")) == ["iris:iris1d"]
    assert named(events, "version_removed") == []
    assert store_tree(scenario.home) == before


# -- log file and schema ------------------------------------------------------------------


def test_log_file_receives_the_same_lines_as_stdout_appended_run_after_run(
    store: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "logs" / "audit.jsonl"
    scenario = build_scenario(store, tmp_path, f"log:\n  file: {log_file}\n")

    deleted = run_cli(scenario.home, "delete", "iris:iris3d", "--config", str(scenario.config))
    pruned = run_cli(scenario.home, "prune", "--config", str(scenario.config))

    assert deleted.returncode == 0, deleted.stderr
    assert pruned.returncode == 0, pruned.stderr
    assert named(audit_lines(deleted.stdout), "version_removed") != []
    assert named(audit_lines(pruned.stdout), "version_removed") != []
    written = log_file.read_text()
    assert written == deleted.stdout + pruned.stdout
    audit_lines(written)


def test_schema_prints_a_json_schema_of_every_config_key(store: Path) -> None:
    result = run_cli(store, "schema")

    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert set(schema["properties"]) == set(Config.model_fields)
    definitions = schema.get("$defs", {})
    references = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                references.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(schema)
    assert references, "nested sections should be described by $defs"
    for reference in references:
        assert reference.startswith("#/$defs/")
        assert reference.removeprefix("#/$defs/") in definitions
    trigger = definitions["TriggerConfig"]["properties"]
    assert {"high_percent", "low_percent", "min_free", "max_store_size"} <= set(trigger)


def test_delete_of_a_tag_that_names_a_model_and_a_bento_exits_2_until_given_a_kind(
    store: Path, tmp_path: Path
) -> None:
    make_version(store, "iris", "m1", created=NOW - timedelta(days=3), set_latest=True)
    make_version(store, "iris", "b1", kind="bentos", created=NOW - timedelta(days=3))
    point_latest(store, "iris", "b1", kind="bentos")
    config = tmp_path / "config.yaml"
    config.write_text("protect:\n  settle: 0s\n  min_age: 0s\n")
    before = store_tree(store)

    refused = run_cli(store, "delete", "iris:latest", "--config", str(config))

    assert refused.returncode == 2, refused.stderr
    assert "models/iris:m1" in refused.stderr
    assert "bentos/iris:b1" in refused.stderr
    assert "--kind" in refused.stderr
    assert store_tree(store) == before

    chosen = run_cli(store, "delete", "iris:latest", "--kind", "bentos", "--config", str(config))

    assert chosen.returncode == 0, chosen.stderr
    assert not (store / "bentos" / "iris").exists()
    assert (store / "models" / "iris" / "m1").is_dir()


def test_delete_takes_tags_in_any_case_as_bentoml_does(store: Path, tmp_path: Path) -> None:
    make_version(store, "iris", "v1", created=NOW - timedelta(days=3))
    make_version(store, "iris", "v2", created=NOW - timedelta(days=2), set_latest=True)
    config = tmp_path / "config.yaml"
    config.write_text("protect:\n  settle: 0s\n  min_age: 0s\n")

    result = run_cli(store, "delete", "IRIS:V1", "--config", str(config))

    assert result.returncode == 0, result.stderr
    assert not (store / "models" / "iris" / "v1").exists()


def test_check_warns_of_pins_labels_and_rules_that_match_nothing_in_the_store(
    store: Path, tmp_path: Path
) -> None:
    make_version(store, "iris", "v1", labels={"stage": "dev"}, set_latest=True)
    config = tmp_path / "config.yaml"
    config.write_text(
        "protect:\n  pins: ['ghost:*', 'iris:*']\n  labels: {stage: prod}\n"
        "rules:\n  - match: 'llm-*'\n    keep_last: 3\n"
    )
    before = store_tree(store)

    result = run_cli(store, "check", "--config", str(config))

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: protect.pins: 'ghost:*' matches no version in the store now",
        "warning: protect.labels: stage: 'prod' matches no version in the store now",
        "warning: rules[0]: match 'llm-*' matches no name in the store now",
    ]
    assert store_tree(store) == before  # check writes nothing


def test_a_closed_stdout_ends_a_read_only_command_quietly_as_cat_ends(
    store: Path, tmp_path: Path
) -> None:
    for index in range(1500):  # a status table far larger than a pipe's buffer
        make_version(store, f"name{index:04d}", "v1", size=16)
    reader = subprocess.Popen(
        [sys.executable, "-m", "storewarden", "status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "BENTOML_HOME": str(store)},
        cwd=tmp_path,
    )
    assert reader.stdout is not None and reader.stderr is not None
    first = reader.stdout.readline()
    reader.stdout.close()  # as `| head -1` does
    errors = reader.stderr.read()
    reader.stderr.close()
    code = reader.wait(timeout=120)

    assert first.startswith(b"store ")
    assert errors == b""
    assert code == -signal.SIGPIPE  # the shell shows 141, as for `cat big | head -1`


def test_a_one_shot_prune_writes_the_metrics_textfile(scenario: Scenario, tmp_path: Path) -> None:
    textfile = tmp_path / "collector" / "storewarden.prom"
    textfile.parent.mkdir()
    config = tmp_path / "with-metrics.yaml"
    config.write_text(scenario.config.read_text() + f"metrics:\n  textfile: {textfile}\n")

    result = run_cli(scenario.home, "prune", "--config", str(config))

    assert result.returncode == 0, result.stderr
    text = textfile.read_text()
    removed = len(named(audit_lines(result.stdout), "version_removed"))
    assert removed > 0
    assert "storewarden_store_bytes{" in text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("storewarden_removals_total{")
    )
    assert counted == removed
    assert oct(textfile.stat().st_mode & 0o777) == "0o644"

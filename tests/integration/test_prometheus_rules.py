"""The shipped Prometheus rules, checked and unit-tested by promtool; the guide copies none.

promtool comes with Debian's ``prometheus`` package (``.ci/run`` installs it
where it is missing); without it these tests skip and say so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "storewarden.rules.yml"
RULES_TESTS = ROOT / "config" / "prometheus" / "storewarden.rules.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"


@pytest.fixture
def promtool() -> str:
    """Return the path of promtool; skip the test if it is absent."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus), so rules cannot run")
    return path


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the rules' directory and return what it printed."""
    return subprocess.run(
        command,
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def rules() -> list[dict[str, str]]:
    """Return every rule of the shipped file, recording and alerting, in order."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_shipped_rules(promtool: str) -> None:
    completed = run([promtool, "check", "rules", RULES.name])

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"SUCCESS: {len(rules())} rules found" in completed.stdout


@pytest.mark.slow  # promtool evaluates a day of samples: about 5 s
def test_the_shipped_rules_pass_their_unit_tests(promtool: str) -> None:
    completed = run([promtool, "test", "rules", RULES_TESTS.name])

    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.slow
def test_the_unit_tests_fail_when_a_rule_changes_so_their_success_means_something(
    promtool: str, tmp_path: Path
) -> None:
    shutil.copy(RULES_TESTS, tmp_path / RULES_TESTS.name)
    (tmp_path / RULES.name).write_text(
        RULES.read_text(encoding="utf-8").replace("for: 15m", "for: 30m"), encoding="utf-8"
    )

    completed = subprocess.run(
        [promtool, "test", "rules", RULES_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert completed.returncode != 0
    assert "StorewardenTargetMissed" in completed.stdout + completed.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        check["alertname"]
        for case in yaml.safe_load(RULES_TESTS.read_text(encoding="utf-8"))["tests"]
        for check in case.get("alert_rule_test", [])
        if check["exp_alerts"]
    }

    assert {rule["alert"] for rule in rules() if "alert" in rule} == tested


def test_the_operations_guide_shows_no_promql_the_rules_file_does_not_hold() -> None:
    # The guide names rules and points at the file; any query it does show must
    # be a rule's expression or a recorded series, so the two cannot drift.
    text = OPERATIONS.read_text(encoding="utf-8")
    blocks = re.findall(r"```promql\n(.*?)```", text, re.DOTALL)
    shown = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    known = {rule["expr"].strip() for rule in rules()} | {
        rule["record"] for rule in rules() if "record" in rule
    }

    assert [query for query in shown if query not in known] == []
    assert "storewarden.rules.yml" in text
    assert "expr:" not in text


def test_the_operations_guide_names_every_rule() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")

    named = {rule.get("alert") or rule["record"] for rule in rules()}

    assert {name for name in named if f"`{name}`" not in text} == set()

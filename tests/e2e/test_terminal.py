"""A person at a terminal (a real pseudo-terminal) versus a script (pipes).

On a terminal ``status`` prints a table sorted by size and ``prune`` and
``delete`` draw a progress bar on stderr; through pipes the same commands
print the plain columns and only the JSON audit lines on stdout, with no
escape sequence anywhere.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.test_cli import audit_lines, named, run_cli
from tests.storebuilder import make_version, point_latest

ESCAPE = "\x1b["
WAIT = 120.0


@dataclass(frozen=True)
class Finished:
    """A command run with a terminal: what the terminal showed, what the pipe got."""

    returncode: int
    screen: str
    piped: str


def run_on_terminal(home: Path, *arguments: str, stdout_too: bool) -> Finished:
    """Run storewarden with stderr (and stdout if ``stdout_too``) on a 120-column pty."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    environment = {**os.environ, "BENTOML_HOME": str(home), "TERM": "xterm-256color"}
    for variable in ("NO_COLOR", "COLUMNS", "LINES", "FORCE_COLOR", "TERM_PROGRAM"):
        environment.pop(variable, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "storewarden", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=terminal if stdout_too else subprocess.PIPE,
        stderr=terminal,
        env=environment,
        cwd=home.parent,
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + WAIT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError as error:  # EIO: every holder of the terminal side closed it
                if error.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            screen += chunk
        else:
            pytest.fail(f"storewarden {' '.join(arguments)} did not finish in {WAIT:.0f} s")
        piped = process.stdout.read().decode() if process.stdout is not None else ""
        returncode = process.wait(timeout=WAIT)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    return Finished(returncode, screen.decode(errors="replace"), piped)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """iris: 5 small versions; resnet: 2 large ones (so it sorts first by size); a pin."""
    root = tmp_path / "bentoml"
    now = datetime.now(tz=UTC)
    for index in range(5):
        make_version(root, "iris", f"v{index}", created=now - timedelta(days=9 - index))
    point_latest(root, "iris", "v4")
    for index in range(2):
        make_version(
            root, "resnet", f"r{index}", created=now - timedelta(days=5 - index), size=400_000
        )
    point_latest(root, "resnet", "r1")
    assert run_cli(root, "pin", "iris:v0", "--reason", "audit hold").returncode == 0
    return root


def retention_config(tmp_path: Path) -> Path:
    """A config whose prune removes every version but the newest of each name."""
    path = tmp_path / "retention.yaml"
    path.write_text(
        "protect: {settle: 0s, min_age: 0s, in_use: false}\nretention: {max_versions: 1}\n"
    )
    return path


@pytest.mark.slow
def test_status_on_a_terminal_is_a_table_sorted_by_size_with_the_pins(home: Path) -> None:
    shown = run_on_terminal(home, "status", stdout_too=True)

    assert shown.returncode == 0
    assert "┃" in shown.screen or "│" in shown.screen, shown.screen
    lines = shown.screen.splitlines()
    resnet = next(index for index, line in enumerate(lines) if line.startswith("resnet"))
    iris = next(index for index, line in enumerate(lines) if line.startswith("iris "))
    assert resnet < iris, "the largest name comes first"
    assert "pins" in shown.screen
    assert "audit hold" in shown.screen


def test_status_through_a_pipe_is_plain_columns_without_escapes(home: Path) -> None:
    result = run_cli(home, "status")

    assert result.returncode == 0
    assert ESCAPE not in result.stdout
    assert "┃" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["NAME", "KIND", "VERSIONS", "SIZE", "LATEST", "PROTECTED"]
    assert lines[2].split()[:2] == ["resnet", "models"]
    assert any(line.strip().startswith("iris:v0") and "audit hold" in line for line in lines)


@pytest.mark.slow
def test_prune_on_a_terminal_draws_a_bar_on_stderr_and_keeps_stdout_json(
    home: Path, tmp_path: Path
) -> None:
    shown = run_on_terminal(
        home, "prune", "--config", str(retention_config(tmp_path)), stdout_too=False
    )

    assert shown.returncode == 0, shown.screen
    events = audit_lines(shown.piped)  # every stdout line is one JSON event
    assert [event["version"] for event in named(events, "version_removed")] == [
        "v1",
        "v2",
        "v3",
        "r0",
    ]
    assert "━" in shown.screen
    assert "4/4 versions" in shown.screen
    assert "removed 4 versions" in shown.screen
    assert "{" not in shown.screen, "audit lines belong on stdout, not the terminal"


@pytest.mark.slow
def test_prune_with_both_streams_on_the_terminal_prints_audit_lines_above_the_bar(
    home: Path, tmp_path: Path
) -> None:
    shown = run_on_terminal(
        home, "prune", "--config", str(retention_config(tmp_path)), stdout_too=True
    )

    assert shown.returncode == 0, shown.screen
    # The live display moves the cursor before each line it prints above the bar.
    removed = [
        json.loads(line[line.index("{") :])
        for line in shown.screen.splitlines()
        if '"version_removed"' in line
    ]
    assert len(removed) == 4, "each audit line is printed whole, on one line"
    assert not [line for line in shown.screen.splitlines() if "━" in line and "{" in line]
    assert "4/4 versions" in shown.screen


@pytest.mark.slow
def test_delete_on_a_terminal_draws_a_bar(home: Path) -> None:
    shown = run_on_terminal(home, "delete", "resnet:r0", "--force", stdout_too=False)

    assert shown.returncode == 0, shown.screen
    assert "1/1 versions" in shown.screen
    assert [event["version"] for event in named(audit_lines(shown.piped), "version_removed")] == [
        "r0"
    ]


def test_prune_and_delete_through_pipes_print_no_bar(home: Path, tmp_path: Path) -> None:
    pruned = run_cli(home, "prune", "--config", str(retention_config(tmp_path)))
    deleted = run_cli(home, "delete", "resnet:r1", "--force")

    for result in (pruned, deleted):
        assert result.returncode == 0, result.stderr
        assert ESCAPE not in result.stderr + result.stdout
        assert "━" not in result.stderr
        assert len(result.stderr.splitlines()) == 1  # the summary line, nothing else
        audit_lines(result.stdout)

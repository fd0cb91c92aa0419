"""The pictures on a real terminal (tmux): the usage bar of ``status``, the chart of ``--history``.

tmux gives the command a real pseudo-terminal 120 columns wide;
``capture-pane -p`` reads the screen back as text. Piped, the same
commands print plain text with no escape sequence.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storewarden import history
from storewarden.history import Sample
from storewarden.prune import STATE_MARKER
from tests.e2e.test_cli import run_cli
from tests.storebuilder import make_series

ESCAPE = "\x1b["
GIB = 1 << 30
WAIT = 60.0


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A store of 3 versions and a marked state dir: 80 samples over 40 hours, one prune."""
    root = tmp_path / "bentoml"
    make_series(root, "iris", 3)
    state = root / ".storewarden"
    state.mkdir()
    (state / STATE_MARKER).touch()
    now = time.time()
    samples = []
    used = 50 * GIB
    for step in range(80):
        freed = 20 * GIB if step == 60 else 0
        used += GIB // 2 - freed
        samples.append(
            Sample(
                now - (80 - step) * 1800,
                1800.0,
                used,
                100 * GIB - used,
                100 * GIB,
                used - 30 * GIB,
                GIB // 2,
                freed,
                5 * GIB,
            )
        )
    (state / history.HISTORY_FILE).write_bytes(history.encode(samples))
    return root


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[str]]:
    """Return the tmux command for a server of this test's own; killed when the test ends."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: the real-terminal pictures cannot be checked")
    command = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    yield command
    subprocess.run([*command, "kill-server"], capture_output=True, check=False)


def on_screen(tmux: list[str], home: Path, *arguments: str) -> str:
    """Run storewarden ARGUMENTS in a 120x40 tmux pane; return the screen once it has finished."""
    done = home.parent / "done"
    done.unlink(missing_ok=True)
    shell = " ".join(
        [
            f"BENTOML_HOME={home}",
            "TERM=xterm-256color",
            sys.executable,
            "-m",
            "storewarden",
            *arguments,
            f"; touch {done}; sleep 600",
        ]
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    for variable in ("NO_COLOR", "COLUMNS", "LINES"):
        environment.pop(variable, None)
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "120", "-y", "40", shell],
        check=True,
        env=environment,
        cwd=home.parent,
        timeout=WAIT,
    )
    deadline = time.monotonic() + WAIT
    while not done.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"storewarden {' '.join(arguments)} did not finish in {WAIT:.0f} s")
        time.sleep(0.1)
    captured = subprocess.run(
        [*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True, timeout=WAIT
    )
    subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
    return captured.stdout


@pytest.mark.slow
def test_status_on_a_terminal_opens_with_the_usage_bar(tmux: list[str], home: Path) -> None:
    screen = on_screen(tmux, home, "status")

    lines = screen.splitlines()
    bar = next(index for index, line in enumerate(lines) if line.startswith("▕"))
    assert len(lines[bar]) == 100, screen  # the bar's 98 cells and its ends
    assert "▒" in lines[bar] and "·" in lines[bar], "the rest of the filesystem, and free"
    assert lines[bar + 1].count("▲") == 2, "the low and high marks under the bar"
    assert "low 75% · high 85%" in lines[bar + 2]
    assert "used " in lines[bar + 2] and "% · store " in lines[bar + 2]
    assert " · protected " in lines[bar + 2]
    assert any(line.startswith("iris") for line in lines[bar + 3 :]), "then the table"


@pytest.mark.slow
def test_status_history_on_a_terminal_draws_the_chart(tmux: list[str], home: Path) -> None:
    screen = on_screen(tmux, home, "status", "--history")

    assert "filesystem use and store size" in screen, screen
    assert "hours before now" in screen
    assert "high 85%" in screen and "low 75%" in screen
    assert "prune (1)" in screen
    assert " 85┼" in screen and " 75┼" in screen, "the marks are ticks of the y axis"
    assert "└┬" in screen, "an x axis"


def test_status_history_piped_is_a_plain_table(home: Path) -> None:
    result = run_cli(home, "status", "--history")

    assert result.returncode == 0, result.stderr
    assert ESCAPE not in result.stdout
    lines = result.stdout.splitlines()
    assert "80 samples" in lines[0] and "high 85%, low 75%" in lines[0]
    assert lines[1].split()[:3] == ["TIME", "(UTC)", "USED"]
    assert len(lines) == 2 + 40, "80 samples thinned to 40 rows"
    assert sum(line.endswith("pruned") for line in lines) == 1


def test_status_piped_has_no_bar_and_no_escapes(home: Path) -> None:
    result = run_cli(home, "status")

    assert result.returncode == 0, result.stderr
    assert ESCAPE not in result.stdout
    assert "▕" not in result.stdout and "▲" not in result.stdout


def test_status_history_json_gives_the_samples_since(home: Path) -> None:
    every = json.loads(run_cli(home, "status", "--history", "--json").stdout)
    recent = json.loads(run_cli(home, "status", "--history", "--since", "10h", "--json").stdout)

    assert len(every["samples"]) == 80
    assert every["marks"] == {"high_percent": 85.0, "low_percent": 75.0}
    assert 19 <= len(recent["samples"]) <= 21
    assert recent["samples"][-1] == every["samples"][-1]


def test_since_without_history_is_a_usage_error(home: Path) -> None:
    result = run_cli(home, "status", "--since", "1d")

    assert result.returncode == 2
    assert "--since goes with --history" in result.stderr

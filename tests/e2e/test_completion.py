"""Shell completion through click's own mechanism: ``_STOREWARDEN_COMPLETE``.

The README shows each shell's line; here the real command answers a
completion request as the shell's script asks it (the console script's own
scripts are checked in tests/e2e/test_wheel.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# The console script's entry point, under the name the shells know it by.
COMMAND = [sys.executable, "-c", "from storewarden.cli import main; main(prog_name='storewarden')"]


def complete(words: str) -> list[str]:
    """Return what bash completion offers after ``words`` (the last word being typed)."""
    done = subprocess.run(
        COMMAND,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "_STOREWARDEN_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        },
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines()]


def test_commands_complete_by_their_first_letters() -> None:
    assert complete("storewarden ins") == ["install-files"]
    assert sorted(complete("storewarden pr")) == ["print", "prune"]


def test_a_shipped_files_name_completes() -> None:
    assert complete("storewarden print te") == ["template-unit"]


def test_options_complete() -> None:
    assert "--metrics-port" in complete("storewarden install-files --me")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_a_script(shell: str) -> None:
    done = subprocess.run(
        COMMAND,
        capture_output=True,
        text=True,
        env={**os.environ, "_STOREWARDEN_COMPLETE": f"{shell}_source"},
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "_STOREWARDEN_COMPLETE" in done.stdout

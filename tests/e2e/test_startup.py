"""Start-up: the commands a person types load only what they use.

Every command pays its imports before it does anything, so the light ones
(``--version``, ``--help``, ``status`` and ``prune`` piped) must not load the
daemon's or the terminal's modules, nor psutil. A real run of each command lists what it had
loaded when it exited; a heavy import slipping back in fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.storebuilder import make_series

# psutil: the in-use scan, the mount table and usage read /proc and statvfs themselves.
HEAVY = ("prometheus_client", "rich", "apscheduler", "watchdog", "plotext", "psutil")


# The real command (python -m storewarden), with a hook that prints at exit
# every module then loaded. Not ``-X importtime``: it also lists imports that
# failed, as structlog's optional ``import rich`` does on purpose.
PROBE = """
import atexit, json, runpy, sys
atexit.register(lambda: print(
    "MODULES", json.dumps(sorted(k for k, v in sys.modules.items() if v is not None)),
    file=sys.stderr,
))
sys.argv = ["storewarden", *sys.argv[1:]]
runpy.run_module("storewarden", run_name="__main__", alter_sys=True)
"""


def imported(home: Path, *arguments: str) -> set[str]:
    """Run ``storewarden ARGUMENTS``; return every module loaded when it exited."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, "BENTOML_HOME": str(home)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listed = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    assert len(listed) == 1, done.stderr[-2000:]
    modules = set(json.loads(listed[0].removeprefix("MODULES ")))
    assert "storewarden.cli" in modules
    return modules


@pytest.mark.parametrize(
    "arguments",
    [
        ("--version",),
        ("--help",),
        ("status",),
        ("status", "--json"),
        ("status", "--history"),
        ("status", "--history", "--json"),
        ("plan",),
        ("status", "-h"),
        ("print", "rules"),
        ("why", "iris:latest"),
        ("why", "iris:latest", "--json"),
        # A cron job's or CI step's prune pays its start-up each time (issue 13).
        ("prune",),
        ("prune", "--dry-run"),
    ],
    ids=" ".join,
)
def test_a_light_command_loads_no_heavy_module(tmp_path: Path, arguments: tuple[str, ...]) -> None:
    home = tmp_path / "bentoml"
    make_series(home, "iris", 3)

    modules = imported(home, *arguments)

    heavy = sorted(module for module in modules if module.split(".")[0] in HEAVY)
    assert heavy == [], f"storewarden {' '.join(arguments)} imported {heavy}"


def test_the_reading_sees_a_heavy_module_a_command_does_load(tmp_path: Path) -> None:
    # A one-shot prune writing the metrics textfile needs prometheus_client:
    # the same reading must list it, or the test above could pass on nothing.
    home = tmp_path / "bentoml"
    make_series(home, "iris", 2)
    config = tmp_path / "storewarden.yaml"
    config.write_text(f"metrics:\n  textfile: {tmp_path / 'storewarden.prom'}\n")

    modules = imported(home, "prune", "--config", str(config))

    assert "prometheus_client" in modules
    assert (tmp_path / "storewarden.prom").is_file()

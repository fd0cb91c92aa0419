"""Installed from a wheel alone: the package carries the units, the config and the rules.

The wheel is built from a copy of this checkout (pip builds in the source
tree, and must not leave build/ in the developer's), installed without
dependencies into a fresh venv whose dependencies come from the running
environment by a ``.pth`` line (offline and fast), and its console script
is run from a directory outside any checkout, with no PYTHONPATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest

from storewarden.shipped import FILES
from tests.integration.test_systemd_units import (
    METRICS_DROP_IN,
    overall_exposure,
    run_verify,
    unexplained_lines,
)

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "storewarden", "config", "systemd")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Installed:
    """A venv holding the wheel, and a directory outside any checkout to run it in."""

    venv: Path
    outside: Path

    @property
    def command(self) -> Path:
        """Return the venv's storewarden console script."""
        return self.venv / "bin" / "storewarden"

    def run(
        self, *arguments: str, environment: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed storewarden outside the checkout; return the finished process."""
        clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        return subprocess.run(
            [str(self.command), *arguments],
            capture_output=True,
            text=True,
            cwd=self.outside,
            env={**clean, **(environment or {})},
            timeout=120,
            check=False,
        )


def builds_offline() -> bool:
    """Return whether this environment's setuptools can build a wheel without an index
    (bdist_wheel is built into setuptools from 70.1; before, it needs the wheel package)."""
    try:
        setuptools = tuple(int(part) for part in installed_version("setuptools").split(".")[:2])
    except PackageNotFoundError:
        return False
    if setuptools >= (70, 1):
        return True
    try:
        installed_version("wheel")
    except PackageNotFoundError:
        return False
    return setuptools >= (68, 0)


def build_wheel(directory: Path) -> Path:
    """Build the wheel of a copy of this checkout into ``directory``; return its path.

    Skip (saying why) when it cannot be built: no offline build backend and
    no package index to fetch one from.
    """
    source = directory / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    isolation = ["--no-build-isolation"] if builds_offline() else []
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *isolation,
            "-w",
            str(directory),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    unreachable = re.search(
        r"(No matching distribution|Could not find a version).*setuptools", built.stderr
    )
    if built.returncode != 0 and not isolation and unreachable:
        pytest.skip(
            "no offline build backend (setuptools>=70.1, from the test extra) and no index "
            f"to fetch one: {built.stderr.strip()[-300:]}"
        )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = directory.glob("storewarden-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel, install it alone into a fresh venv; return the venv."""
    directory = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(directory)
    venv = directory / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    # The dependencies (pydantic, click, ...) from this environment, read after the venv's
    # own site-packages, so that its storewarden is the wheel's.
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    here = sysconfig.get_paths()
    (Path(purelib) / "zz_test_dependencies.pth").write_text(
        f"{here['purelib']}\n{here['platlib']}\n", encoding="utf-8"
    )
    outside = directory / "elsewhere"
    outside.mkdir()
    return Installed(venv, outside)


def test_the_installed_package_reads_its_files_from_itself_not_a_checkout(
    installed: Installed,
) -> None:
    found = subprocess.run(
        [
            str(installed.venv / "bin" / "python"),
            "-c",
            "from storewarden import shipped; print(shipped.data_directory())",
        ],
        capture_output=True,
        text=True,
        cwd=installed.outside,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        check=True,
        timeout=60,
    ).stdout.strip()

    assert Path(found).is_relative_to(installed.venv)
    assert Path(found).name == "data"


@pytest.mark.parametrize("name", sorted(FILES))
def test_print_gives_each_file_as_checked_in_for_the_defaults(
    installed: Installed, name: str
) -> None:
    printed = installed.run("print", name, "--executable", "/usr/local/bin/storewarden")

    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == (ROOT / FILES[name]).read_text(encoding="utf-8")


def test_install_files_writes_a_root_whose_units_verify_and_whose_config_checks(
    installed: Installed, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    store = tmp_path / "srv" / "bentoml"

    done = installed.run(
        "install-files",
        "--dest",
        str(root),
        "--user",
        "ci",
        "--store",
        str(store),
        "--metrics-port",
    )

    assert done.returncode == 0, done.stderr
    units = root / "etc" / "systemd" / "system"
    assert done.stdout.splitlines() == [
        f"wrote {units / 'storewarden.service'}",
        f"wrote {units / 'storewarden@.service'}",
        f"wrote {root / 'etc' / 'storewarden' / 'storewarden.yaml'}",
        f"wrote {units / METRICS_DROP_IN}",
        f"wrote {units / 'storewarden@.service.d' / METRICS_DROP_IN.name}",
    ]
    unit = (units / "storewarden.service").read_text(encoding="utf-8")
    assert f"ExecStart={installed.command} run --config" in unit
    assert f"BindPaths={store}\n" in unit
    assert "User=ci\n" in unit
    config = root / "etc" / "storewarden" / "storewarden.yaml"
    checked = installed.run(
        "check", "--config", str(config), environment={"BENTOML_HOME": str(store)}
    )
    assert checked.returncode == 0, checked.stderr


def test_the_installed_units_verify_with_systemd_analyze(
    installed: Installed, tmp_path: Path
) -> None:
    systemd_analyze = shutil.which("systemd-analyze")
    if systemd_analyze is None:
        pytest.skip("systemd-analyze is not installed, so the units cannot be checked")
    root = tmp_path / "root"
    done = installed.run("install-files", "--dest", str(root), "--metrics-port")
    assert done.returncode == 0, done.stderr
    units = root / "etc" / "systemd" / "system"

    for unit_path in (units / "storewarden.service", units / "storewarden@example.service"):
        status, lines = run_verify(systemd_analyze, unit_path)
        assert status == 0, lines
        assert unexplained_lines(lines) == []
        _, exposure = overall_exposure(systemd_analyze, unit_path)
        assert exposure <= 1.1  # with the metrics drop-in beside it


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _storewarden_completion storewarden"),
        ("zsh", "#compdef storewarden"),
        ("fish", "complete --no-files --command storewarden"),
    ],
)
def test_the_console_script_prints_shell_completion(
    installed: Installed, shell: str, marker: str
) -> None:
    script = installed.run(environment={"_STOREWARDEN_COMPLETE": f"{shell}_source"})

    assert script.returncode == 0, script.stderr
    assert marker in script.stdout

"""The shipped systemd units, checked by systemd's own tools.

`systemd-analyze verify` loads each unit the way the service manager would
and reports what it rejects; `systemd-analyze security --offline=true` rates
its sandbox. Both run on copies in tmp_path whose ExecStart= and
ExecStartPre= point at this environment's storewarden, because verify fails
a unit whose command does not exist and /usr/local/bin/storewarden is where
an installation puts it, not where the tests run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT_DIRECTORY = Path(__file__).resolve().parents[2] / "systemd"
SINGLE_UNIT = "storewarden.service"
TEMPLATE_UNIT = "storewarden@.service"
INSTANCE_UNIT = "storewarden@example.service"
METRICS_DROP_IN = Path("storewarden.service.d") / "metrics-port.conf"
INSTALLED_COMMAND = "/usr/local/bin/storewarden"
# The units alone: no network at all (the metrics port is off by default).
MAXIMUM_EXPOSURE = 0.5
# With the metrics drop-in: loopback IP back, everything else as before.
MAXIMUM_EXPOSURE_WITH_METRICS_PORT = 1.1
EXPOSURE_LINE = re.compile(r"Overall exposure level for (?P<unit>\S+): (?P<exposure>\d+(?:\.\d+)?)")
# verify prints "<file>:<line>: <message>" or "<unit>: <message>".
# Lines about unit files outside the copy under test come from units of the
# machine running the tests that verify loads as dependencies (After=
# remote-fs.target, and so on). They say nothing about storewarden's units and
# differ from machine to machine, so they are allowed. verify in systemd 252
# does not look up User= or Group= at all (users are resolved when the service
# starts), so the missing 'bentoml' user produces no line to allow; if a later
# systemd reports it, this test fails and the exact line belongs here, with
# that reason.
FOREIGN_UNIT_FILE_LINE = re.compile(r"^/(?:usr/)?(?:lib|etc|run)/systemd/\S+:\d+: ")


def storewarden_command() -> str:
    """Return the command line prefix that runs this environment's storewarden,
    in unit-file syntax: the console script next to the interpreter if it is
    installed, else the interpreter with ``-m storewarden``."""
    console_script = Path(sys.executable).parent / "storewarden"
    if console_script.is_file():
        return unit_file_word(str(console_script))
    return f"{unit_file_word(sys.executable)} -m storewarden"


def unit_file_word(text: str) -> str:
    """Given a path, return it as one word of a unit file command line: '%'
    doubled so systemd does not read a specifier, quoted if it has spaces."""
    escaped = text.replace("%", "%%")
    return f'"{escaped}"' if any(character.isspace() for character in escaped) else escaped


def install_for_testing(unit_name: str, directory: Path) -> Path:
    """Given a shipped unit's file name and a directory, copy the unit there
    with its commands pointing at this environment's storewarden and return
    the copy's path; raise AssertionError if the unit does not use the
    installed command, since the rewrite would then silently do nothing."""
    text = (UNIT_DIRECTORY / unit_name).read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED_COMMAND} " in text
    assert f"ExecStartPre={INSTALLED_COMMAND} " in text
    copy = directory / unit_name
    copy.write_text(text.replace(INSTALLED_COMMAND, storewarden_command()), encoding="utf-8")
    return copy


def install_metrics_drop_in(unit_name: str, directory: Path) -> Path:
    """Given a unit's file name and the directory its copy is in, put the shipped
    metrics drop-in in that unit's ``.d`` directory there and return its path."""
    drop_in = directory / f"{unit_name}.d" / METRICS_DROP_IN.name
    drop_in.parent.mkdir()
    shutil.copyfile(UNIT_DIRECTORY / METRICS_DROP_IN, drop_in)
    return drop_in


@pytest.fixture
def systemd_analyze() -> str:
    """Return the path of systemd-analyze; skip the test if it is absent."""
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed, so the units cannot be checked")
    return path


def run_verify(systemd_analyze: str, unit_path: Path) -> tuple[int, list[str]]:
    """Given systemd-analyze and a unit file (or an instance name next to its
    template), run verify on it alone and return its exit status and every
    non-empty line it printed on either stream."""
    completed = subprocess.run(
        # Only the named unit's errors set the exit status; dependencies'
        # problems still print and are judged line by line.
        [systemd_analyze, "verify", "--recursive-errors=no", str(unit_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    lines = (completed.stdout + completed.stderr).splitlines()
    return completed.returncode, [line for line in lines if line.strip()]


def unexplained_lines(lines: list[str]) -> list[str]:
    """Given verify's output lines, return those not allowed by a reason
    written above."""
    return [line for line in lines if not FOREIGN_UNIT_FILE_LINE.match(line)]


def overall_exposure(systemd_analyze: str, unit_path: Path) -> tuple[str, float]:
    """Given systemd-analyze and a unit file, return the unit name and the
    overall exposure that ``security --offline=true`` rates it at; raise
    AssertionError if the rating line is missing."""
    completed = subprocess.run(
        [systemd_analyze, "security", "--offline=true", "--no-pager", str(unit_path)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
        timeout=60,
    )
    match = EXPOSURE_LINE.search(completed.stdout)
    assert match is not None, completed.stdout + completed.stderr
    return match["unit"], float(match["exposure"])


def directives(text: str) -> list[str]:
    """Given a unit file's text, return its section headers and directives in
    order, without comments or blank lines."""
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", ";"))
    ]


def test_verify_accepts_the_single_unit_without_any_message(
    systemd_analyze: str, tmp_path: Path
) -> None:
    unit_path = install_for_testing(SINGLE_UNIT, tmp_path)

    status, lines = run_verify(systemd_analyze, unit_path)

    assert status == 0, lines
    assert unexplained_lines(lines) == []


def test_verify_accepts_an_instance_of_the_template_unit_without_any_message(
    systemd_analyze: str, tmp_path: Path
) -> None:
    install_for_testing(TEMPLATE_UNIT, tmp_path)

    status, lines = run_verify(systemd_analyze, tmp_path / INSTANCE_UNIT)

    assert status == 0, lines
    assert unexplained_lines(lines) == []


def test_verify_reports_an_unknown_directive_so_the_silent_checks_mean_something(
    systemd_analyze: str, tmp_path: Path
) -> None:
    unit_path = install_for_testing(SINGLE_UNIT, tmp_path)
    unit_path.write_text(
        unit_path.read_text(encoding="utf-8").replace(
            "[Service]\n", "[Service]\nProtectEverything=yes\n", 1
        ),
        encoding="utf-8",
    )

    _, lines = run_verify(systemd_analyze, unit_path)

    assert any("ProtectEverything" in line for line in unexplained_lines(lines)), lines


def test_verify_rejects_the_shipped_unit_where_its_command_is_not_installed(
    systemd_analyze: str, tmp_path: Path
) -> None:
    if Path(INSTALLED_COMMAND).exists():
        pytest.skip(f"{INSTALLED_COMMAND} is installed here, so the unit is valid as shipped")
    unit_path = tmp_path / SINGLE_UNIT
    shutil.copyfile(UNIT_DIRECTORY / SINGLE_UNIT, unit_path)

    status, lines = run_verify(systemd_analyze, unit_path)

    assert status != 0
    assert any(INSTALLED_COMMAND in line for line in lines), lines


@pytest.mark.parametrize(
    ("unit_name", "analyzed_name"),
    [(SINGLE_UNIT, SINGLE_UNIT), (TEMPLATE_UNIT, INSTANCE_UNIT)],
    ids=["single", "instance"],
)
def test_security_rates_the_overall_exposure_at_most_one_half(
    systemd_analyze: str, tmp_path: Path, unit_name: str, analyzed_name: str
) -> None:
    install_for_testing(unit_name, tmp_path)

    unit, exposure = overall_exposure(systemd_analyze, tmp_path / analyzed_name)

    assert unit == analyzed_name
    assert exposure <= MAXIMUM_EXPOSURE


@pytest.mark.parametrize(
    ("unit_name", "analyzed_name"),
    [(SINGLE_UNIT, SINGLE_UNIT), (TEMPLATE_UNIT, INSTANCE_UNIT)],
    ids=["single", "instance"],
)
def test_the_metrics_drop_in_opens_ip_and_nothing_else(
    systemd_analyze: str, tmp_path: Path, unit_name: str, analyzed_name: str
) -> None:
    install_for_testing(unit_name, tmp_path)
    _, alone = overall_exposure(systemd_analyze, tmp_path / analyzed_name)
    install_metrics_drop_in(unit_name, tmp_path)

    status, lines = run_verify(systemd_analyze, tmp_path / analyzed_name)
    unit, exposure = overall_exposure(systemd_analyze, tmp_path / analyzed_name)

    assert status == 0, lines
    assert unexplained_lines(lines) == []
    assert unit == analyzed_name
    # security reads the drop-in next to the copy: the rating goes up, and only as far
    # as the network costs.
    assert alone < exposure <= MAXIMUM_EXPOSURE_WITH_METRICS_PORT


def test_the_metrics_drop_in_sets_only_the_network_directives() -> None:
    lines = directives((UNIT_DIRECTORY / METRICS_DROP_IN).read_text(encoding="utf-8"))

    assert lines == [
        "[Service]",
        "PrivateNetwork=no",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
    ]


def test_the_units_alone_have_no_network() -> None:
    for unit_name in (SINGLE_UNIT, TEMPLATE_UNIT):
        lines = directives((UNIT_DIRECTORY / unit_name).read_text(encoding="utf-8"))
        assert "PrivateNetwork=yes" in lines
        assert "RestrictAddressFamilies=AF_UNIX" in lines
        assert not any(line.startswith("IPAddressAllow=") for line in lines)


def test_the_bentoml_instance_has_exactly_the_directives_of_the_single_unit() -> None:
    # storewarden@bentoml is documented as the default store; beyond its
    # description the template must differ only by the instance name, so the
    # hardening of the two units cannot drift apart.
    single = directives((UNIT_DIRECTORY / SINGLE_UNIT).read_text(encoding="utf-8"))
    template = directives((UNIT_DIRECTORY / TEMPLATE_UNIT).read_text(encoding="utf-8"))
    instance = [
        line.replace("/etc/storewarden/%i.yaml", "/etc/storewarden/storewarden.yaml").replace(
            "%i", "bentoml"
        )
        for line in template
        if not line.startswith("Description=")
    ]

    assert instance == [line for line in single if not line.startswith("Description=")]


@pytest.mark.parametrize("unit_name", [SINGLE_UNIT, TEMPLATE_UNIT, str(METRICS_DROP_IN)])
def test_every_directive_has_a_comment_on_the_line_above_saying_why(unit_name: str) -> None:
    lines = (UNIT_DIRECTORY / unit_name).read_text(encoding="utf-8").splitlines()

    unexplained = [
        line
        for previous, line in zip(["", *lines], lines, strict=False)
        if line.strip() and not line.startswith(("#", "[")) and not previous.startswith("#")
    ]

    assert unexplained == []

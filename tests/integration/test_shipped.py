"""The shipped files: found, filled in for a machine, installed under a root.

The repository's systemd/ and config/ are the only copies; the wheel test
(tests/e2e/test_wheel.py) proves a built package carries them byte for
byte. Here: rendering with the defaults gives the files unchanged, another
placement changes exactly the lines it should, and install-files writes,
keeps and refuses as documented.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from storewarden import cli, shipped
from storewarden.shipped import (
    FILES,
    INSTALLED,
    Placement,
    ShippedFilesError,
    install,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
CI = Placement(
    user="ci",
    group="builders",
    store=PurePosixPath("/srv/bentoml/main"),
    executable=PurePosixPath("/opt/storewarden/bin/storewarden"),
)


def changed_lines(name: str, placement: Placement) -> list[tuple[str, str]]:
    """Return the (shipped, rendered) pairs of lines that differ for ``placement``."""
    original = (ROOT / FILES[name]).read_text(encoding="utf-8").splitlines()
    rendered = render(name, placement).splitlines()
    assert len(original) == len(rendered)
    return [(old, new) for old, new in zip(original, rendered, strict=True) if old != new]


@pytest.mark.parametrize("name", sorted(FILES))
def test_with_the_defaults_each_file_renders_byte_for_byte_as_checked_in(name: str) -> None:
    assert render(name, Placement()) == (ROOT / FILES[name]).read_text(encoding="utf-8")


def test_a_checkout_reads_the_files_from_its_own_directories() -> None:
    assert shipped.data_directory() == ROOT


def test_the_commands_list_of_files_is_the_modules() -> None:
    # cli.py repeats the names so that --help and completion import nothing.
    assert tuple(FILES) == cli.SHIPPED_FILES


def test_the_single_unit_gets_the_user_group_store_and_executable_and_nothing_else() -> None:
    changes = changed_lines("unit", CI)

    assert [new for _old, new in changes] == [
        "ExecStartPre=+/usr/bin/install -d -o ci -g builders -m 0750 /srv/bentoml/main",
        "ExecStartPre=/opt/storewarden/bin/storewarden check "
        "--config /etc/storewarden/storewarden.yaml",
        "ExecStart=/opt/storewarden/bin/storewarden run --config /etc/storewarden/storewarden.yaml",
        "Environment=BENTOML_HOME=/srv/bentoml/main",
        "User=ci",
        "Group=builders",
        "BindPaths=/srv/bentoml/main",
        "ReadWritePaths=/srv/bentoml/main",
    ]


def test_the_template_units_stores_are_siblings_of_the_given_store_by_instance() -> None:
    rendered = render("template-unit", CI)

    assert "BindPaths=/srv/bentoml/%i\n" in rendered
    assert "Environment=BENTOML_HOME=/srv/bentoml/%i\n" in rendered
    directives = [line for line in rendered.splitlines() if not line.startswith("#")]
    assert [line for line in directives if "/home/bentoml" in line] == []


def test_the_config_names_the_store_and_the_rules_and_drop_in_are_unchanged() -> None:
    assert "# store: /srv/bentoml/main\n" in render("config", CI)
    for name in ("metrics-drop-in", "rules", "rules-test"):
        assert changed_lines(name, CI) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("user", "Root Admin", "not a valid user"),
        ("group", "-wheel", "not a valid user"),
        ("store", PurePosixPath("/srv/my models"), "absolute path"),
        ("store", PurePosixPath("srv/bentoml"), "absolute path"),
        ("store", PurePosixPath("/srv/%i"), "absolute path"),
        ("store", PurePosixPath("/"), "cannot be /"),
        ("executable", PurePosixPath("/opt/$HOME/storewarden"), "absolute path"),
        ("executable", PurePosixPath("/home/ci/.venv/bin/storewarden"), "sandbox hides"),
    ],
)
def test_a_placement_a_unit_cannot_hold_is_refused(
    field: str, value: str | PurePosixPath, message: str
) -> None:
    arguments: dict[str, object] = {field: value}
    with pytest.raises(ShippedFilesError, match=message):
        Placement(**arguments)  # type: ignore[arg-type]


def test_install_writes_the_units_and_config_at_their_system_paths(tmp_path: Path) -> None:
    written = install(tmp_path, CI, ["unit", "template-unit", "config"])

    assert [(item.path.relative_to(tmp_path).as_posix(), item.outcome) for item in written] == [
        ("etc/systemd/system/storewarden.service", "wrote"),
        ("etc/systemd/system/storewarden@.service", "wrote"),
        ("etc/storewarden/storewarden.yaml", "wrote"),
    ]
    unit = tmp_path / "etc/systemd/system/storewarden.service"
    assert unit.read_text(encoding="utf-8") == render("unit", CI)
    assert unit.stat().st_mode & 0o777 == 0o644


def test_the_metrics_drop_in_goes_beside_both_units(tmp_path: Path) -> None:
    install(tmp_path, CI, ["metrics-drop-in"])

    for relative in INSTALLED["metrics-drop-in"]:
        assert (tmp_path / relative).read_bytes() == (ROOT / FILES["metrics-drop-in"]).read_bytes()


def test_installing_again_changes_nothing(tmp_path: Path) -> None:
    install(tmp_path, CI, ["unit", "config"])

    again = install(tmp_path, CI, ["unit", "config"])

    assert [item.outcome for item in again] == ["unchanged", "unchanged"]


def test_an_edited_file_is_never_overwritten_without_force_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    install(tmp_path, CI, ["config"])
    config = tmp_path / "etc/storewarden/storewarden.yaml"
    config.write_text("trigger: {high_percent: 70}\n", encoding="utf-8")

    with pytest.raises(ShippedFilesError, match=r"storewarden\.yaml: already there"):
        install(tmp_path, CI, ["unit", "config"])
    assert config.read_text(encoding="utf-8") == "trigger: {high_percent: 70}\n"
    assert not (tmp_path / "etc/systemd/system/storewarden.service").exists()

    replaced = install(tmp_path, CI, ["unit", "config"], force=True)
    assert [item.outcome for item in replaced] == ["wrote", "replaced"]


def test_the_package_data_patterns_cover_every_shipped_file_and_nothing_else() -> None:
    # pyproject.toml maps systemd/ and config/ into storewarden/data/ when the wheel
    # is built: a file added to either directory must match a pattern to ship.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    shipped_paths = set()
    for package, directory in setuptools["package-dir"].items():
        for nested in [package, *(name for name in setuptools["packages"] if name != package)]:
            if not nested.startswith(package):
                continue
            base = ROOT / directory / "/".join(nested.removeprefix(package).split(".")[1:])
            for pattern in setuptools["package-data"].get(nested, []):
                for path in base.glob(pattern):
                    shipped_paths.add(path.relative_to(ROOT).as_posix())
    in_repository = {
        path.relative_to(ROOT).as_posix()
        for directory in ("systemd", "config")
        for path in (ROOT / directory).rglob("*")
        if path.is_file() and not fnmatch.fnmatch(path.name, "*.pyc")
    }

    assert shipped_paths == in_repository
    assert {path.as_posix() for path in FILES.values()} == in_repository

"""Which command lines hold a version by its tag (made-up process tables)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from storewarden.inuse import ProcessView, holders_in, index_processes
from storewarden.store import VersionRecord

STORE = Path("/srv/bentoml")
WHEN = datetime(2026, 1, 1, tzinfo=UTC)
RECORD = VersionRecord(
    kind="models",
    name="iris",
    version="v1",
    path=STORE / "models" / "iris" / "v1",
    creation_time=WHEN,
    creation_time_estimated=False,
    labels={},
    bytes=1,
    last_change=WHEN,
    complete=True,
)


def held(cmdline: tuple[str, ...], bentoml_home: str | None = None) -> bool:
    view = ProcessView(
        pid=7, name="x", cmdline=cmdline, cwd="/work", paths=(), bentoml_home=bentoml_home
    )
    return RECORD.path in holders_in(index_processes(STORE, [view]), [RECORD]).holders


@pytest.mark.parametrize(
    "cmdline",
    [
        ("bentoml", "serve", "iris:v1"),
        ("python", "serve.py", "--model=iris:v1"),
        ("python", "-m", "storewarden_plugin", "iris:v1"),
        ("/opt/storewarden-old/bin/python", "train.py", "iris:v1"),
    ],
)
def test_a_tag_on_any_other_command_line_holds_the_version(cmdline: tuple[str, ...]) -> None:
    assert held(cmdline)


@pytest.mark.parametrize(
    "cmdline",
    [
        ("/usr/local/bin/storewarden", "delete", "iris:v1"),
        ("/venv/bin/python", "-m", "storewarden", "pin", "iris:v1"),
        ("python3", "-X", "importtime", "-m", "storewarden", "delete", "iris:v1"),
    ],
)
def test_storewardens_own_commands_hold_nothing_by_the_tags_they_name(
    cmdline: tuple[str, ...],
) -> None:
    assert not held(cmdline)


def test_a_wardens_command_line_is_not_read_for_paths_either() -> None:
    # The warden's command lines are skipped whole; its open files still count elsewhere.
    assert not held(("storewarden", "restore", str(RECORD.path)))
    assert held(("cat", str(RECORD.path / "weights.bin")))


@pytest.mark.parametrize(
    ("bentoml_home", "holds"),
    [(None, True), ("", True), (str(STORE), True), (f"{STORE}/", True), ("/srv/other", False)],
)
def test_a_tag_holds_only_where_bentoml_home_is_this_store_or_unknown(
    bentoml_home: str | None, holds: bool
) -> None:
    assert held(("bentoml", "serve", "iris:v1"), bentoml_home) is holds

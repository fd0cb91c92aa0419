"""``storewarden pin``, ``unpin``, ``pins`` and ``restore`` as a user runs them, and every --help.

Exit codes verified here: 0 done; 1 a tag that is not pinned, a pins file
that cannot be read, a version already in the store; 2 an invalid tag or
duration; 4 a delete refused because of a command-line pin.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest

from storewarden.cli import main as cli_group
from storewarden.pins import current_user
from tests.e2e.test_cli import audit_lines, named, run_cli
from tests.storebuilder import make_version, point_latest, read_latest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A store with iris v0 (oldest) .. v3 (latest), created days ago, and a bento."""
    root = tmp_path / "bentoml"
    now = datetime.now(tz=UTC)
    for index in range(4):
        make_version(root, "iris", f"v{index}", created=now - timedelta(days=10 - index))
    point_latest(root, "iris", "v3")
    make_version(root, "svc", "b1", kind="bentos", created=now - timedelta(days=5))
    point_latest(root, "svc", "b1", kind="bentos")
    return root


def config_file(tmp_path: Path, text: str) -> Path:
    """Write a config file and return its path."""
    path = tmp_path / "storewarden.yaml"
    path.write_text(text)
    return path


RETENTION = "protect: {settle: 0s, min_age: 0s, in_use: false}\nretention: {max_versions: 1}\n"


def test_pin_pins_and_unpin_round_trip_with_who_when_until_and_reason(home: Path) -> None:
    before = datetime.now(tz=UTC).replace(microsecond=0)

    pinned = run_cli(home, "pin", "iris:v1", "--until", "7d", "--reason", "canary in prod")
    listed = run_cli(home, "pins", "--json")

    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.startswith("pinned iris:v1 until ")
    (added,) = named(audit_lines(pinned.stderr), "pin_added")
    assert (added["tag"], added["reason"]) == ("iris:v1", "canary in prod")
    (pin,) = json.loads(listed.stdout)
    assert (pin["tag"], pin["kind"], pin["reason"], pin["expired"]) == (
        "iris:v1",
        None,
        "canary in prod",
        False,
    )
    assert pin["who"] == current_user()
    when = datetime.fromisoformat(pin["when"])
    assert before <= when <= datetime.now(tz=UTC)
    assert datetime.fromisoformat(pin["until"]) == when + timedelta(days=7)
    assert (home / ".storewarden" / "pins.json").is_file()
    assert not list((home / "models").glob("**/pins*"))

    unpinned = run_cli(home, "unpin", "iris:v1")
    assert unpinned.returncode == 0, unpinned.stderr
    assert unpinned.stdout == "unpinned iris:v1\n"
    assert json.loads(run_cli(home, "pins", "--json").stdout) == []


def test_a_command_line_pin_keeps_a_version_from_prune_and_from_delete(
    home: Path, tmp_path: Path
) -> None:
    config = config_file(tmp_path, RETENTION)
    assert run_cli(home, "pin", "iris:v1", "--reason", "keep").returncode == 0

    pruned = run_cli(home, "prune", "--config", str(config))
    refused = run_cli(home, "delete", "iris:v1")

    assert pruned.returncode == 0, pruned.stderr
    removed = [event["version"] for event in named(audit_lines(pruned.stdout), "version_removed")]
    assert removed == ["v0", "v2"]
    assert refused.returncode == 4
    assert "pinned" in refused.stderr
    assert (home / "models" / "iris" / "v1").is_dir()


def test_pin_of_name_latest_pins_the_version_latest_names_now(home: Path) -> None:
    result = run_cli(home, "pin", "iris:latest")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "pinned models/iris:v3\n"
    (pin,) = json.loads(run_cli(home, "pins", "--json").stdout)
    assert (pin["tag"], pin["kind"]) == ("iris:v3", "models")


def test_a_pin_matching_nothing_is_made_with_a_note(home: Path) -> None:
    result = run_cli(home, "pin", "resnet:*")

    assert result.returncode == 0
    assert "note: resnet:* matches no version in the store now" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["pin", "iris"], "must look like 'name:version'"),
        (["pin", "iris:v1", "--until", "soon"], "expected a duration"),
        (["unpin"], "give a TAG or --expired"),
        (["pin", "iris:v1", "--reason", "x" * 1001], "at most 1000 characters"),
    ],
)
def test_a_malformed_pin_command_exits_2_touching_nothing(
    home: Path, arguments: list[str], message: str
) -> None:
    result = run_cli(home, *arguments)

    assert result.returncode == 2
    assert message in result.stderr
    assert not (home / ".storewarden" / "pins.json").exists()


def test_unpinning_what_is_not_pinned_exits_1(home: Path) -> None:
    result = run_cli(home, "unpin", "iris:v1")

    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "iris:v1 is not pinned (`storewarden pins` lists the pins)"
    )


def test_a_corrupt_pins_file_fails_the_pin_commands_and_keeps_everything(
    home: Path, tmp_path: Path
) -> None:
    state = home / ".storewarden"
    state.mkdir()
    (state / "pins.json").write_text('{"version": 1, "pins": [')
    config = config_file(tmp_path, RETENTION)

    listed = run_cli(home, "pins")
    pinned = run_cli(home, "pin", "iris:v0")
    pruned = run_cli(home, "prune", "--config", str(config))
    status = run_cli(home, "status", "--json", "--config", str(config))

    for failed in (listed, pinned):
        assert failed.returncode == 1
        lines = failed.stderr.strip().splitlines()
        assert lines[-1].startswith(f"storewarden: {state / 'pins.json'} is corrupt")
    assert pruned.returncode == 0
    events = audit_lines(pruned.stdout)
    assert named(events, "pins_unreadable")
    assert not named(events, "version_removed")
    assert sorted(path.name for path in (home / "models" / "iris").iterdir()) == [
        "latest",
        "v0",
        "v1",
        "v2",
        "v3",
    ]
    assert "is corrupt" in json.loads(status.stdout)["pins_problem"]


def pins_document(count: int, reason_bytes: int, expired: int = 0) -> bytes:
    """Return a pins file of pins p0:v1 ..., the first ``expired`` of them expired."""
    now = datetime.now(tz=UTC).replace(microsecond=0)
    pins = [
        {
            "tag": f"p{index}:v1",
            "kind": None,
            "who": "red team",
            "when": (now - timedelta(days=2)).isoformat(),
            "until": (now - timedelta(days=1)).isoformat() if index < expired else None,
            "reason": "r" * reason_bytes,
        }
        for index in range(count)
    ]
    return json.dumps({"version": 1, "pins": pins}, indent=2).encode() + b"\n"


def test_a_pin_that_would_make_the_pins_file_too_large_to_read_is_refused(home: Path) -> None:
    state = home / ".storewarden"
    state.mkdir()
    # 40 pins whose reasons take the file to 600 bytes below the 4 MiB the warden reads.
    limit = 4 * 1024 * 1024
    document = pins_document(40, (limit - 600 - len(pins_document(40, 0))) // 40)
    assert limit - 640 < len(document) <= limit - 600
    (state / "pins.json").write_bytes(document)

    refused = run_cli(home, "pin", "iris:v0", "--reason", "z" * 1000)
    small = run_cli(home, "pin", "iris:v0", "--reason", "release")

    assert refused.returncode == 1, refused.stderr
    assert "would make" in refused.stderr
    assert "nothing was written" in refused.stderr
    assert small.returncode == 0, small.stderr
    assert [pin["tag"] for pin in json.loads(run_cli(home, "pins", "--json").stdout)][-1] == (
        "iris:v0"
    )


def test_unpin_can_shrink_a_pins_file_too_large_to_read(home: Path, tmp_path: Path) -> None:
    state = home / ".storewarden"
    state.mkdir()
    # What 40 `storewarden pin pN:v1 --reason <110 kB>` wrote before reasons were bounded.
    (state / "pins.json").write_bytes(pins_document(40, 110_000, expired=5))
    config = config_file(tmp_path, RETENTION)

    kept = run_cli(home, "prune", "--config", str(config))
    listed = run_cli(home, "pins")
    one = run_cli(home, "unpin", "p7:v1")
    expired = run_cli(home, "unpin", "--expired")
    pruned = run_cli(home, "prune", "--config", str(config))

    assert kept.returncode == 0, kept.stderr
    assert named(audit_lines(kept.stdout), "pins_unreadable")
    assert not named(audit_lines(kept.stdout), "version_removed")
    assert listed.returncode == 1
    assert "larger than 4194304 bytes" in listed.stderr
    assert "storewarden unpin" in listed.stderr
    assert f"rm {state / 'pins.json'}" in listed.stderr
    assert one.returncode == 0, one.stderr
    assert one.stdout == "unpinned p7:v1\n"
    assert "still larger than 4194304 bytes" in one.stderr
    assert expired.returncode == 0, expired.stderr
    assert len(expired.stdout.splitlines()) == 5
    assert "still larger" not in expired.stderr
    assert pruned.returncode == 0, pruned.stderr
    removed = [event["version"] for event in named(audit_lines(pruned.stdout), "version_removed")]
    assert removed == ["v0", "v1", "v2"]
    assert len(json.loads(run_cli(home, "pins", "--json").stdout)) == 34


def test_status_lists_pins_with_who_when_and_reason(home: Path) -> None:
    run_cli(home, "pin", "iris:v0", "--reason", "audit hold")
    run_cli(home, "pin", "svc:*", "--kind", "bentos", "--until", "1s")

    data = json.loads(run_cli(home, "status", "--json").stdout)
    text = run_cli(home, "status").stdout

    pins = {pin["tag"]: pin for pin in data["pins"]}
    assert pins["iris:v0"]["reason"] == "audit hold"
    assert pins["iris:v0"]["who"] == current_user()
    assert pins["svc:*"]["kind"] == "bentos"
    assert data["pins_problem"] is None
    iris = next(entry for entry in data["names"] if entry["name"] == "iris")
    oldest = next(version for version in iris["versions"] if version["version"] == "v0")
    assert "pinned" in oldest["protected"]
    assert "pins:" in text
    assert "audit hold" in text


def test_expired_pins_are_listed_as_expired_and_can_be_cleared(home: Path) -> None:
    run_cli(home, "pin", "iris:v0", "--until", "0s")
    run_cli(home, "pin", "iris:v1")

    listed = run_cli(home, "pins")
    cleared = run_cli(home, "unpin", "--expired")

    assert "(expired)" in listed.stdout
    assert cleared.stdout == "unpinned iris:v0 (expired)\n"
    assert [pin["tag"] for pin in json.loads(run_cli(home, "pins", "--json").stdout)] == ["iris:v1"]


def test_restore_puts_an_archived_version_back_and_pins_it_on_request(
    home: Path, tmp_path: Path
) -> None:
    archives = tmp_path / "archive"
    archives.mkdir()
    config = config_file(
        tmp_path, f"protect: {{settle: 0s, in_use: false}}\narchive: {{dir: {archives}}}\n"
    )
    deleted = run_cli(home, "delete", "iris:v3", "--config", str(config))
    assert deleted.returncode == 0, deleted.stderr
    assert read_latest(home, "iris") == "v2"
    archive = archives / "iris+v3.bentomodel.tar"

    restored = run_cli(home, "restore", str(archive), "--pin")
    again = run_cli(home, "restore", str(archive))

    assert restored.returncode == 0, restored.stderr
    assert "restored models/iris:v3" in restored.stderr
    assert "iris:latest is now v3" in restored.stderr
    events = audit_lines(restored.stdout)
    assert named(events, "version_restored")[0]["archive"] == str(archive)
    assert read_latest(home, "iris") == "v3"
    (pin,) = json.loads(run_cli(home, "pins", "--json").stdout)
    assert (pin["tag"], pin["kind"]) == ("iris:v3", "models")
    assert again.returncode == 1
    assert "already in the store" in again.stderr


def test_an_archive_dir_inside_models_is_refused_with_exit_2(home: Path, tmp_path: Path) -> None:
    config = config_file(tmp_path, f"archive: {{dir: {home / 'models' / 'archive'}}}\n")

    result = run_cli(home, "prune", "--config", str(config))

    assert result.returncode == 2
    assert "at 'archive.dir'" in result.stderr
    assert not (home / "models" / "archive").exists()


def test_every_command_s_help_shows_an_example() -> None:
    context = click.Context(cli_group)
    assert "Examples:" in cli_group.get_help(context)
    for name, command in cli_group.commands.items():
        text = command.get_help(click.Context(command, info_name=name, parent=context))
        assert "Example" in text, f"`storewarden {name} --help` shows no example"


def test_check_refuses_an_archive_dir_that_cannot_be_created(home: Path, tmp_path: Path) -> None:
    config = config_file(tmp_path, f"archive: {{dir: {tmp_path / 'no-disk' / 'archive'}}}\n")

    result = run_cli(home, "check", "--config", str(config))

    assert result.returncode == 2
    assert result.stderr.startswith("storewarden: archive.dir ")
    assert "does not exist" in result.stderr
    assert not (tmp_path / "no-disk").exists()


def test_check_accepts_an_archive_dir_it_can_create_and_creates_nothing(
    home: Path, tmp_path: Path
) -> None:
    config = config_file(tmp_path, f"archive: {{dir: {tmp_path / 'archive'}}}\n")

    result = run_cli(home, "check", "--config", str(config))

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "archive").exists()

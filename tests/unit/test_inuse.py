"""Which command lines hold a version by its tag (made-up process tables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storewarden import inuse
from storewarden.inuse import Inode, ProcessView, _cmdline, _maps, holders_in, index_processes
from storewarden.store import Kind, VersionRecord

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


# (device, inode) of the paths the made-up filesystem has; any other cannot be stat'ed.
THIS_STORE = (1, 100)
OTHER_STORE = (1, 200)
IDENTITIES = {str(STORE): THIS_STORE, "/proc/7/root/srv/bentoml": THIS_STORE}


def held(
    cmdline: tuple[str, ...],
    bentoml_home: str | None = None,
    identities: Mapping[str, Inode] = IDENTITIES,
) -> bool:
    view = ProcessView(
        pid=7, name="x", cmdline=cmdline, cwd="/work", paths=(), bentoml_home=bentoml_home
    )
    table = index_processes(STORE, [view], identity=identities.get)
    return RECORD.path in holders_in(table, [RECORD]).holders


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
        # The console script run through its shebang: the kernel puts the interpreter first.
        ("/venv/bin/python3", "/venv/bin/storewarden", "pin", "iris:v1"),
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
    [
        (None, True),
        ("", True),
        (str(STORE), True),
        (f"{STORE}/", True),
        ("/srv/other", False),
        # Another path to this very directory (a bind mount, a second name for it).
        ("/mnt/alias-of-the-store", True),
        # Cannot be stat'ed, or left for the process's own shell to expand: unknown.
        ("/srv/gone", True),
        ("$STORE_HOME/bentoml", True),
        ("~someone/bentoml", True),
        # Relative: against the process's working directory, as it sees it.
        ("bentoml", True),
        ("other", False),
    ],
)
def test_a_tag_holds_only_where_bentoml_home_is_this_store_or_unknown(
    bentoml_home: str | None, holds: bool
) -> None:
    identities = {
        **IDENTITIES,
        "/proc/7/root/srv/other": OTHER_STORE,
        "/srv/other": OTHER_STORE,
        "/mnt/alias-of-the-store": THIS_STORE,
        "/proc/7/cwd/bentoml": THIS_STORE,
        "/proc/7/cwd/other": OTHER_STORE,
    }
    assert held(("bentoml", "serve", "iris:v1"), bentoml_home, identities) is holds


def test_bentoml_home_is_looked_up_as_the_process_sees_it_before_as_the_warden_does() -> None:
    # In the process's mount namespace /data is this store; in the warden's, another one.
    cmdline = ("bentoml", "serve", "iris:v1")
    mounted_there = {str(STORE): THIS_STORE, "/proc/7/root/data": THIS_STORE, "/data": OTHER_STORE}
    assert held(cmdline, "/data", mounted_there)
    elsewhere_there = {
        str(STORE): THIS_STORE,
        "/proc/7/root/data": OTHER_STORE,
        "/data": THIS_STORE,
    }
    assert not held(cmdline, "/data", elsewhere_there)
    # The process's root cannot be read (another user's, no CAP_SYS_PTRACE): the path itself.
    assert not held(cmdline, "/data", {str(STORE): THIS_STORE, "/data": OTHER_STORE})
    assert held(cmdline, "/data", {str(STORE): THIS_STORE, "/data": THIS_STORE})


@pytest.mark.parametrize(
    "cmdline",
    [
        ("bentoml", "serve", "IRIS:V1"),
        ("bentoml", "serve", "Iris:v1"),
        ("python", "serve.py", "--model=IRIS:v1"),
    ],
)
def test_a_tag_in_any_case_holds_the_version_as_bentoml_lower_cases_it(
    cmdline: tuple[str, ...],
) -> None:
    assert held(cmdline)


@pytest.mark.parametrize(
    "argument",
    [
        "model(iris:v1)",
        "[iris:v1]",
        "'iris:v1',",
        "--model=iris:v1",
        "iris:v1,resnet:v2",
        "resnet:v2,iris:v1",
        "{'model': 'iris:v1'}",
        "import bentoml; bentoml.models.get('iris:v1')",
        "--models=[resnet:v2;iris:v1]",
        "iris:v1.",
        "registry:iris:v1",
        "models/iris:v1/weights",
    ],
)
def test_a_tag_inside_other_characters_holds_the_version(argument: str) -> None:
    assert held(("python", "serve.py", argument))


@pytest.mark.parametrize(
    "argument",
    ["iris:v10", "iris:v1x", "iris:v1-2", "iris:v1.2", "xiris:v1", "my-iris:v1", "iris_v1", "iris"],
)
def test_a_longer_or_other_tag_around_the_name_holds_nothing(argument: str) -> None:
    assert not held(("python", "serve.py", argument))


def test_storewardens_own_commands_hold_nothing_by_a_tag_inside_an_argument() -> None:
    assert not held(("storewarden", "delete", "--tag=model(IRIS:V1)"))


LATER = VersionRecord(
    kind="models",
    name="iris",
    version="v2",
    path=STORE / "models" / "iris" / "v2",
    creation_time=WHEN,
    creation_time_estimated=False,
    labels={},
    bytes=1,
    last_change=WHEN,
    complete=True,
)


def held_by_latest(cmdline: tuple[str, ...], latest: str | None) -> list[str]:
    view = ProcessView(pid=7, name="x", cmdline=cmdline, cwd="/work", paths=())
    table = index_processes(STORE, [view], identity=IDENTITIES.get)
    scan = holders_in(table, [RECORD, LATER], latest=lambda _record: latest)
    return sorted(path.name for path in scan.holders)


def test_name_latest_on_a_command_line_holds_the_version_latest_names() -> None:
    assert held_by_latest(("bentoml", "serve", "iris:latest"), "v1") == ["v1"]
    assert held_by_latest(("bentoml", "serve", "IRIS:LATEST"), "v2") == ["v2"]
    assert held_by_latest(("bentoml", "serve", "--bento=iris:latest"), "v2") == ["v2"]


def test_name_latest_holds_every_version_of_the_name_while_what_it_names_is_unknown() -> None:
    # BentoML itself picks the newest by creation_time when latest is missing or broken.
    assert held_by_latest(("bentoml", "serve", "iris:latest"), None) == ["v1", "v2"]


def test_another_names_latest_holds_nothing_here() -> None:
    assert held_by_latest(("bentoml", "serve", "resnet:latest"), None) == []


def record_of(version: str, *, name: str = "iris", kind: Kind = "models") -> VersionRecord:
    return VersionRecord(
        kind=kind,
        name=name,
        version=version,
        path=STORE / kind / name / version,
        creation_time=WHEN,
        creation_time_estimated=False,
        labels={},
        bytes=1,
        last_change=WHEN,
        complete=True,
    )


def held_of(cmdline: tuple[str, ...], records: list[VersionRecord]) -> list[str]:
    """Return ``kind/name:version`` of the records the command line holds (the store is records)."""
    view = ProcessView(pid=7, name="x", cmdline=cmdline, cwd="/work", paths=())
    table = index_processes(STORE, [view], identity=IDENTITIES.get)
    versions = {record.path for record in records}
    scan = holders_in(table, records, is_version=versions.__contains__)
    return sorted(
        f"{record.kind}/{record.tag}" for record in records if record.path in scan.holders
    )


PREFIXED = [
    record_of("csmzuchl4sb7qax4"),
    record_of("dqywm3xl4sb7qax4"),
    record_of("csmzuchl4sb7qax4", name="mnist"),
]


@pytest.mark.parametrize(
    "argument", ["iris:csmzuc", "IRIS:CSMZUC", "iris:c", "model(iris:csmzuchl)"]
)
def test_a_tag_whose_version_is_a_prefix_holds_the_version_bentoml_resolves_it_to(
    argument: str,
) -> None:
    # bentoml.models.get("iris:csmzuc") loads iris:csmzuchl4sb7qax4 (Store.get globs version*).
    assert held_of(("python", "serve.py", argument), PREFIXED) == ["models/iris:csmzuchl4sb7qax4"]


def test_a_prefix_that_no_version_of_the_name_starts_with_holds_nothing() -> None:
    assert held_of(("python", "serve.py", "iris:csmzx"), PREFIXED) == []
    assert held_of(("python", "serve.py", "resnet:csmzuc"), PREFIXED) == []


def test_an_ambiguous_prefix_holds_every_version_it_could_name() -> None:
    # BentoML refuses an ambiguous prefix, but the store may change under it: keep them all.
    records = [*PREFIXED, record_of("csmzxxhl4sb7qax4")]
    assert held_of(("bentoml", "serve", "iris:csmz"), records) == [
        "models/iris:csmzuchl4sb7qax4",
        "models/iris:csmzxxhl4sb7qax4",
    ]


def test_an_exact_version_holds_only_itself_not_the_versions_it_prefixes() -> None:
    # BentoML loads iris:v1 itself when it exists, never iris:v10.
    records = [record_of("v1"), record_of("v10"), record_of("v1.2")]
    assert held_of(("bentoml", "serve", "iris:v1"), records) == ["models/iris:v1"]


def test_a_prefix_is_exact_or_not_per_kind() -> None:
    # models/iris/v1 exists, bentos/iris/v1 does not: for bentos it resolves by prefix.
    records = [record_of("v1"), record_of("v10"), record_of("v10", kind="bentos")]
    assert held_of(("bentoml", "serve", "iris:v1"), records) == [
        "bentos/iris:v10",
        "models/iris:v1",
    ]


def test_an_exact_version_not_among_the_records_asked_about_still_counts_as_exact() -> None:
    # The re-check before a removal asks about one version; the store decides what is exact.
    view = ProcessView(pid=7, name="x", cmdline=("bentoml", "serve", "iris:v1"), cwd=None, paths=())
    table = index_processes(STORE, [view], identity=IDENTITIES.get)
    ten = record_of("v10")
    on_disk = {record_of("v1").path, ten.path}
    assert not holders_in(table, [ten], is_version=on_disk.__contains__).holders
    assert holders_in(table, [ten], is_version={ten.path}.__contains__).holders


def test_latest_is_a_pointer_not_a_prefix() -> None:
    # BentoML reads iris:latest from the pointer, never as the start of a version.
    view = ProcessView(
        pid=7, name="x", cmdline=("bentoml", "serve", "iris:latest"), cwd=None, paths=()
    )
    table = index_processes(STORE, [view], identity=IDENTITIES.get)
    records = [record_of("v1"), record_of("latest2")]
    scan = holders_in(table, records, latest=lambda _record: "v1", is_version=lambda _path: True)
    assert [path.name for path in scan.holders] == ["v1"]


# -- reading /proc: what the kernel writes, parsed as psutil parsed it ----------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"bentoml\0serve\0iris:v1\0", ("bentoml", "serve", "iris:v1")),
        (b"python\0-c\0print('a b')\0", ("python", "-c", "print('a b')")),
        (b"", ()),  # a kernel thread, or a zombie
        # Rewritten into one string (setproctitle): split at spaces, with or without a NUL.
        (b"gunicorn: worker [iris:v1]", ("gunicorn:", "worker", "[iris:v1]")),
        (b"gunicorn: worker [iris:v1]\0", ("gunicorn:", "worker", "[iris:v1]")),
        (b"caf\xe9\0", ("caf\udce9",)),  # not UTF-8: kept, as the filesystem encoding keeps it
    ],
)
def test_a_command_line_is_split_as_psutil_splits_it(
    data: bytes, expected: tuple[str, ...]
) -> None:
    assert _cmdline(data) == expected


def test_each_mapped_file_is_taken_once_with_its_device_and_inode() -> None:
    maps = (
        b"55d0c0a00000-55d0c0a28000 r--p 00000000 fd:01 1234 /usr/bin/python3.11\n"
        b"55d0c0a28000-55d0c0b00000 r-xp 00028000 fd:01 1234 /usr/bin/python3.11\n"
        b"55d0c1000000-55d0c1200000 rw-p 00000000 00:00 0 [heap]\n"
        b"7f0000000000-7f0010000000 r--s 00000000 103:02 98765"
        b"                  /srv/bentoml/models/iris/v1/weights bin (deleted)\n"
        b"7f0010000000-7f0010001000 rw-p 00000000 00:00 0 \n"
        b"7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n"
    )

    paths, inodes = _maps(maps)

    assert paths == ["/usr/bin/python3.11", "/srv/bentoml/models/iris/v1/weights bin (deleted)"]
    assert inodes == {(os.makedev(0xFD, 0x01), 1234), (os.makedev(0x103, 0x02), 98765)}


class ExitingProcess:
    """A /proc/7 whose process exits after its command line was read, as ``what_is_left`` shows."""

    def __init__(self, what_is_left: str) -> None:
        self.what_is_left = what_is_left
        self.reads: list[str] = []

    def __call__(self, proc: str, entry: str) -> bytes:
        self.reads.append(entry)
        if self.reads.count("cmdline") == 1 and entry == "cmdline":
            return b"python\0-c\0print('iris:latest')\0"
        if self.what_is_left == "gone":
            raise FileNotFoundError(f"{proc}/{entry}")
        if self.what_is_left == "zombie":
            return b""  # its memory released: no environment, no command line
        # alive with an empty environment (env -i): the command line is still there
        return b"" if entry == "environ" else b"python\0-c\0print('iris:latest')\0"


@pytest.mark.parametrize("what_is_left", ["gone", "zombie"])
def test_a_process_that_exits_while_it_is_read_holds_nothing(
    monkeypatch: pytest.MonkeyPatch, what_is_left: str
) -> None:
    # Under -n 2 a short ``python -c`` naming iris:latest in another test's store
    # exited between the reads of its command line and its environment; read as
    # "BENTOML_HOME unknown" it held this store's iris (a refused delete).
    monkeypatch.setattr(inuse, "_read_proc", ExitingProcess(what_is_left))
    monkeypatch.setattr(inuse, "_held", lambda pid: inuse.Held("/work", [], frozenset()))

    assert inuse._inspect(7) is None


def test_a_live_process_with_an_empty_environment_still_holds_by_its_tags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inuse, "_read_proc", ExitingProcess("alive"))
    monkeypatch.setattr(inuse, "_held", lambda pid: inuse.Held("/work", [], frozenset()))

    view = inuse._inspect(7)

    assert view is not None and view.bentoml_home is None
    table = index_processes(STORE, [view], identity=IDENTITIES.get)
    assert RECORD.path in holders_in(table, [RECORD]).holders

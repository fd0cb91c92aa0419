"""The census on real stores under tmp_path: what it reads, what it refuses, what it counts."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storewarden.store import FileSystem, Snapshot, VersionRecord, census
from tests.storebuilder import NOW, make_version, point_latest

# A directory that is not part of the store: whatever the census does, it must
# never read anything here (symlinks that lead here are not followed).
OUTSIDE = "outside"


class RecordingFileSystem(FileSystem):
    """The real filesystem, recording every call the census makes and its path."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Path]] = []

    @property
    def touched(self) -> list[Path]:
        """Return every path asked about, in order."""
        return [path for _call, path in self.calls]

    def scandir(self, path: Path) -> list[os.DirEntry[str]]:
        self.calls.append(("scandir", Path(path)))
        return super().scandir(path)

    def lstat(self, path: Path) -> os.stat_result:
        self.calls.append(("lstat", Path(path)))
        return super().lstat(path)

    def read_bytes(self, path: Path, limit: int) -> bytes:
        self.calls.append(("read_bytes", Path(path)))
        return super().read_bytes(path, limit)

    def readlink(self, path: Path) -> str:
        self.calls.append(("readlink", Path(path)))
        return super().readlink(path)


def outside_store(tmp_path: Path) -> Path:
    """Return a directory next to the store holding a complete version and a large file."""
    directory = tmp_path / OUTSIDE
    make_version(directory, "elsewhere", "v1", size=1 << 20)
    (directory / "huge.bin").write_bytes(b"h" * (1 << 20))
    return directory


def reached(call: str, path: Path) -> Path:
    """Return where a call on ``path`` really lands: scandir follows every link in it,
    the others (lstat, readlink, read_bytes with O_NOFOLLOW) all but the last."""
    if call == "scandir":
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def touched_outside(filesystem: RecordingFileSystem, outside: Path) -> list[Path]:
    """Return the recorded paths whose call reached into ``outside``."""
    real_outside = outside.resolve()
    landed = [reached(call, path) for call, path in filesystem.calls]
    return [path for path in landed if real_outside in [path, *path.parents]]


def on_disk_bytes(directory: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Return st_blocks * 512 of ``directory`` and everything below it, links not followed."""
    seen = set() if seen is None else seen
    total = os.lstat(directory).st_blocks * 512
    for base, subdirectories, files in os.walk(directory):
        for entry in [*subdirectories, *files]:
            info = os.lstat(Path(base) / entry)
            inode = (info.st_dev, info.st_ino)
            if inode in seen:
                continue
            seen.add(inode)
            total += info.st_blocks * 512
    return total


def problem_paths(snapshot: Snapshot) -> dict[Path, str]:
    """Return the census problems as path -> reason."""
    return {problem.path: problem.reason for problem in snapshot.problems}


# -- pointers ------------------------------------------------------------------------


def test_a_plain_file_pointer_is_read_as_the_version_it_holds(store: Path) -> None:
    make_version(store, "iris", "v1")
    make_version(store, "iris", "v2")
    point_latest(store, "iris", "v1")

    pointer = census(store).pointers[("models", "iris")]

    assert (pointer.form, pointer.target, pointer.problem) == ("file", "v1", None)


def test_a_symlink_pointer_is_read_as_the_version_it_names(store: Path) -> None:
    make_version(store, "iris", "v1")
    make_version(store, "iris", "v2")
    os.symlink("v2", store / "models" / "iris" / "latest")

    pointer = census(store).pointers[("models", "iris")]

    assert (pointer.form, pointer.target, pointer.problem) == ("symlink", "v2", None)


@pytest.mark.parametrize(
    "text", ["./v1/", "v1/", "../iris/v1", "../../models/iris/v1/", "ABSOLUTE", "VIA-LINK"]
)
def test_a_symlink_pointer_written_as_another_path_to_the_version_names_it(
    store: Path, tmp_path: Path, text: str
) -> None:
    # Each leads to models/iris/v1: read as naming v1, never "repaired" away from it.
    make_version(store, "iris", "v1")
    make_version(store, "iris", "v2")
    if text == "ABSOLUTE":
        text = str(store / "models" / "iris" / "v1")
    elif text == "VIA-LINK":  # another path to the store, as ~/bentoml -> /data/bentoml
        os.symlink(store, tmp_path / "alias")
        text = str(tmp_path / "alias" / "models" / "iris" / "v1")
    os.symlink(text, store / "models" / "iris" / "latest")

    snapshot = census(store)

    pointer = snapshot.pointers[("models", "iris")]
    assert (pointer.form, pointer.target, pointer.problem) == ("symlink", "v1", None)
    assert snapshot.pointer_target("models", "iris") == "v1"


@pytest.mark.parametrize("form", ["file", "symlink"])
def test_a_pointer_naming_a_missing_version_is_a_problem(store: Path, form: str) -> None:
    make_version(store, "iris", "v1")
    pointer_path = store / "models" / "iris" / "latest"
    if form == "file":
        pointer_path.write_text("v9")
    else:
        os.symlink("v9", pointer_path)

    snapshot = census(store)

    pointer = snapshot.pointers[("models", "iris")]
    assert pointer.form == form
    assert pointer.problem is not None
    assert "v9" in pointer.problem
    assert snapshot.pointer_target("models", "iris") is None


@pytest.mark.parametrize("form", ["file", "symlink"])
@pytest.mark.parametrize(
    "text",
    [
        "..",
        "../../etc",
        "/etc",
        f"../../../{OUTSIDE}/models/elsewhere/v1",
        "v1/../v1",
        ".",
        "../bert/v1",
        "/v1",
    ],
)
def test_a_pointer_naming_anything_but_a_version_is_a_problem_and_never_followed(
    store: Path, tmp_path: Path, form: str, text: str
) -> None:
    outside = outside_store(tmp_path)
    make_version(store, "iris", "v1")
    pointer_path = store / "models" / "iris" / "latest"
    if form == "file":
        pointer_path.write_text(text)
    else:
        os.symlink(text, pointer_path)
    filesystem = RecordingFileSystem()

    snapshot = census(store, filesystem=filesystem)

    pointer = snapshot.pointers[("models", "iris")]
    assert pointer.target is None
    assert pointer.problem is not None
    assert snapshot.pointer_target("models", "iris") is None
    assert touched_outside(filesystem, outside) == []
    assert not any(Path("/etc") in [path, *path.parents] for path in filesystem.touched)


def test_a_symlink_pointer_to_a_version_outside_the_store_is_a_problem_and_never_followed(
    store: Path, tmp_path: Path
) -> None:
    outside = outside_store(tmp_path)
    make_version(store, "iris", "v1")
    os.symlink(outside / "models" / "elsewhere" / "v1", store / "models" / "iris" / "latest")
    filesystem = RecordingFileSystem()

    snapshot = census(store, filesystem=filesystem)

    assert snapshot.pointers[("models", "iris")].problem is not None
    assert [record.tag for record in snapshot.versions] == ["iris:v1"]
    assert touched_outside(filesystem, outside) == []


def test_a_pointer_naming_a_symlinked_version_is_left_alone_with_the_version(
    store: Path, tmp_path: Path
) -> None:
    # BentoML lists and loads a symlinked version; the census leaves it alone (never
    # following the link), and so no repair may "fix" the pointer that names it.
    outside = outside_store(tmp_path)
    make_version(store, "iris", "v1")
    os.symlink(outside / "models" / "elsewhere" / "v1", store / "models" / "iris" / "v9")
    point_latest(store, "iris", "v9")
    filesystem = RecordingFileSystem()

    snapshot = census(store, filesystem=filesystem)

    assert snapshot.pointers[("models", "iris")].problem is None
    assert snapshot.pointer_target("models", "iris") == "v9"
    assert [record.tag for record in snapshot.versions] == ["iris:v1"]
    assert snapshot.linked == {store / "models" / "iris" / "v9"}
    assert touched_outside(filesystem, outside) == []


def test_a_pointer_that_is_not_text_is_a_problem(store: Path) -> None:
    make_version(store, "iris", "v1")
    (store / "models" / "iris" / "latest").write_bytes(b"\xff\xfe\x00v1")

    pointer = census(store).pointers[("models", "iris")]

    assert pointer.target is None
    assert pointer.problem is not None


# -- entries that are not tags, symlinked versions ---------------------------------


@pytest.mark.parametrize("bad_name", [".trash", "Iris", "iris+v2", "-iris", "a" * 64])
def test_a_name_directory_that_is_not_a_valid_tag_is_reported_and_not_scanned(
    store: Path, bad_name: str
) -> None:
    make_version(store, "iris", "v1")
    make_version(store, bad_name, "v1")
    filesystem = RecordingFileSystem()

    snapshot = census(store, filesystem=filesystem)

    bad = store / "models" / bad_name
    assert bad in problem_paths(snapshot)
    assert [record.tag for record in snapshot.versions] == ["iris:v1"]
    assert not any(bad in path.parents for path in filesystem.touched)


@pytest.mark.parametrize("bad_entry", [".deleting-v2", "V2", "v2~", "v2.", "x" * 64])
def test_an_entry_in_a_name_directory_that_is_not_a_valid_tag_is_reported_and_not_scanned(
    store: Path, bad_entry: str
) -> None:
    make_version(store, "iris", "v1")
    make_version(store, "iris", bad_entry)
    filesystem = RecordingFileSystem()

    snapshot = census(store, filesystem=filesystem)

    bad = store / "models" / "iris" / bad_entry
    assert bad in problem_paths(snapshot)
    assert [record.version for record in snapshot.versions] == ["v1"]
    assert not any(bad in [path, *path.parents] for path in filesystem.touched)


def test_a_stray_file_among_the_versions_is_reported_not_counted(store: Path) -> None:
    make_version(store, "iris", "v1")
    (store / "models" / "iris" / "notes").write_text("not a version")

    snapshot = census(store)

    assert store / "models" / "iris" / "notes" in problem_paths(snapshot)
    assert [record.version for record in snapshot.versions] == ["v1"]


def test_a_version_directory_that_is_a_symlink_out_of_the_store_is_reported_not_scanned(
    store: Path, tmp_path: Path
) -> None:
    outside = outside_store(tmp_path)
    make_version(store, "iris", "v1")
    link = store / "models" / "iris" / "v2"
    os.symlink(outside / "models" / "elsewhere" / "v1", link)
    filesystem = RecordingFileSystem()

    snapshot = census(store, filesystem=filesystem)

    assert link in problem_paths(snapshot)
    assert [record.version for record in snapshot.versions] == ["v1"]
    assert touched_outside(filesystem, outside) == []
    assert snapshot.store_bytes < 1 << 20  # the 1 MiB outside version was not counted


def test_a_name_directory_that_is_a_symlink_out_of_the_store_is_reported_not_scanned(
    store: Path, tmp_path: Path
) -> None:
    outside = outside_store(tmp_path)
    link = store / "models" / "elsewhere"
    os.symlink(outside / "models" / "elsewhere", link)
    filesystem = RecordingFileSystem()

    snapshot = census(store, filesystem=filesystem)

    assert link in problem_paths(snapshot)
    assert snapshot.versions == ()
    assert touched_outside(filesystem, outside) == []


def test_a_file_symlink_inside_a_version_is_counted_as_a_link_and_its_target_not_read(
    store: Path, tmp_path: Path
) -> None:
    outside = outside_store(tmp_path)
    path = make_version(store, "iris", "v1", size=100)
    os.symlink(outside / "huge.bin", path / "weights-link.bin")
    os.symlink(outside / "models" / "elsewhere" / "v1", path / "directory-link")
    filesystem = RecordingFileSystem()

    snapshot = census(store, filesystem=filesystem)

    (record,) = snapshot.versions
    assert record.bytes == on_disk_bytes(path)
    assert record.bytes < 1 << 20
    assert record.complete
    assert touched_outside(filesystem, outside) == []


def test_a_descriptor_that_is_a_symlink_is_not_followed_and_the_version_is_incomplete(
    store: Path, tmp_path: Path
) -> None:
    outside = outside_store(tmp_path)
    path = make_version(store, "iris", "v1", descriptor=False)
    os.symlink(outside / "models" / "elsewhere" / "v1" / "model.yaml", path / "model.yaml")

    (record,) = census(store).versions

    assert not record.complete
    assert record.problem is not None


# -- bytes -------------------------------------------------------------------------


def test_version_bytes_are_blocks_on_disk_of_everything_inside(store: Path) -> None:
    path = make_version(store, "iris", "v1", size=300_000)
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "sub" / "deeper" / "tokenizer.json").write_bytes(b"t" * 10_000)
    (path / "empty").write_bytes(b"")

    (record,) = census(store).versions

    assert record.bytes == on_disk_bytes(path)
    assert record.bytes >= 300_000 + 10_000


def test_a_sparse_file_counts_its_blocks_not_its_apparent_size(store: Path) -> None:
    path = make_version(store, "iris", "v1", size=10)
    with (path / "sparse.bin").open("wb") as handle:
        handle.truncate(64 << 20)

    (record,) = census(store).versions

    assert record.bytes == on_disk_bytes(path)
    assert record.bytes < 1 << 20


def test_a_hard_linked_inode_is_counted_once_across_versions(store: Path) -> None:
    first = make_version(store, "iris", "v1", size=500_000)
    second = make_version(store, "iris", "v2", size=10)
    os.unlink(second / "weights.bin")
    os.link(first / "weights.bin", second / "weights.bin")
    os.link(first / "weights.bin", first / "weights-again.bin")
    shared = os.lstat(first / "weights.bin").st_blocks * 512

    snapshot = census(store)

    seen: set[tuple[int, int]] = set()
    expected = on_disk_bytes(first, seen) + on_disk_bytes(second, seen)
    assert snapshot.store_bytes == expected
    naive = sum(
        os.lstat(Path(base) / entry).st_blocks * 512
        for version in (first, second)
        for base, directories, files in os.walk(version)
        for entry in [*directories, *files]
    ) + sum(os.lstat(version).st_blocks * 512 for version in (first, second))
    assert naive - snapshot.store_bytes == 2 * shared


# -- creation_time, completeness, last_change ---------------------------------------

DESCRIPTOR_WITHOUT_TIME = "name: iris\nversion: v1\nmodule: ''\nlabels: {}\n"


@pytest.mark.parametrize(
    "creation_line",
    [
        "",
        "creation_time: 'yesterday at noon'\n",
        "creation_time: 12\n",
        "creation_time: [2026, 11, 1]\n",
        "creation_time: '{future}'\n",
    ],
    ids=["missing", "unparseable", "a-number", "a-list", "in-the-future"],
)
def test_creation_time_falls_back_to_the_directory_mtime_and_is_flagged(
    store: Path, creation_line: str
) -> None:
    future = datetime.now(tz=UTC) + timedelta(days=30)
    text = DESCRIPTOR_WITHOUT_TIME + creation_line.format(future=future.isoformat())
    path = make_version(store, "iris", "v1", descriptor_text=text)
    stamp = (NOW - timedelta(days=12)).timestamp()
    os.utime(path, (stamp, stamp))

    (record,) = census(store).versions

    assert record.creation_time_estimated
    assert record.creation_time == datetime.fromtimestamp(stamp, tz=UTC)
    assert record.complete
    assert record.problem is not None


def test_versions_with_the_same_labels_share_one_read_only_mapping(store: Path) -> None:
    for version in ("v1", "v2", "v3"):
        make_version(store, "iris", version, labels={"stage": "prod", "owner": "ml"})
    make_version(store, "iris", "v4", labels={"stage": "dev"})
    make_version(store, "iris", "v5")

    first, second, third, other, unlabelled = census(store).versions_of("models", "iris")

    assert first.labels is second.labels is third.labels
    assert dict(first.labels) == {"stage": "prod", "owner": "ml"}
    assert list(first.labels) == ["stage", "owner"]  # in the descriptor's order
    assert dict(other.labels) == {"stage": "dev"}
    assert dict(unlabelled.labels) == {}
    with pytest.raises(TypeError):
        first.labels["stage"] = "dev"  # type: ignore[index]


def test_a_record_holds_one_object_for_equal_times() -> None:
    changed = NOW - timedelta(days=1)
    record = VersionRecord(
        kind="models",
        name="iris",
        version="v1",
        path=Path("/store/models/iris/v1"),
        creation_time=NOW - timedelta(days=3),
        creation_time_estimated=False,
        labels={},
        bytes=4096,
        last_change=changed,
        complete=True,
        arrived=NOW - timedelta(days=1),  # equal, not the same object
    )

    assert record.arrived is record.last_change
    assert record.creation_time == NOW - timedelta(days=3)
    assert replace(record, arrived=NOW).arrived == NOW


def test_a_usable_creation_time_is_read_as_utc_and_not_flagged(store: Path) -> None:
    created = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    path = make_version(store, "iris", "v1", created=created, labels={"stage": "prod"})
    stamp = (NOW - timedelta(days=1)).timestamp()
    os.utime(path, (stamp, stamp))

    (record,) = census(store).versions

    assert record.creation_time == created
    assert record.creation_time.tzinfo is not None
    assert not record.creation_time_estimated
    assert record.complete
    assert record.problem is None
    assert record.labels == {"stage": "prod"}


def test_a_creation_time_with_an_offset_is_converted_to_utc(store: Path) -> None:
    text = DESCRIPTOR_WITHOUT_TIME + "creation_time: '2026-05-01T10:00:00+02:00'\n"
    make_version(store, "iris", "v1", descriptor_text=text)

    (record,) = census(store).versions

    assert record.creation_time == datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    assert not record.creation_time_estimated


def test_a_descriptor_too_large_to_read_makes_the_version_unreadable_not_half_written(
    store: Path,
) -> None:
    # valid YAML however it is cut: only its size gives it away (16 MiB for a model.yaml)
    text = "creation_time: '2026-01-01T00:00:00+00:00'\n" + "# padding\n" * (1700 << 10)
    make_version(store, "iris", "v1", descriptor_text=text)

    (record,) = census(store).versions

    assert not record.complete
    assert not record.readable
    assert record.problem == "descriptor is too large"


@pytest.mark.parametrize(
    "descriptor",
    [
        None,
        "name: iris\nlabels: [unclosed\n",
        b"\x00\x01\x02binary\x00weights",
        "",
        "- just\n- a list\n",
    ],
    ids=["missing", "corrupt", "binary", "empty", "not-a-mapping"],
)
def test_a_version_without_a_usable_descriptor_is_incomplete(
    store: Path, descriptor: str | bytes | None
) -> None:
    make_version(
        store,
        "iris",
        "v1",
        descriptor=descriptor is not None,
        descriptor_text=descriptor,
    )
    make_version(store, "iris", "v2")

    records = {record.version: record for record in census(store).versions}

    assert not records["v1"].complete
    assert records["v1"].problem is not None
    assert records["v2"].complete


def wait_past(timestamp: float, probe: Path) -> None:
    """Return once the file timestamps the kernel hands out are later than ``timestamp``."""
    probe.touch()
    while os.stat(probe).st_ctime <= timestamp:
        os.utime(probe)  # stamps the probe with the kernel's current file time


def test_last_change_shows_a_freshly_written_file_even_when_its_mtime_is_old(
    store: Path, tmp_path: Path
) -> None:
    old = (NOW - timedelta(days=10)).timestamp()
    path = make_version(store, "iris", "v1", changed=NOW - timedelta(days=10))
    (path / "sub").mkdir()
    (path / "sub" / "shard.bin").write_bytes(b"s" * 4096)
    for item in [path / "sub" / "shard.bin", path / "sub", path]:
        os.utime(item, (old, old))
    settled = max(os.lstat(item).st_ctime for item in [path, *path.rglob("*")])
    wait_past(settled, tmp_path / "clock-probe")
    # Rewrite a file in place (no directory entry changes) and backdate it, as a copy does.
    (path / "sub" / "shard.bin").write_bytes(b"t" * 4096)
    os.utime(path / "sub" / "shard.bin", (old, old))
    rewritten = os.lstat(path / "sub" / "shard.bin").st_ctime

    (record,) = census(store).versions

    assert max(os.lstat(item).st_mtime for item in [path, *path.rglob("*")]) == old
    assert rewritten > settled  # only the rewritten file's ctime tells
    assert record.last_change == datetime.fromtimestamp(rewritten, tz=UTC)


# -- races ---------------------------------------------------------------------------


class VanishingFileSystem(FileSystem):
    """Deletes ``victim`` the moment the census first asks ``trigger`` of it."""

    def __init__(self, victim: Path, on: str) -> None:
        self.victim = victim
        self.on = on
        self.fired = False

    def _maybe_vanish(self, path: Path, call: str) -> None:
        if not self.fired and call == self.on and Path(path) == self.victim:
            self.fired = True
            shutil.rmtree(self.victim)

    def scandir(self, path: Path) -> list[os.DirEntry[str]]:
        self._maybe_vanish(path, "scandir")
        return super().scandir(path)

    def lstat(self, path: Path) -> os.stat_result:
        self._maybe_vanish(path, "lstat")
        return super().lstat(path)

    def read_bytes(self, path: Path, limit: int) -> bytes:
        self._maybe_vanish(Path(path).parent, "read_descriptor")
        return super().read_bytes(path, limit)


@pytest.mark.parametrize("on", ["scandir", "lstat", "read_descriptor"])
def test_a_version_directory_vanishing_mid_scan_is_simply_gone(store: Path, on: str) -> None:
    make_version(store, "iris", "v1")
    victim = make_version(store, "iris", "v2")
    make_version(store, "iris", "v3")
    filesystem = VanishingFileSystem(victim, on)

    snapshot = census(store, filesystem=filesystem)

    assert filesystem.fired
    assert [record.version for record in snapshot.versions] == ["v1", "v3"]
    assert snapshot.problems == ()


def test_a_name_directory_vanishing_mid_scan_is_simply_gone(store: Path) -> None:
    make_version(store, "iris", "v1")
    victim = make_version(store, "lily", "v1").parent
    make_version(store, "rose", "v1")
    filesystem = VanishingFileSystem(victim, "scandir")

    snapshot = census(store, filesystem=filesystem)

    assert filesystem.fired
    assert [record.name for record in snapshot.versions] == ["iris", "rose"]
    assert snapshot.problems == ()


class FileVanishingFileSystem(FileSystem):
    """Lists a version directory, then deletes a file it listed before the census stats it."""

    def __init__(self, directory: Path, file_name: str) -> None:
        self.directory = directory
        self.file_name = file_name
        self.fired = False

    def scandir(self, path: Path) -> list[os.DirEntry[str]]:
        entries = super().scandir(path)
        if Path(path) == self.directory and not self.fired:
            self.fired = True
            (self.directory / self.file_name).unlink()
        return entries


def test_a_file_vanishing_between_listing_and_stat_is_skipped(store: Path) -> None:
    path = make_version(store, "iris", "v1", size=200_000)
    filesystem = FileVanishingFileSystem(path, "weights.bin")

    (record,) = census(store, filesystem=filesystem).versions

    assert filesystem.fired
    assert record.complete
    assert record.bytes == on_disk_bytes(path)
    assert record.bytes < 200_000


# -- bentos -----------------------------------------------------------------------------


def test_bentos_are_read_from_bento_yaml_with_their_own_pointers(store: Path) -> None:
    created = NOW - timedelta(days=3)
    make_version(store, "svc", "b1", kind="bentos", created=created, labels={"team": "ml"})
    make_version(store, "svc", "b2", kind="bentos", set_latest=True)
    make_version(store, "svc", "m1")
    point_latest(store, "svc", "m1")

    snapshot = census(store)

    bentos = snapshot.versions_of("bentos", "svc")
    assert [record.version for record in bentos] == ["b2", "b1"]  # b2 is 30 days old
    assert all(record.complete for record in bentos)
    assert bentos[1].creation_time == created
    assert bentos[1].labels == {"team": "ml"}
    assert snapshot.pointer_target("bentos", "svc") == "b2"
    assert snapshot.pointer_target("models", "svc") == "m1"
    assert [record.version for record in snapshot.versions_of("models", "svc")] == ["m1"]


def test_a_bento_with_only_a_model_yaml_is_incomplete(store: Path) -> None:
    path = make_version(store, "svc", "b1", kind="bentos", descriptor=False)
    (path / "model.yaml").write_text("name: svc\nversion: b1\n")

    (record,) = census(store).versions

    assert record.kind == "bentos"
    assert not record.complete


def test_only_the_configured_kinds_are_scanned(store: Path) -> None:
    make_version(store, "iris", "v1")
    make_version(store, "svc", "b1", kind="bentos")

    snapshot = census(store, kinds=("bentos",))

    assert [(record.kind, record.tag) for record in snapshot.versions] == [("bentos", "svc:b1")]


def test_a_missing_store_root_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        census(tmp_path / "no-such-store")

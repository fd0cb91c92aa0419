"""Archive before delete and restore, on real directories (and a real full tmpfs).

Every archive is opened here with :mod:`tarfile` exactly as BentoML's import
reads it: the extension picks the compression, members are the version's
files relative to it, with no hard links. The compatibility test with the
real package is tests/integration/test_archive_bentoml.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storewarden import archive
from storewarden import restore as restore_module
from storewarden.archive import Archiver, RestoreError, UnsafeArchiveDirError
from storewarden.config import ConfigError, build_config
from storewarden.engine import Engine
from storewarden.prune import Operations
from storewarden.restore import restore
from storewarden.store import census, census_version
from tests.conftest import Audit
from tests.storebuilder import NOW, make_bento, make_version, point_latest, read_latest

MIB = 1024 * 1024


def engine_for(
    store: Path,
    archive_dir: Path | None,
    clock: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
    **archive_options: Any,
) -> Engine:
    """Return an engine whose retention keeps one version per name, archiving to ``archive_dir``."""
    data: dict[str, Any] = {
        "store": str(store),
        "trigger": {"high_percent": 99.9, "low_percent": 99.0},
        # in_use off: another test run on the machine may name the same tags.
        "protect": {"settle": 0, "min_age": 0, "abandoned_after": "1h", "in_use": False},
        "retention": {"max_versions": 1},
    }
    if archive_dir is not None:
        data["archive"] = {"dir": str(archive_dir), **archive_options}
    return Engine(build_config(data), clock=clock)


def three_versions(store: Path, size: int = 4096, name: str = "iris") -> list[Path]:
    """Create v0, v1, v2 of a name (v2 newest and latest), each with a nested file."""
    now = datetime.now(tz=UTC)
    paths = []
    for index in range(3):
        path = make_version(
            store,
            name,
            f"v{index}",
            created=now - timedelta(days=10 - index),
            size=size,
            labels={"stage": "dev"},
        )
        (path / "sub").mkdir()
        (path / "sub" / "vocab.txt").write_text(f"vocabulary {index}\n")
        paths.append(path)
    point_latest(store, name, "v2")
    return paths


def digest_tree(root: Path) -> dict[str, str]:
    """Return relative path -> sha256 (or 'dir') of everything under ``root``."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        found[relative] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def digest_archive(path: Path) -> dict[str, str]:
    """Return member path -> sha256 (or 'dir') of an archive (any compression)."""
    found = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar.getmembers():
            assert not member.islnk(), "BentoML's import rejects hard links"
            name = member.name.removeprefix("./")
            if member.isdir():
                found[name] = "dir"
            else:
                content = tar.extractfile(member)
                assert content is not None
                found[name] = hashlib.sha256(content.read()).hexdigest()
    return found


@pytest.mark.parametrize(
    ("archive_format", "suffix", "magic"),
    [
        ("tar", ".bentomodel.tar", b""),  # a plain tar starts with its first member's name
        ("gz", ".bentomodel.gz", b"\x1f\x8b"),
        ("xz", ".bentomodel", b"\xfd7zXZ\x00"),  # what `bentoml models export` writes
    ],
)
def test_a_removed_version_is_archived_first_in_the_format_its_extension_names(
    store: Path, tmp_path: Path, audit: Audit, archive_format: str, suffix: str, magic: bytes
) -> None:
    paths = three_versions(store)
    before = {path.name: digest_tree(path) for path in paths}
    archives = tmp_path / "archive"
    archives.mkdir()

    result = engine_for(store, archives, format=archive_format).cycle()

    assert [outcome.record.version for outcome in result.removed] == ["v0", "v1"]
    written = audit.named("archive_written")
    assert [(event["version"], event["kind"]) for event in written] == [
        ("v0", "models"),
        ("v1", "models"),
    ]
    for event in written:
        path = Path(event["path"])
        assert path.name == f"iris+{event['version']}{suffix}"
        assert event["bytes"] == path.stat().st_size
        assert digest_archive(path) == before[event["version"]]
        head = path.read_bytes()[:512]
        assert head.startswith(magic) if magic else head[257:262] == b"ustar"
    # Each archive is on disk before its version starts to leave the store.
    names = [(event["event"], event.get("version")) for event in audit.events]
    for version in ("v0", "v1"):
        written_at = names.index(("archive_written", version))
        assert written_at < names.index(("version_removed", version))
    assert sorted(path.name for path in archives.iterdir()) == [
        f"iris+v0{suffix}",
        f"iris+v1{suffix}",
    ]


def test_an_explicit_delete_archives_too(store: Path, tmp_path: Path, audit: Audit) -> None:
    three_versions(store)
    (tmp_path / "archive").mkdir()
    engine = engine_for(store, tmp_path / "archive")

    engine.delete(["iris:v2"])

    (written,) = audit.named("archive_written")
    assert written["version"] == "v2"
    assert read_latest(store, "iris") == "v1"


def test_an_abandoned_half_written_version_is_removed_without_an_archive(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    make_version(store, "iris", "v1", set_latest=True)
    make_version(store, "iris", "half", descriptor=False)
    (tmp_path / "archive").mkdir()
    later = datetime.now(tz=UTC) + timedelta(days=2)  # ctime cannot be set back: move the clock

    result = engine_for(store, tmp_path / "archive", clock=lambda: later).cycle()

    assert [(outcome.record.version) for outcome in result.removed] == ["half"]
    assert not audit.named("archive_written")
    assert list((tmp_path / "archive").iterdir()) == []


def test_without_archive_dir_nothing_is_archived(store: Path, audit: Audit) -> None:
    three_versions(store)

    result = engine_for(store, None).cycle()

    assert len(result.removed) == 2
    assert not audit.named("archive_written")


@pytest.mark.tmpfs
def test_a_version_that_cannot_be_archived_is_not_removed(
    store: Path, tmpfs: Callable[[str], Path], audit: Audit
) -> None:
    paths = three_versions(store, size=2 * MIB)
    full = tmpfs("1m")  # too small for one 2 MiB archive: ENOSPC half-way through

    result = engine_for(store, full).cycle()

    assert result.removed == ()
    assert all(path.is_dir() for path in paths)
    failures = audit.named("archive_failed")
    assert [event["version"] for event in failures] == ["v0", "v1"]
    assert "No space left on device" in failures[0]["error"]
    assert not audit.named("version_removed")
    assert list(full.iterdir()) == [], "a failed archive leaves no partial file"
    assert all(reason.startswith("archive failed") for _record, reason in result.failed)


def test_a_missing_archive_dir_whose_parent_is_missing_too_keeps_every_version(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    paths = three_versions(store)

    result = engine_for(store, tmp_path / "no-disk" / "archive").cycle()

    assert result.removed == ()
    assert all(path.is_dir() for path in paths)
    assert "does not exist" in audit.named("archive_failed")[0]["error"]
    assert not (tmp_path / "no-disk").exists()


def test_a_missing_archive_dir_is_created_when_its_parent_exists(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    three_versions(store)
    archives = tmp_path / "archive"

    result = engine_for(store, archives).cycle()

    assert [outcome.record.version for outcome in result.removed] == ["v0", "v1"]
    assert stat.S_IMODE(os.stat(archives).st_mode) == 0o700
    assert [event["path"] for event in audit.named("archive_dir_created")] == [str(archives)]
    assert sorted(path.name for path in archives.iterdir()) == [
        "iris+v0.bentomodel.tar",
        "iris+v1.bentomodel.tar",
    ]


def test_the_archive_dir_is_kept_under_max_size_oldest_first(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    archives = tmp_path / "archive"
    archives.mkdir()
    for name in ("alpha", "beta", "gamma"):
        three_versions(store, size=100_000, name=name)
    # room for three archives of ~100 kB: the fourth and later push the oldest out
    result = engine_for(store, archives, max_size="350kB").cycle()

    assert len(result.removed) == 6
    written = [event["path"] for event in audit.named("archive_written")]
    removed = audit.named("archive_removed")
    assert [event["path"] for event in removed] == written[:3]
    assert all(event["reason"] == "max_size" for event in removed)
    remaining = sorted(str(path) for path in archives.iterdir())
    assert remaining == sorted(written[3:])
    assert sum(path.stat().st_size for path in archives.iterdir()) <= 350_000


def test_an_archive_larger_than_max_size_fails_without_giving_up_older_ones(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    archives = tmp_path / "archive"
    archives.mkdir()
    older = archives / "old+v1.bentomodel.tar"
    older.write_bytes(b"x" * 10_000)

    three_versions(store, size=100_000)

    result = engine_for(store, archives, max_size="50kB").cycle()

    assert result.removed == ()
    assert "more than archive.max_size" in audit.named("archive_failed")[0]["error"]
    assert sorted(path.name for path in archives.iterdir()) == ["old+v1.bentomodel.tar"]
    assert not audit.named("archive_removed")


def test_only_archives_count_against_the_budget_and_stale_partials_are_cleared(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    archives = tmp_path / "archive"
    archives.mkdir()
    (archives / "README").write_bytes(b"r" * 500_000)  # not an archive: never counted or removed
    stale = archives / f".iris+v0.bentomodel.tar{archive.PARTIAL_MARK}0123456789ab"
    stale.write_bytes(b"p" * 1000)
    old = time.time() - 2 * archive.PARTIAL_STALE_SECONDS
    os.utime(stale, (old, old))
    fresh = archives / f".other+v1.bentomodel.tar{archive.PARTIAL_MARK}ba5e0123ba5e"
    fresh.write_bytes(b"p")  # another warden's archive in progress
    three_versions(store)

    result = engine_for(store, archives, max_size="1MB").cycle()

    assert len(result.removed) == 2
    assert (archives / "README").exists()
    assert fresh.exists()
    assert not stale.exists()
    (cleared,) = audit.named("archive_removed")
    assert (cleared["path"], cleared["reason"]) == (str(stale), "partial")


def test_a_symlink_leaving_the_version_makes_it_unarchivable(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    paths = three_versions(store)
    os.symlink("/etc/hostname", paths[0] / "escape")
    os.symlink("sub/vocab.txt", paths[1] / "inside")
    (tmp_path / "archive").mkdir()

    result = engine_for(store, tmp_path / "archive").cycle()

    assert [outcome.record.version for outcome in result.removed] == ["v1"]
    assert paths[0].is_dir()
    assert "outside the version" in audit.named("archive_failed")[0]["error"]
    with tarfile.open(tmp_path / "archive" / "iris+v1.bentomodel.tar") as tar:
        link = tar.getmember("inside")
    assert link.issym()
    assert link.linkname == "sub/vocab.txt"


def test_hard_links_are_archived_as_plain_files(store: Path, tmp_path: Path) -> None:
    paths = three_versions(store)
    os.link(paths[0] / "weights.bin", paths[0] / "weights-copy.bin")
    (tmp_path / "archive").mkdir()

    engine_for(store, tmp_path / "archive").cycle()

    with tarfile.open(tmp_path / "archive" / "iris+v0.bentomodel.tar") as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert members["weights-copy.bin"].isfile()
    assert members["weights-copy.bin"].size == members["weights.bin"].size


# -- where the archives may live -------------------------------------------------------


@pytest.mark.parametrize("inside", ["models", "models/iris", "bentos/archive"])
def test_an_archive_dir_inside_models_or_bentos_is_a_config_error(
    tmp_path: Path, inside: str
) -> None:
    store = tmp_path / "bentoml"
    with pytest.raises(ConfigError, match=r"at 'archive\.dir'.*BentoML would break"):
        build_config({"store": str(store), "archive": {"dir": str(store / inside)}})


def test_a_relative_archive_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"at 'archive\.dir': must be an absolute"):
        build_config({"store": str(tmp_path), "archive": {"dir": "archive"}})


def test_an_archive_dir_reaching_into_models_through_a_symlink_is_refused_at_start(
    store: Path, tmp_path: Path
) -> None:
    link = tmp_path / "archive-link"
    link.symlink_to(store / "models")
    config = build_config({"store": str(store), "archive": {"dir": str(link)}})

    with pytest.raises(UnsafeArchiveDirError, match="inside"):
        Engine(config)


# -- restore ------------------------------------------------------------------------


def archived(store: Path, tmp_path: Path, *, versions: tuple[str, ...]) -> dict[str, Path]:
    """Archive and delete ``versions`` of iris (v0..v2, v2 latest); return version -> archive."""
    three_versions(store)
    archives = tmp_path / "archive"
    archives.mkdir(exist_ok=True)
    engine_for(store, archives).delete([f"iris:{version}" for version in versions])
    return {version: archives / f"iris+{version}.bentomodel.tar" for version in versions}


def restore_into(
    store: Path, archive_path: Path, operations: Operations | None = None
) -> restore_module.Restored:
    """Restore as the CLI does: prepare, lock, recover, restore."""
    engine = Engine(build_config({"store": str(store)}), operations=operations)
    engine.pruner.prepare()
    with engine.lock.held():
        engine.recover()
        return restore(archive_path, engine.pruner, engine.config.kinds)


def test_restoring_the_newest_version_brings_it_back_and_points_latest_at_it(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    archives = archived(store, tmp_path, versions=("v2",))
    assert read_latest(store, "iris") == "v1"
    expected = digest_archive(archives["v2"])

    restored = restore_into(store, archives["v2"])

    path = store / "models" / "iris" / "v2"
    assert restored.path == path
    assert digest_tree(path) == expected
    assert read_latest(store, "iris") == "v2"
    assert (path.stat().st_mode & 0o777) == 0o700
    record = census_version("models", "iris", path)
    assert record is not None
    assert record.complete
    assert record.labels == {"stage": "dev"}
    (event,) = audit.named("version_restored")
    assert (event["version"], event["archive"]) == ("v2", str(archives["v2"]))
    (change,) = [e for e in audit.named("latest_changed") if e["reason"] == "restored"]
    assert (change["old"], change["new"]) == ("v1", "v2")
    assert list((store / ".storewarden" / "tmp").iterdir()) == []


def test_restoring_an_older_version_leaves_latest_alone(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    archives = archived(store, tmp_path, versions=("v0",))

    restored = restore_into(store, archives["v0"])

    assert restored.pointer_new is None
    assert (store / "models" / "iris" / "v0" / "model.yaml").is_file()
    assert read_latest(store, "iris") == "v2"
    assert not [e for e in audit.named("latest_changed") if e["reason"] == "restored"]


def test_restoring_a_name_that_was_gone_recreates_its_directory_and_pointer(
    store: Path, tmp_path: Path
) -> None:
    archives = archived(store, tmp_path, versions=("v0", "v1", "v2"))
    assert not (store / "models" / "iris").exists()

    restore_into(store, archives["v1"])

    assert read_latest(store, "iris") == "v1"


def test_a_version_already_in_the_store_is_not_restored(store: Path, tmp_path: Path) -> None:
    archives = archived(store, tmp_path, versions=("v0",))
    restore_into(store, archives["v0"])
    before = digest_tree(store / "models")

    with pytest.raises(RestoreError, match="already in the store"):
        restore_into(store, archives["v0"])
    assert digest_tree(store / "models") == before


def descriptor_of(name: str, version: str) -> bytes:
    """Return a model.yaml naming ``name:version``."""
    return (
        f"name: {name}\nversion: {version}\ncreation_time: '2026-11-26T12:00:00+00:00'\n".encode()
    )


def hostile_archive(
    path: Path,
    *members: tarfile.TarInfo,
    data: bytes = b"",
    descriptor: bytes = descriptor_of("iris", "evil1"),
) -> Path:
    """Write a tar holding ``descriptor`` as model.yaml, then ``members`` (files hold ``data``)."""
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("model.yaml")
        info.size = len(descriptor)
        tar.addfile(info, io.BytesIO(descriptor))
        for member in members:
            member.size = len(data) if member.isfile() else 0
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    """Return a tar member of the given type."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("hostile", "message"),
    [
        (member("../escape.txt"), "leaves the version"),
        (member("/etc/evil"), "absolute"),
        (member("link", tarfile.SYMTYPE, "../../outside"), "symlink leaves"),
        (member("hard", tarfile.LNKTYPE, "model.yaml"), "hard link"),
        (member("fifo", tarfile.FIFOTYPE), "special file"),
        # Each link stays inside on its own; through the first, the second leads out.
        (
            [
                member("a/b/c/d/e/l", tarfile.SYMTYPE, "../../../../.."),
                member("m", tarfile.SYMTYPE, "a/b/c/d/e/l/../../../../.."),
                member("m/escape.txt"),
            ],
            "nested under the symlink",
        ),
        (
            [member("sub", tarfile.DIRTYPE), member("l", tarfile.SYMTYPE, "sub"), member("l/x")],
            "nested under the symlink",
        ),
        # A directory member on a link: its mode would be set through the link.
        ([member("d", tarfile.SYMTYPE, "."), member("d", tarfile.DIRTYPE)], "second member"),
        ([member("twice"), member("twice")], "second member"),
    ],
)
def test_an_archive_with_an_unsafe_member_restores_nothing(
    store: Path,
    tmp_path: Path,
    hostile: tarfile.TarInfo | list[tarfile.TarInfo],
    message: str,
) -> None:
    members = hostile if isinstance(hostile, list) else [hostile]
    path = hostile_archive(tmp_path / "evil.bentomodel.tar", *members, data=b"data")

    with pytest.raises(RestoreError, match=message):
        restore_into(store, path)
    assert not (store / "models" / "iris").exists()
    assert list((store / ".storewarden" / "tmp").iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def chain_out(last: str) -> list[tarfile.TarInfo]:
    """Links each inside by its own text, leading out together: ``weights.pkl -> r8/<last>``.

    r8 is some nine levels above the version: ``/`` under pytest's tmp_path.
    """
    chain = [member("b/c", tarfile.SYMTYPE, "..")]  # the version itself
    chain.append(member("r0", tarfile.SYMTYPE, "b/c/.."))  # reads as b: is the version's parent
    chain += [member(f"r{step}", tarfile.SYMTYPE, f"r{step - 1}/..") for step in range(1, 9)]
    chain.append(member("weights.pkl", tarfile.SYMTYPE, f"r8/{last}"))
    return chain


@pytest.mark.parametrize(
    "members",
    [
        chain_out("etc/passwd"),
        # Each link names one that comes later in the archive.
        list(reversed(chain_out("etc/passwd"))),
        # Dangling: it resolves to nothing, yet outside.
        chain_out("no/such/file"),
    ],
    ids=["in-order", "reversed", "dangling"],
)
def test_an_archive_whose_symlink_chain_resolves_outside_the_version_restores_nothing(
    store: Path, tmp_path: Path, members: list[tarfile.TarInfo]
) -> None:
    path = hostile_archive(tmp_path / "evil.bentomodel.tar", *members)

    with pytest.raises(RestoreError, match="symlink resolves outside the version"):
        restore_into(store, path)
    assert not (store / "models" / "iris").exists()
    assert list((store / ".storewarden" / "tmp").iterdir()) == []
    assert list((store / ".storewarden" / "trash").iterdir()) == []


@pytest.mark.parametrize("linked", ["name", "kind", "name-a-file"])
def test_a_restore_never_writes_through_a_symlinked_kind_or_name_directory(
    store: Path, tmp_path: Path, linked: str
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    if linked == "name":
        (store / "models" / "linkname").symlink_to(victim)
    elif linked == "kind":
        (store / "models").rmdir()
        (store / "models").symlink_to(victim)
    else:
        (store / "models" / "linkname").write_bytes(b"")
    path = hostile_archive(
        tmp_path / "evil.bentomodel.tar", descriptor=descriptor_of("linkname", "v1")
    )

    with pytest.raises(RestoreError, match=r"(a symlink|not a directory): restore writes"):
        restore_into(store, path)
    assert list(victim.iterdir()) == []
    assert list((store / ".storewarden" / "tmp").iterdir()) == []
    assert list((store / ".storewarden" / "trash").iterdir()) == []  # no intent either


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        # A directory at latest breaks BentoML: get("evil:latest") reads it as the pointer.
        ("evil", "latest", "latest is the pointer"),
        ("storewarden-removing-x", "v1", "reserved"),
        ("Iris", "v1", "BentoML lower-cases"),
        ("iris", "V1", "BentoML lower-cases"),
        ("iris", '"v1\\n"', "not a valid tag"),  # re's $ matches before a final newline
        ("iris", "1.0", "must be text"),  # a float, as BentoML's own Tag(...) cannot take
        ("iris", "-v1", "not a valid tag"),
        ("iris", "v" * 64, "not a valid tag"),
    ],
)
def test_an_archive_naming_no_valid_new_tag_restores_nothing(
    store: Path, tmp_path: Path, name: str, version: str, message: str
) -> None:
    path = hostile_archive(
        tmp_path / "evil.bentomodel.tar", descriptor=descriptor_of(name, version)
    )

    with pytest.raises(RestoreError, match=message):
        restore_into(store, path)
    assert list((store / "models").iterdir()) == []
    assert list((store / ".storewarden" / "tmp").iterdir()) == []
    assert list((store / ".storewarden" / "trash").iterdir()) == []


class Swapping(Operations):
    """Real operations that, at one step, swap a name directory for a symlink out of the store."""

    def __init__(self, step_name: str, at: Callable[[Path], bool], name_dir: Path, out: Path):
        self.step_name, self.at, self.name_dir, self.out = step_name, at, name_dir, out
        self.swapped = False

    def step(self, name: str, path: Path) -> None:
        if self.swapped or name != self.step_name or not self.at(path):
            return
        self.swapped = True
        os.rename(self.name_dir, self.out)  # what was in it goes along, out of the store
        self.name_dir.symlink_to(self.out)


@pytest.mark.parametrize("moment", ["before the version's rename", "before the pointer's rename"])
def test_a_name_directory_swapped_for_a_symlink_during_a_restore_is_never_written_through(
    store: Path, tmp_path: Path, moment: str
) -> None:
    name_dir, out = store / "models" / "fresh", tmp_path / "out"
    if moment == "before the version's rename":
        # Just after restore created the name directory.
        swap = Swapping("fsync_dir", lambda path: path == store / "models", name_dir, out)
    else:
        # The version is in; the pointer is being written aside.
        swap = Swapping("fsync_file", lambda path: path.name.startswith("latest-"), name_dir, out)
    path = hostile_archive(
        tmp_path / "fresh.bentomodel.tar", descriptor=descriptor_of("fresh", "v1")
    )

    with pytest.raises((RestoreError, OSError), match="a symlink"):
        restore_into(store, path, operations=swap)
    assert swap.swapped
    assert not (out / "latest").exists()
    assert not (out / "v1").exists() or moment == "before the pointer's rename"
    assert list((store / ".storewarden" / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a tar at all", "not a tar archive"),
        (None, "neither a model.yaml nor a bento.yaml"),
    ],
)
def test_what_is_not_a_version_archive_is_refused(
    store: Path, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "thing.tar"
    if content is None:
        with tarfile.open(path, "w") as tar:
            tar.addfile(tarfile.TarInfo("empty.txt"), io.BytesIO(b""))
    else:
        path.write_bytes(content)

    with pytest.raises(RestoreError, match=message):
        restore_into(store, path)


def test_a_truncated_archive_leaves_neither_the_version_nor_its_staging(
    store: Path, tmp_path: Path
) -> None:
    archives = archived(store, tmp_path, versions=("v0",))
    data = archives["v0"].read_bytes()
    archives["v0"].write_bytes(data[: len(data) // 2])

    with pytest.raises((RestoreError, tarfile.TarError, OSError)):
        restore_into(store, archives["v0"])
    assert not (store / "models" / "iris" / "v0").exists()
    assert list((store / ".storewarden" / "tmp").iterdir()) == []


def test_an_archiver_lists_only_its_own_archives_oldest_first(tmp_path: Path) -> None:
    names = [
        "b+v1.bento",
        "a+v1.bentomodel.tar",
        "a+v1~2.bentomodel.gz",
        # What the warden never writes: `bentoml models export` (name-version), a
        # user's backup, an older warden's dash-named archive, names with no valid tag.
        "wine-v1.bentomodel",
        "mybackup.bentomodel",
        "b-v1.bento",
        "Iris+v1.bentomodel.tar",
        "iris+-v1.bentomodel.tar",
        "+v1.bento",
        "iris+.bento",
        "iris+v1+v2.bento",
        "iris+v1~.bento",
        "iris+v1~1.bento",
        "notes.txt",
        "c.tar",
    ]
    for index, name in enumerate(names):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (1000 + index, 1000 + index))
    archiver = Archiver(tmp_path, store=tmp_path / "store")

    assert [entry.path.name for entry in archiver.archives()] == [
        "b+v1.bento",
        "a+v1.bentomodel.tar",
        "a+v1~2.bentomodel.gz",
    ]


def test_the_budget_never_counts_or_removes_files_the_warden_did_not_write(
    store: Path, tmp_path: Path, audit: Audit
) -> None:
    archives = tmp_path / "archive"
    archives.mkdir()
    old = time.time() - 2 * archive.PARTIAL_STALE_SECONDS
    foreign = {
        "wine-v1.bentomodel": b"w" * 200_000,  # `bentoml models export wine:v1 DIR`
        "mybackup.bentomodel": b"x\n",
        "iris-v0.bentomodel.tar": b"o" * 1000,  # an older warden's, left alone
        f".notes.txt{archive.PARTIAL_MARK}mine": b"n",  # hidden, old, not the warden's
    }
    for name, content in foreign.items():
        (archives / name).write_bytes(content)
        os.utime(archives / name, (old, old))  # oldest of all: they would go first
    three_versions(store, size=100_000)

    result = engine_for(store, archives, max_size="150kB").cycle()

    assert len(result.removed) == 2
    for name, content in foreign.items():
        assert (archives / name).read_bytes() == content
    removed = [event["path"] for event in audit.named("archive_removed")]
    written = [event["path"] for event in audit.named("archive_written")]
    assert removed == written[:1]
    assert sorted(path.name for path in archives.iterdir()) == sorted(
        [*foreign, "iris+v1.bentomodel.tar"]
    )


def test_versions_whose_dashed_names_would_collide_get_archives_of_their_own(
    store: Path, tmp_path: Path
) -> None:
    # "resnet-50:v1" and "resnet:50-v1" would both be "resnet-50-v1.bentomodel.tar".
    first = make_version(store, "resnet-50", "v1", created=NOW - timedelta(days=30))
    second = make_version(store, "resnet", "50-v1", created=NOW - timedelta(days=29))
    archives = tmp_path / "archive"
    archives.mkdir()
    archiver = Archiver(archives, store=store)

    written = [archiver.write(record) for record in census(store).versions]

    assert sorted(path.name for path in written) == [
        "resnet+50-v1.bentomodel.tar",
        "resnet-50+v1.bentomodel.tar",
    ]
    assert {archive.inspect_archive(path).name for path in written} == {"resnet", "resnet-50"}
    assert digest_archive(archives / "resnet-50+v1.bentomodel.tar") == digest_tree(first)
    assert digest_archive(archives / "resnet+50-v1.bentomodel.tar") == digest_tree(second)


def test_an_archive_already_there_is_never_written_over(store: Path, tmp_path: Path) -> None:
    make_version(store, "iris", "v1", created=NOW - timedelta(days=30))
    archives = tmp_path / "archive"
    archives.mkdir()
    earlier = archives / "iris+v1.bentomodel.tar"
    earlier.write_bytes(b"an earlier archive of iris:v1, restored and removed again")
    (record,) = census(store).versions

    written = Archiver(archives, store=store).write(record)

    assert written.name == "iris+v1~2.bentomodel.tar"
    assert earlier.read_bytes().startswith(b"an earlier archive")
    assert archive.inspect_archive(written).version == "v1"


def test_a_bento_is_not_restored_before_the_models_it_needs(store: Path, tmp_path: Path) -> None:
    make_version(store, "iris", "m1", created=NOW - timedelta(days=30))
    bento = make_bento(store, "svc", "b1", needs=("iris:m1",), created=NOW - timedelta(days=20))
    archives = tmp_path / "archive"
    archives.mkdir()
    archiver = Archiver(archives, store=store)
    snapshot = census(store)
    model_archive = archiver.write(snapshot.find("models", "iris", "m1"))  # type: ignore[arg-type]
    bento_archive = archiver.write(snapshot.find("bentos", "svc", "b1"))  # type: ignore[arg-type]
    shutil.rmtree(bento)
    shutil.rmtree(store / "models" / "iris" / "m1")
    engine = engine_for(store, archives)
    engine.pruner.prepare()

    with pytest.raises(RestoreError, match=r"needs iris:m1.*restore the model first"):
        restore(bento_archive, engine.pruner, ("models", "bentos"))
    assert not bento.exists()

    restore(model_archive, engine.pruner, ("models", "bentos"))
    restore(bento_archive, engine.pruner, ("models", "bentos"))
    assert (bento / "bento.yaml").is_file()

"""A version a running process uses stays while it runs and goes once it exits.

Real processes hold the oldest version of a name in each of the ways the
in-use scan knows: a file of it open, a file of it memory-mapped (the file
descriptor closed, so only the mapping shows), their working directory inside
it, its path or its tag on their command line, its path there through a
symlink to the store or a symlink to the version itself. ``storewarden
prune`` (a subprocess) runs under a retention that wants every version but
the newest gone: it must leave the held one, remove the rest, and remove the
held one too on the first prune after the holder exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from storewarden.inuse import latest_version
from storewarden.store import census
from tests.reliability.support import run_cli
from tests.storebuilder import NOW, make_version, point_latest

pytestmark = pytest.mark.slow

DAY = timedelta(days=1)
# A name no other process on the machine names: a tag on any command line protects it.
NAME = "numbat"

# Waits for stdin to close, after saying it holds what it holds. HOLD names the file
# through the environment, so the command line does not name it.
OPEN_FILE = """
import os, sys
handle = open(os.environ["HOLD"], "rb")
print("holding", flush=True)
sys.stdin.read()
"""
MAP_FILE = """
import mmap, os, sys
with open(os.environ["HOLD"], "rb") as handle:
    mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
print("holding", flush=True)  # the descriptor is closed: only /proc/<pid>/maps shows it
sys.stdin.read()
"""
WAIT = """
import sys
print("holding", flush=True)
sys.stdin.read()
"""

# Holds (a file when argv[1] is "open", else its cwd or arguments) from a thread, after
# its main thread has exited (SYS_exit ends one thread): /proc/<pid> then shows no
# command line, descriptors or mappings, only /proc/<pid>/task/<tid> does.
LEADER_EXITS = """
import ctypes, os, platform, sys, threading, time

def hold():
    handle = open(os.environ["HOLD"], "rb") if sys.argv[1] == "open" else None
    while open(f"/proc/{os.getpid()}/cmdline", "rb").read():
        time.sleep(0.01)  # until the main thread is gone
    print("holding", flush=True)
    sys.stdin.read()
    os._exit(0)

threading.Thread(target=hold).start()
ctypes.CDLL(None).syscall({"x86_64": 60, "aarch64": 93}[platform.machine()], 0)
"""


@dataclass(frozen=True)
class Holder:
    """How a process holds the version: its script, arguments, working directory, environment."""

    name: str
    command: Callable[[Path, Path], list[str]]  # (version, directory of links to it) -> argv
    cwd: bool = False
    hold_file: bool = False


HOLDERS = [
    Holder("a-file-open", lambda _v, _l: [sys.executable, "-c", OPEN_FILE], hold_file=True),
    Holder("a-file-mapped", lambda _v, _l: [sys.executable, "-c", MAP_FILE], hold_file=True),
    Holder("the-working-directory", lambda _v, _l: [sys.executable, "-c", WAIT], cwd=True),
    Holder("its-path-in-the-arguments", lambda v, _l: [sys.executable, "-c", WAIT, str(v)]),
    Holder(
        "a-file-of-it-in-an-option",
        lambda v, _l: [sys.executable, "-c", WAIT, f"--weights={v / 'weights.bin'}"],
    ),
    Holder("its-tag-in-the-arguments", lambda _v, _l: [sys.executable, "-c", WAIT, f"{NAME}:v1"]),
    # BentoML lower-cases a tag before it looks it up.
    Holder(
        "its-tag-in-upper-case",
        lambda _v, _l: [sys.executable, "-c", WAIT, f"{NAME.upper()}:V1"],
    ),
    Holder(
        "its-tag-inside-other-characters",
        lambda _v, _l: [sys.executable, "-c", WAIT, f"model({NAME}:v1)", f"[resnet:v9,{NAME}:v1]"],
    ),
    Holder(
        "its-path-through-a-symlinked-store",
        lambda _v, links: [sys.executable, "-c", WAIT, f"{links}/store/models/{NAME}/v1"],
    ),
    Holder(
        "a-symlink-to-it-in-the-arguments",
        lambda _v, links: [sys.executable, "-c", WAIT, f"{links}/current"],
    ),
    Holder(
        "a-file-open-by-a-thread-its-main-thread-gone",
        lambda _v, _l: [sys.executable, "-c", LEADER_EXITS, "open"],
        hold_file=True,
    ),
    Holder(
        "the-working-directory-its-main-thread-gone",
        lambda _v, _l: [sys.executable, "-c", LEADER_EXITS, "-"],
        cwd=True,
    ),
    Holder(
        "its-tag-in-the-arguments-its-main-thread-gone",
        lambda _v, _l: [sys.executable, "-c", LEADER_EXITS, "-", f"{NAME}:v1"],
    ),
]


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    """Holder processes, ended (stdin closed) whatever happens."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.communicate("", timeout=30)


@pytest.mark.parametrize("holder", HOLDERS, ids=[holder.name for holder in HOLDERS])
def test_a_version_in_use_stays_while_its_holder_runs_and_goes_when_it_exits(
    tmp_path: Path, holder: Holder, holders: list[subprocess.Popen[str]]
) -> None:
    store = tmp_path / "bentoml"
    versions = [
        make_version(store, NAME, f"v{index}", created=NOW - (10 - index) * DAY)
        for index in (1, 2, 3)
    ]
    point_latest(store, NAME, "v3")
    held = versions[0]
    (tmp_path / "links").mkdir()
    os.symlink(store, tmp_path / "links" / "store")  # ~/bentoml -> /data/bentoml
    os.symlink(held, tmp_path / "links" / "current")  # /srv/current -> the served version
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "store": str(store),
                "protect": {"min_age": "0s", "settle": "0s"},
                "retention": {"max_versions": 1},
            }
        )
    )
    process = subprocess.Popen(
        holder.command(held, tmp_path / "links"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=held if holder.cwd else tmp_path,
        # Its own store, as a served model's process has: a tag it names then holds nothing
        # in the store of a test running beside it (the in-use scan sees every process).
        env={**os.environ, "HOLD": str(held / "weights.bin"), "BENTOML_HOME": str(store)},
    )
    holders.append(process)
    assert process.stdout is not None
    assert process.stdout.readline() == "holding\n"

    while_held = run_cli("prune", "--config", str(config))

    assert while_held.code == 0, while_held.text
    assert [e["version"] for e in while_held.named("version_removed")] == ["v2"]
    assert (held / "weights.bin").read_bytes() == b"w" * 4096
    (scan,) = while_held.named("in_use_scan")
    assert scan["versions_in_use"] == 1

    process.communicate("", timeout=30)
    after_exit = run_cli("prune", "--config", str(config))

    assert after_exit.code == 0, after_exit.text
    assert [e["version"] for e in after_exit.named("version_removed")] == ["v1"]
    assert not held.exists()
    assert sorted(os.listdir(store / "models" / NAME)) == ["latest", "v3"]


@pytest.mark.tmpfs
@pytest.mark.parametrize("how", ["a-file-open", "a-file-mapped", "the-working-directory"])
@pytest.mark.parametrize("reached", ["a-bind-mount-of-the-store", "a-container-mount-namespace"])
def test_a_version_held_through_another_path_to_the_store_is_seen_by_device_and_inode(
    tmp_path: Path, holders: list[subprocess.Popen[str]], how: str, reached: str
) -> None:
    store = tmp_path / "bentoml"
    versions = [
        make_version(store, NAME, f"v{index}", created=NOW - (10 - index) * DAY)
        for index in (1, 2, 3)
    ]
    point_latest(store, NAME, "v3")
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "store": str(store),
                "protect": {"min_age": "0s", "settle": "0s"},
                "retention": {"max_versions": 1},
            }
        )
    )
    elsewhere = tmp_path / "elsewhere"  # where the holder sees the store
    elsewhere.mkdir()
    held = elsewhere / "models" / NAME / "v1"
    script = {"a-file-open": OPEN_FILE, "a-file-mapped": MAP_FILE, "the-working-directory": WAIT}
    holder = [sys.executable, "-c", script[how]]
    if reached == "a-bind-mount-of-the-store":
        subprocess.run(["mount", "--bind", str(store), str(elsewhere)], check=True)
        command = holder
    else:  # a mount only the holder's own namespace has, as a container's
        command = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount --bind "{store}" "{elsewhere}" && cd "$HOLD_DIR" && exec "$@"',
            "holder",
            *holder,
        ]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=held
            if how == "the-working-directory" and reached != "a-container-mount-namespace"
            else tmp_path,
            env={
                **os.environ,
                "HOLD": str(held / "weights.bin"),
                "HOLD_DIR": str(held if how == "the-working-directory" else tmp_path),
            },
        )
        holders.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == "holding\n"
        if reached == "a-container-mount-namespace":
            assert not (elsewhere / "models").exists()  # the mount is the holder's alone

        refused = run_cli("delete", f"{NAME}:v1", "--config", str(config))
        while_held = run_cli("prune", "--config", str(config))
    finally:
        for process in holders:
            if process.poll() is None:
                process.communicate("", timeout=30)
        if reached == "a-bind-mount-of-the-store":
            subprocess.run(["umount", str(elsewhere)], check=True)

    assert refused.code == 4, refused.text
    assert "in_use" in refused.stderr
    assert while_held.code == 0, while_held.text
    assert [e["version"] for e in while_held.named("version_removed")] == ["v2"]
    assert versions[0].is_dir()
    assert (versions[0] / "weights.bin").read_bytes() == b"w" * 4096


@pytest.fixture
def bind_mounts() -> Iterator[Callable[[Path, Path], None]]:
    """Return a function that bind-mounts a directory at another; each unmounted at the end.

    Skips the test (with the reason) where mounting is not permitted.
    """
    mounted: list[Path] = []

    def bind(source: Path, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "--bind", str(source), str(target)],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot bind-mount here (needs root or CAP_SYS_ADMIN): {result.stderr}")
        mounted.append(target)

    yield bind
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=True)


THROUGH_A_MOUNT = pytest.mark.tmpfs  # mounts need root, as the tmpfs tests do


@pytest.mark.parametrize(
    ("home", "held_stays"),
    [
        ("another-store", False),
        ("this-store-through-a-symlink", True),
        ("this-store", True),
        pytest.param("this-store-through-a-bind-mount", True, marks=THROUGH_A_MOUNT),
        pytest.param("this-store-mounted-in-its-own-namespace", True, marks=THROUGH_A_MOUNT),
        ("this-store-relative-to-its-working-directory", True),
        ("this-store-under-its-own-home", True),
        ("a-directory-that-does-not-exist", True),  # unknown: fail safe
    ],
)
def test_a_tag_on_a_command_line_holds_only_in_the_store_bentoml_uses_there(
    tmp_path: Path,
    holders: list[subprocess.Popen[str]],
    bind_mounts: Callable[[Path, Path], None],
    home: str,
    held_stays: bool,
) -> None:
    # BentoML resolves a tag in BENTOML_HOME: `bentoml serve numbat:v1` run for
    # another store holds nothing here (a CI agent with one store per job). The
    # same store reached by another path is this store.
    store = tmp_path / "bentoml"
    for index in (1, 2, 3):
        make_version(store, NAME, f"v{index}", created=NOW - (10 - index) * DAY)
    point_latest(store, NAME, "v3")
    (tmp_path / "other-store").mkdir()
    os.symlink(store, tmp_path / "link-to-store")
    (tmp_path / "user").mkdir()
    os.symlink(store, tmp_path / "user" / "bentoml")
    bentoml_home = {
        "another-store": tmp_path / "other-store",
        "this-store-through-a-symlink": tmp_path / "link-to-store",
        "this-store": store,
        "this-store-through-a-bind-mount": tmp_path / "alias",
        # An empty directory here; the store, where the holder looks.
        "this-store-mounted-in-its-own-namespace": tmp_path / "other-store",
        "this-store-relative-to-its-working-directory": Path("bentoml"),
        "this-store-under-its-own-home": Path("~/bentoml"),
        "a-directory-that-does-not-exist": tmp_path / "gone",
    }[home]
    holder = [sys.executable, "-c", WAIT, "serve", f"{NAME}:v1"]
    if home == "this-store-through-a-bind-mount":
        bind_mounts(store, tmp_path / "alias")
    if home == "this-store-mounted-in-its-own-namespace":
        if subprocess.run(["unshare", "--mount", "true"], check=False).returncode != 0:
            pytest.skip("cannot make a mount namespace here (needs root or CAP_SYS_ADMIN)")
        holder = [
            *("unshare", "--mount", "--propagation", "private", "sh", "-c"),
            f'mount --bind "{store}" "{bentoml_home}" && exec "$@"',
            "holder",
            *holder,
        ]
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "store": str(store),
                "protect": {"min_age": "0s", "settle": "0s"},
                "retention": {"max_versions": 1},
            }
        )
    )
    process = subprocess.Popen(
        holder,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "BENTOML_HOME": str(bentoml_home), "HOME": str(tmp_path / "user")},
    )
    holders.append(process)
    assert process.stdout is not None
    assert process.stdout.readline() == "holding\n"

    result = run_cli("prune", "--config", str(config))

    assert result.code == 0, result.text
    removed = sorted(event["version"] for event in result.named("version_removed"))
    assert removed == (["v2"] if held_stays else ["v1", "v2"])
    assert (store / "models" / NAME / "v1").exists() == held_stays


def test_name_latest_on_a_command_line_holds_the_version_latest_names(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    # `bentoml serve numbat:latest` serves what latest names; keep_latest is off,
    # so only the in-use scan keeps it.
    store = tmp_path / "bentoml"
    for index in (1, 2, 3):
        make_version(store, NAME, f"v{index}", created=NOW - (10 - index) * DAY)
    point_latest(store, NAME, "v1")
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "store": str(store),
                "protect": {"min_age": "0s", "settle": "0s", "keep_latest": False},
                "retention": {"max_versions": 1},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-c", WAIT, "serve", f"{NAME}:latest"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    holders.append(process)
    assert process.stdout is not None
    assert process.stdout.readline() == "holding\n"

    while_held = run_cli("prune", "--config", str(config))

    assert while_held.code == 0, while_held.text
    assert [e["version"] for e in while_held.named("version_removed")] == ["v2"]
    assert (store / "models" / NAME / "v1").is_dir()

    process.communicate("", timeout=30)
    after_exit = run_cli("prune", "--config", str(config))

    assert after_exit.code == 0, after_exit.text
    assert [e["version"] for e in after_exit.named("version_removed")] == ["v1"]


@pytest.mark.parametrize(
    ("pointer", "named"),
    [
        ("a-file-naming-v1", "v1"),
        ("a-symlink-to-v1", "v1"),
        ("missing", None),
        ("a-file-naming-a-version-not-there", None),
        ("a-file-naming-a-path", None),
        ("a-directory", None),
    ],
)
def test_what_latest_names_is_read_from_the_pointer_or_unknown(
    tmp_path: Path, pointer: str, named: str | None
) -> None:
    # Unknown (None): BentoML rewrites such a pointer to the newest version, so
    # `name:latest` may load any version of the name.
    store = tmp_path / "bentoml"
    for index in (1, 2):
        make_version(store, NAME, f"v{index}", created=NOW - (10 - index) * DAY)
    record = census(store).find("models", NAME, "v2")
    assert record is not None
    latest = store / "models" / NAME / "latest"
    if pointer == "a-file-naming-v1":
        point_latest(store, NAME, "v1")
    elif pointer == "a-symlink-to-v1":
        os.symlink("v1", latest)
    elif pointer == "a-file-naming-a-version-not-there":
        point_latest(store, NAME, "v9")
    elif pointer == "a-file-naming-a-path":
        point_latest(store, NAME, "../../models/numbat/v1")
    elif pointer == "a-directory":
        latest.mkdir()

    assert latest_version(record) == named


# argv: a tag. Loads it with the real BentoML (BENTOML_HOME: the store), says which
# version it got, and keeps it in memory only: no file of it open, no path of it named.
LOAD_BY_TAG = """
import sys
import bentoml
model = bentoml.models.get(sys.argv[1])
print("holding", model.tag.version, flush=True)
sys.stdin.read()
"""


def test_a_tag_naming_a_prefix_of_a_version_holds_the_version_bentoml_loaded(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    # `bentoml.models.get("numbat:csmzuc")` loads numbat:csmzuchl4sb7qax4: BentoML
    # resolves a version by its prefix when no version is exactly that.
    store = tmp_path / "bentoml"
    versions = ["csmzuchl4sb7qax4", "dqywm3xl4sb7qax4", "f2k7vthl4sb7qax4"]
    for index, version in enumerate(versions):
        make_version(store, NAME, version, created=NOW - (10 - index) * DAY)
    point_latest(store, NAME, versions[-1])
    held = store / "models" / NAME / versions[0]
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "store": str(store),
                "protect": {"min_age": "0s", "settle": "0s"},
                "retention": {"max_versions": 1},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-c", LOAD_BY_TAG, f"{NAME}:{versions[0][:6]}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "True"},
    )
    holders.append(process)
    assert process.stdout is not None
    assert process.stdout.readline() == f"holding {versions[0]}\n"

    while_held = run_cli("prune", "--config", str(config))

    assert while_held.code == 0, while_held.text
    assert [e["version"] for e in while_held.named("version_removed")] == [versions[1]]
    assert (held / "weights.bin").read_bytes() == b"w" * 4096

    process.communicate("", timeout=30)
    after_exit = run_cli("prune", "--config", str(config))

    assert after_exit.code == 0, after_exit.text
    assert [e["version"] for e in after_exit.named("version_removed")] == [versions[0]]
    assert sorted(os.listdir(store / "models" / NAME)) == sorted(["latest", versions[-1]])

"""Hostile and broken input, end to end: a table of cases, each held to the same four checks.

Every case builds a store with one broken or hostile thing in it (or a broken
config), beside an ``outside`` directory the store links into, and runs
``storewarden prune`` as a subprocess, twice. Each case then checks:

1. a clear message: the expected exit code, no traceback, an error as one
   ``storewarden:`` line naming the problem, and the problem named in the
   audit log or in ``storewarden status --json``;
2. no crash loop: the second run ends as the first did and has nothing left
   to redo (no removal, the same exit code);
3. nothing outside the store touched: ``outside/`` (symlink and hard-link
   targets included) is byte for byte what it was;
4. nothing removed that should stay: the hostile entry and the protected
   versions are still there, and the one version the config wants gone is
   gone whenever the store can be pruned at all (one bad entry must not stop
   the rest from being pruned).

Cases marked unprivileged run the warden without CAP_DAC_OVERRIDE,
CAP_DAC_READ_SEARCH and CAP_FOWNER: root then meets mode bits exactly as the
store's unprivileged owner does (the systemd unit runs as ``bentoml``). A
real ``setuid`` would not do here: pytest's temporary root is 0700, so no
other user can reach the stores these tests build.

docs/reliability.md lists the matrix.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storewarden.prune import STATE_MARKER
from tests import invariants
from tests.e2e.test_daemon import DaemonProcess
from tests.reliability.support import (
    CliResult,
    crashloop,
    make_outside,
    remove_deep_tree,
    run_cli,
)
from tests.storebuilder import make_version, point_latest, read_latest

pytestmark = pytest.mark.slow

NAME = "quokka"  # a name no other process on the machine names (tags on command lines count)
VICTIM = f"models/{NAME}/q1"  # the version the config wants gone (retention: 2 versions)
KEPT = (f"models/{NAME}/q2", f"models/{NAME}/q3")
NOW = datetime.now(tz=UTC)

# prctl(PR_CAPBSET_DROP, ...) and the capabilities that let root ignore mode bits.
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3


def drop_file_capabilities() -> None:
    """In a child before exec: drop the capabilities that bypass file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@dataclass
class Scene:
    """One case's world: the store, the directory outside it, the config to run with."""

    directory: Path
    store: Path
    outside: Path
    config: dict[str, Any]
    config_file: Path
    config_text: bytes | None = None
    store_argument: Path | None = None

    def version(self, name: str, version: str, days: float = 30, **options: Any) -> Path:
        """Make a version created ``days`` ago."""
        return make_version(
            self.store, name, version, created=NOW - timedelta(days=days), **options
        )

    def path(self, relative: str) -> Path:
        """Return a path inside the store."""
        return self.store / relative


Build = Callable[[Scene], object]


@dataclass(frozen=True)
class Case:
    """One hostile input and what must come of it (paths are relative to the store)."""

    name: str
    build: Build
    code: int = 0
    says: str = ""
    in_status: bool = False
    stays: tuple[str, ...] = ()
    goes: tuple[str, ...] = (VICTIM,)
    unprivileged: bool = False
    tmpfs: bool = False
    trash_empty: bool = True
    latest: str | None = "q3"  # what the main name's latest must name after (None: not checked)
    main_name: bool = True  # the main name's kept versions are checked


def descriptor(text: str | bytes) -> Build:
    """A version of its own name whose model.yaml is ``text``."""

    def build(scene: Scene) -> None:
        scene.version("broken", "b1", days=90, descriptor_text=text)

    return build


def on_descriptor(change: Callable[[Path, Scene], object]) -> Build:
    """A version of its own name whose model.yaml ``change`` replaces."""

    def build(scene: Scene) -> None:
        path = scene.version("broken", "b1", days=90)
        (path / "model.yaml").unlink()
        change(path / "model.yaml", scene)

    return build


def pointer(change: Callable[[Path, Scene], object]) -> Build:
    """``latest`` of the main name replaced by ``change``."""

    def build(scene: Scene) -> None:
        latest = scene.path(f"models/{NAME}/latest")
        latest.unlink()
        change(latest, scene)

    return build


def alias_bomb() -> str:
    """A model.yaml whose labels expand to 10**9 strings if anything stringifies them."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    lines += ["labels: {bomb: *a8}", "creation_time: '2026-01-01T00:00:00+00:00'"]
    return "\n".join(lines) + "\n"


def nest(depth: int, relative: str) -> Build:
    """A chain of ``depth`` directories in a version (made level by level, relative to each)."""

    def build(scene: Scene) -> None:
        path = scene.path(relative)
        if not path.exists():
            path = scene.version("broken", "b1", days=90)
        make_chain(path, depth)

    return build


def make_chain(path: Path, depth: int) -> None:
    """Create ``d/d/...`` ``depth`` levels deep below ``path``."""
    descriptor_fd = os.open(path, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=descriptor_fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=descriptor_fd)
        os.close(descriptor_fd)
        descriptor_fd = inner
    os.close(descriptor_fd)


def far_future_mtime(scene: Scene) -> None:
    """No creation_time, and a directory mtime past year 9999 (tmpfs keeps any 64-bit time)."""
    path = scene.version("broken", "b1", days=90, descriptor_text="name: broken\n")
    os.utime(path, (1e15, 1e15))


def link_out(scene: Scene, relative: str, target: str) -> None:
    """Put a symlink at ``relative`` in the store pointing at ``target`` under outside/."""
    os.symlink(scene.outside / target, scene.path(relative))


def models_elsewhere(scene: Scene) -> None:
    """models/ is a symlink to a directory of versions outside the store."""
    shutil.move(scene.path("models"), scene.outside / "models-elsewhere")
    os.symlink(scene.outside / "models-elsewhere", scene.path("models"))


def non_utf8_name(scene: Scene) -> None:
    """A file inside the victim whose name is not UTF-8."""
    descriptor_fd = os.open(scene.path(VICTIM), os.O_RDONLY)
    try:
        fd = os.open(b"\xff\xfe-weights.bin", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=descriptor_fd)
        os.write(fd, b"x" * 100)
        os.close(fd)
    finally:
        os.close(descriptor_fd)


def garbage_trash(scene: Scene) -> None:
    """The warden's trash holds junk: a directory linking out, a file, a bogus intent.

    The state directory is marked as the warden's own: an unmarked one holding
    such entries is refused instead (tests/e2e/test_state_dir.py).
    """
    trash = scene.path(".storewarden/trash")
    trash.mkdir(parents=True)
    scene.path(f".storewarden/{STATE_MARKER}").touch()
    (trash / "junk").mkdir()
    os.symlink(scene.outside / "tree", trash / "junk" / "link-out")
    (trash / "junk" / "file.bin").write_bytes(b"j" * 1000)
    (trash / "not+an+intent").write_text("")
    os.symlink(scene.outside / "target.bin", trash / "dangling-link")


def read_only_subdirectory(owner: int | None) -> Build:
    """The victim holds a read-only directory (owned by ``owner`` if given)."""

    def build(scene: Scene) -> None:
        assets = scene.path(VICTIM) / "assets"
        assets.mkdir()
        (assets / "vocab.txt").write_text("a\nb\n")
        if owner is not None:
            if os.geteuid() != 0:
                pytest.skip("making a directory another user's needs root")
            os.chown(assets, owner, owner)
        assets.chmod(0o555)

    return build


def chmod(relative: str, mode: int) -> Build:
    def build(scene: Scene) -> None:
        scene.path(relative).chmod(mode)

    return build


def locked_name(scene: Scene) -> None:
    scene.version("locked", "l1", days=90)
    scene.path("models/locked").chmod(0)


def ghost_name(scene: Scene) -> None:
    """A name directory holding only a latest that names nothing."""
    scene.path("models/ghost").mkdir()
    point_latest(scene.store, "ghost", "g1")


def store_behind_symlink(scene: Scene) -> None:
    os.symlink(scene.store, scene.directory / "link-to-store")
    scene.config["store"] = str(scene.directory / "link-to-store")


def read_only_store(scene: Scene) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(scene.store.parent)], check=True)


def config_text(text: bytes | None) -> Build:
    """Replace the config file's text (None: no file at all)."""

    def build(scene: Scene) -> None:
        scene.config_text = text
        scene.store_argument = scene.store

    return build


def config_data(data: dict[str, Any]) -> Build:
    """Merge ``data`` into the config."""

    def build(scene: Scene) -> None:
        for key, value in data.items():
            if isinstance(value, dict) and isinstance(scene.config.get(key), dict):
                scene.config[key] = {**scene.config[key], **value}
            else:
                scene.config[key] = value

    return build


def store_path(how: str) -> Build:
    def build(scene: Scene) -> None:
        target = scene.directory / "not-a-store"
        if how == "file":
            target.write_text("I am a file")
        scene.config["store"] = str(target)

    return build


def bento_descriptor(text: str) -> Build:
    """A bento of its own name whose bento.yaml is ``text``."""

    def build(scene: Scene) -> None:
        scene.version("hostile", "h1", days=90, kind="bentos", descriptor_text=text)

    return build


def bento_needing(*entries: str) -> str:
    """Return a bento.yaml whose service lists ``entries`` (YAML flow values) as model tags."""
    models = "".join(f"  - tag: {entry}\n" for entry in entries)
    return (
        "name: hostile\nversion: h1\ncreation_time: '2026-01-01T00:00:00+00:00'\n"
        f"models: []\nservices:\n- name: Svc\n  models:\n{models}"
    )


def bento_alias_bomb() -> str:
    """A bento.yaml whose services and model lists are aliases: 10^10 entries if expanded."""
    return (
        "entry: &entry {tag: 'ghost:v1'}\nlist: &list\n"
        + "- *entry\n" * 100_000
        + "service: &service {name: s, models: *list}\nservices:\n"
        + "- *service\n" * 100_000
    )


def unreadable_bento_yaml(scene: Scene) -> None:
    path = scene.version("hostile", "h1", days=90, kind="bentos")
    (path / "bento.yaml").chmod(0)


def others_latest_unreadable(scene: Scene) -> None:
    """Another name whose latest is another user's 0600 file (a root save with umask 077)."""
    for index in (1, 2):
        scene.version("other", f"o{index}", days=90 - index)
    latest = point_latest(scene.store, "other", "o2")
    if os.geteuid() != 0:
        pytest.skip("making a file another user's needs root")
    os.chown(latest, 65534, 65534)
    latest.chmod(0o600)


def locked_bento_name(scene: Scene) -> None:
    """A bento name directory the warden cannot read: the models its bentos need are unknown."""
    scene.version("hostile", "h1", days=90, kind="bentos", descriptor_text=bento_needing("x:y"))
    scene.path("bentos/hostile").chmod(0)


def bento_yaml_linked(needing: str, target: Callable[[Scene], Path] | None = None) -> Build:
    """A bento whose bento.yaml is a symlink (to a file beside it, or to ``target``)."""

    def build(scene: Scene) -> None:
        path = scene.version(
            "hostile", "h1", days=90, kind="bentos", descriptor_text=bento_needing(needing)
        )
        real = path / "bento.real.yaml"
        (path / "bento.yaml").rename(real)
        if target is not None:
            real = target(scene)
            real.write_text(bento_needing(needing))
        os.symlink(real.name if target is None else real, path / "bento.yaml")

    return build


def bento_yaml_linked_to_a_fifo(scene: Scene) -> None:
    bento_yaml_linked("ghost:v1")(scene)
    real = scene.path("bentos/hostile/h1/bento.real.yaml")
    real.unlink()
    os.mkfifo(real)


BROKEN = "models/broken/b1"
HOSTILE_BENTO = "bentos/hostile/h1"
CASES = [
    # -- model.yaml --
    Case("model-yaml-not-yaml", descriptor("name: [unclosed\n  - {"), says="not valid YAML",
         in_status=True, stays=(BROKEN,)),
    Case("model-yaml-empty", descriptor(""), says="not a mapping", in_status=True, stays=(BROKEN,)),
    Case("model-yaml-binary", descriptor(b"\x7fELF\x00\x01\x02" * 100), says="binary",
         in_status=True, stays=(BROKEN,)),
    Case("model-yaml-huge", descriptor("labels: {}\n" + "# padding\n" * 2_000_000),
         says="too large", in_status=True, stays=(BROKEN,)),
    Case("model-yaml-a-list", descriptor("- name\n- version\n"), says="not a mapping",
         in_status=True, stays=(BROKEN,)),
    Case("model-yaml-alias-bomb-labels", descriptor(alias_bomb()), in_status=True, stays=(BROKEN,)),
    Case("model-yaml-a-fifo", on_descriptor(lambda path, _s: os.mkfifo(path)),
         says="not a regular file", in_status=True, stays=(BROKEN,)),
    Case("model-yaml-a-symlink-out-of-the-store",
         on_descriptor(lambda path, scene: os.symlink(scene.outside / "model.yaml", path)),
         says="cannot read model.yaml", in_status=True, stays=(BROKEN,)),
    Case("model-yaml-a-directory", on_descriptor(lambda path, _s: path.mkdir()),
         says="cannot read model.yaml", in_status=True, stays=(BROKEN,)),
    Case("creation-time-missing", descriptor("name: broken\nlabels: {}\n"),
         says="no usable creation_time", in_status=True, stays=(BROKEN,)),
    Case("creation-time-in-the-future", descriptor("creation_time: '2999-01-01T00:00:00+00:00'\n"),
         says="no usable creation_time", in_status=True, stays=(BROKEN,)),
    Case("creation-time-not-a-time", descriptor("creation_time: 'last tuesday'\n"),
         says="no usable creation_time", in_status=True, stays=(BROKEN,)),
    Case("creation-time-before-year-1-in-utc",
         descriptor("creation_time: '0001-01-01T00:00:00+14:00'\n"),
         says="no usable creation_time", in_status=True, stays=(BROKEN,)),
    Case("directory-mtime-past-year-9999", far_future_mtime, says="no usable creation_time",
         in_status=True, stays=(BROKEN,), tmpfs=True),
    Case("directories-nested-beyond-path-max", nest(2200, BROKEN), says="unreadable",
         in_status=True, stays=(BROKEN,)),
    Case("directories-nested-1500-deep-in-the-victim", nest(1500, VICTIM)),
    # -- bento.yaml: the models a bento needs --
    Case("bento-needs-the-victim", bento_descriptor(bento_needing(f"{NAME}:q1")),
         says="referenced", in_status=True, stays=(VICTIM, HOSTILE_BENTO), goes=()),
    Case("bento-needs-the-victim-in-capitals", bento_descriptor(bento_needing("QUOKKA:Q1")),
         says="referenced", in_status=True, stays=(VICTIM, HOSTILE_BENTO), goes=()),
    Case("bento-needs-100000-models-none-in-the-store",
         bento_descriptor(bento_needing(*(f"ghost{index}:v1" for index in range(100_000)))),
         says="bento_reference_missing", stays=(HOSTILE_BENTO,)),
    Case("bento-yaml-nested-20000-deep",
         bento_descriptor("name: hostile\nmodels: " + "[" * 20_000 + "]" * 20_000 + "\n"),
         says="not valid YAML", in_status=True, stays=(HOSTILE_BENTO,)),
    Case("bento-yaml-tags-not-text", bento_descriptor(bento_needing("42", "[1, 2]", "{a: b}")),
         says="is not text", stays=(HOSTILE_BENTO,)),
    Case("bento-yaml-tags-not-valid", bento_descriptor(bento_needing("Not A Tag", "'../../x:y'")),
         says="no valid model name", stays=(HOSTILE_BENTO,)),
    Case("bento-yaml-models-not-a-list",
         bento_descriptor("name: hostile\nmodels: 7\nservices: {a: b}\n"),
         says="is not a list", stays=(HOSTILE_BENTO,)),
    Case("bento-yaml-alias-bomb-models", bento_descriptor(bento_alias_bomb()),
         says="bento_reference_missing", stays=(HOSTILE_BENTO,)),
    Case("unreadable-bento-yaml", unreadable_bento_yaml, says="references_unknown",
         stays=(VICTIM, HOSTILE_BENTO), goes=(), unprivileged=True),
    Case("unreadable-bento-name-directory", locked_bento_name,
         says="cannot read the name directory", in_status=True, stays=(VICTIM, HOSTILE_BENTO),
         goes=(), unprivileged=True),
    # BentoML follows a symlinked bento.yaml: the models it lists are known.
    Case("bento-yaml-a-symlink-beside-it", bento_yaml_linked("ghost:v1"),
         says="bento_reference_missing", stays=(HOSTILE_BENTO,)),
    Case("bento-yaml-a-symlink-beside-it-needing-the-victim",
         bento_yaml_linked(f"{NAME}:q1"), says="referenced", in_status=True,
         stays=(VICTIM, HOSTILE_BENTO), goes=()),
    # ... but the census opens nothing outside the store: unknown, so every model stays.
    Case("bento-yaml-a-symlink-out-of-the-store",
         bento_yaml_linked("ghost:v1", lambda scene: scene.outside / "bento.yaml"),
         says="references_unknown", stays=(VICTIM, HOSTILE_BENTO), goes=()),
    Case("bento-yaml-a-symlink-to-a-fifo-beside-it", bento_yaml_linked_to_a_fifo,
         says="not a regular file", in_status=True, stays=(HOSTILE_BENTO,)),
    # -- latest --
    Case("latest-of-another-name-unreadable", others_latest_unreadable,
         says="latest cannot be read", in_status=True,
         stays=("models/other/o1", "models/other/o2", "models/other/latest"),
         unprivileged=True),
    Case("latest-names-a-missing-version", pointer(lambda p, _s: p.write_text("q9")),
         says="pointer names missing version", stays=KEPT),
    Case("latest-is-dot-dot", pointer(lambda p, _s: p.write_text("..")), says="not a version",
         stays=KEPT),
    Case("latest-is-an-absolute-path",
         pointer(lambda p, scene: p.write_text(str(scene.outside / "target.bin"))),
         says="not a version", stays=KEPT),
    Case("latest-is-a-symlink-out-of-the-store",
         pointer(lambda p, scene: os.symlink(scene.outside / "tree", p)),
         says="not a version", stays=KEPT),
    Case("latest-is-binary", pointer(lambda p, _s: p.write_bytes(b"\xff\xfe\x00q3")),
         says="not text", stays=KEPT),
    Case("latest-is-a-fifo", pointer(lambda p, _s: os.mkfifo(p)),
         says="neither a file nor a symlink", stays=KEPT),
    Case("latest-is-a-directory", pointer(lambda p, _s: p.mkdir()), says="Is a directory",
         stays=(*KEPT, f"models/{NAME}/latest"), latest=None),
    # -- the store's layout --
    Case("version-directory-a-symlink-out-of-the-store",
         lambda scene: link_out(scene, f"models/{NAME}/q0", "tree"),
         says="symlink or a file", stays=(f"models/{NAME}/q0",)),
    Case("name-directory-a-symlink-out-of-the-store",
         lambda scene: link_out(scene, "models/elsewhere", "tree"),
         says="not a directory", stays=("models/elsewhere",)),
    Case("models-a-symlink-out-of-the-store", models_elsewhere, says="not a directory",
         stays=("models",), goes=(), main_name=False),
    Case("file-in-the-victim-a-symlink-out-of-the-store",
         lambda scene: link_out(scene, f"{VICTIM}/shared.bin", "target.bin")),
    Case("directory-in-the-victim-a-symlink-out-of-the-store",
         lambda scene: link_out(scene, f"{VICTIM}/shared-tree", "tree")),
    Case("file-in-the-victim-a-hard-link-to-outside",
         lambda scene: os.link(scene.outside / "hard.bin", scene.path(f"{VICTIM}/hard.bin"))),
    Case("file-in-the-victim-named-in-bytes-not-utf8", non_utf8_name),
    Case("name-not-a-valid-tag", lambda scene: scene.version("Bad_Name", "v1", days=90),
         says="not a valid BentoML tag", stays=("models/Bad_Name/v1",)),
    Case("version-not-a-valid-tag", lambda scene: scene.version(NAME, "Q0.UPPER", days=90),
         says="not a valid BentoML tag", stays=(f"models/{NAME}/Q0.UPPER",)),
    Case("name-longer-than-63-characters", lambda scene: scene.version("n" * 64, "v1", days=90),
         says="not a valid BentoML tag", stays=(f"models/{'n' * 64}/v1",)),
    Case("stray-file-among-the-versions",
         lambda scene: scene.path(f"models/{NAME}/notes").write_text("hello"),
         says="symlink or a file", stays=(f"models/{NAME}/notes",)),
    Case("empty-name-directory", lambda scene: scene.path("models/empty").mkdir(),
         stays=("models/empty",)),
    Case("name-directory-with-only-a-latest", ghost_name, says="pointer names missing version",
         goes=(VICTIM, "models/ghost")),
    Case("trash-full-of-garbage", garbage_trash, says="trash_emptied"),
    Case("state-directory-a-file",
         lambda scene: scene.path(".storewarden").write_text("not a directory"),
         code=2, says=".storewarden", stays=(VICTIM,), goes=()),
    # -- permissions (unprivileged: as the store's owner, not root) --
    Case("unreadable-version-as-root", chmod(f"models/{NAME}/q1", 0)),
    Case("unreadable-version", chmod(VICTIM, 0), says="unreadable", in_status=True,
         stays=(VICTIM,), goes=(), unprivileged=True),
    Case("unreadable-name-directory", locked_name, says="cannot read the name directory",
         stays=("models/locked",), unprivileged=True),
    Case("unreadable-model-yaml", chmod(f"{VICTIM}/model.yaml", 0), says="Permission denied",
         in_status=True, stays=(VICTIM,), goes=(), unprivileged=True),
    Case("read-only-directory-in-the-victim", read_only_subdirectory(None), unprivileged=True),
    Case("another-users-read-only-directory-in-the-victim", read_only_subdirectory(65534),
         says="trash_not_emptied", unprivileged=True, trash_empty=False),
    # -- the store root --
    Case("store-root-a-symlink", store_behind_symlink),
    Case("store-root-missing", store_path("missing"), code=1, says="does not exist", goes=()),
    Case("store-root-a-file", store_path("file"), code=1, says="not-a-store", goes=()),
    Case("read-only-store", read_only_store, code=1, says="Read-only file system",
         stays=(VICTIM,), goes=(), tmpfs=True),
    # -- the config file --
    Case("config-missing", config_text(None), code=2, says="cannot read the file", goes=()),
    Case("config-empty", config_text(b""), goes=()),
    Case("config-binary", config_text(b"\x00\x01\x02store: /\n"), code=2, says="binary", goes=()),
    Case("config-not-utf8", config_text(b"store: \xff\xfe\n"), code=2, says="not UTF-8", goes=()),
    Case("config-unknown-keys", config_data({"protect": {"keep_lats": 3}, "colour": "red"}),
         code=2, says="at 'protect.keep_lats': unknown key", goes=()),
    Case("config-absurd-numbers",
         config_data({"trigger": {"high_percent": 1e308, "max_store_size": "9999999 TiB"},
                      "protect": {"keep_last": -5}, "schedule": {"check_interval": "0s"}}),
         code=2, says="at 'trigger.max_store_size'", goes=()),
    Case("config-low-not-below-high",
         config_data({"trigger": {"high_percent": 70, "low_percent": 70}}),
         code=2, says="must be below high_percent", goes=()),
    Case("config-a-yaml-list", config_text(b"- store\n- models\n"), code=2,
         says="expected a mapping", goes=()),
    Case("config-not-yaml", config_text(b"trigger: {high_percent: [\n"), code=2,
         says="not valid YAML", goes=()),
    Case("config-state-dir-inside-models", config_data({"state_dir": "SELF/models/state"}),
         code=2, says="inside", goes=()),
]  # fmt: skip


def clear(result: CliResult, code: int) -> list[str]:
    """Return how a run falls short of one clear outcome: its exit code, no traceback, one line."""
    problems = []
    output = result.stdout + result.stderr
    if result.code != code:
        problems.append(f"exit {result.code}, expected {code}: {output[-1500:]}")
    if "Traceback" in output:
        problems.append(f"a traceback: {output[-1500:]}")
    if result.code != 0 and not result.stderr.startswith("storewarden: "):
        problems.append(f"the error is not a 'storewarden:' line: {result.stderr[-1500:]!r}")
    return problems


@pytest.fixture
def deep_trees_removed(tmp_path: Path) -> Iterator[None]:
    """Remove the store afterwards with a remover that copes with trees deeper than PATH_MAX."""
    yield
    remove_deep_tree(tmp_path / "bentoml")


@pytest.mark.usefixtures("deep_trees_removed")
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_gets_a_clear_message_no_crash_loop_and_touches_nothing_it_must_not(
    tmp_path: Path, case: Case, tmpfs: Callable[[str], Path]
) -> None:
    store = tmpfs("32m") / "bentoml" if case.tmpfs else tmp_path / "bentoml"
    scene = Scene(
        directory=tmp_path,
        store=store,
        outside=make_outside(tmp_path / "outside"),
        config={
            "store": str(store),
            "protect": {"min_age": "0s", "settle": "0s"},
            "retention": {"max_versions": 2},
        },
        config_file=tmp_path / "config.yaml",
    )
    (scene.outside / "model.yaml").write_text("creation_time: '2026-01-01T00:00:00+00:00'\n")
    for index in (1, 2, 3):
        scene.version(NAME, f"q{index}", days=40 - index)
    point_latest(store, NAME, "q3")
    kept_before = {relative: invariants.digest_tree(store / relative) for relative in KEPT}
    case.build(scene)
    text = case_config_text(scene)
    if text is not None:
        scene.config_file.write_bytes(text)
    outside_before = invariants.digest_tree(scene.outside)
    store_before = invariants.digest_tree(store)
    arguments = ["--config", str(scene.config_file)]
    if scene.store_argument is not None:
        arguments += ["--store", str(scene.store_argument)]
    # Only root has capabilities to drop; any other user meets the mode bits anyway.
    dropping = case.unprivileged and os.geteuid() == 0
    options: dict[str, Any] = {"preexec_fn": drop_file_capabilities} if dropping else {}

    first = run_cli("prune", *arguments, **options)
    second = run_cli("prune", *arguments, **options)

    problems = [f"first run: {p}" for p in clear(first, case.code)]
    problems += [f"second run: {p}" for p in clear(second, case.code)]
    if second.named("version_removed"):
        problems.append(f"the second run removed more: {second.named('version_removed')}")
    shown = first.stdout + first.stderr
    if case.in_status:
        status = run_cli("status", "--json", *arguments, **options)
        problems += [f"status: {p}" for p in clear(status, 0)]
        shown = status.stdout
    if case.says and case.says not in shown:
        problems.append(f"{case.says!r} is not said: {shown[-2000:]}")
    if invariants.digest_tree(scene.outside) != outside_before:
        problems.append("something outside the store changed")
    problems += [
        f"{relative} was removed" for relative in case.stays if not lexists(store, relative)
    ]
    problems += [f"{relative} is still there" for relative in case.goes if lexists(store, relative)]
    if case.code != 0 and invariants.digest_tree(store) != store_before:
        problems.append("a run that failed changed the store")
    if case.code == 0 and case.main_name:
        problems += protected_intact(store, kept_before, case)
    assert problems == []


def case_config_text(scene: Scene) -> bytes | None:
    """Return the config file's bytes for the scene (None: leave the file missing)."""
    if scene.store_argument is not None:
        return scene.config_text
    text = json.dumps(scene.config).replace("SELF", str(scene.store))
    return text.encode()


def lexists(store: Path, relative: str) -> bool:
    """Return whether ``relative`` exists under ``store`` (a dangling symlink counts)."""
    return os.path.lexists(store / relative)


def protected_intact(store: Path, before: dict[str, dict[str, str]], case: Case) -> list[str]:
    """The main name's newest two versions are whole, latest names the newest, trash is empty."""
    problems = [
        f"{relative} changed"
        for relative, digest in before.items()
        if invariants.digest_tree(store / relative) != digest
    ]
    if case.latest is not None and read_latest(store, NAME) != case.latest:
        problems.append(f"latest names {read_latest(store, NAME)!r}, not {case.latest}")
    trash = store / ".storewarden" / "trash"
    if case.trash_empty and trash.is_dir() and os.listdir(trash):
        problems.append(f"the trash is not empty: {os.listdir(trash)}")
    return problems


# -- the same input, to a daemon that keeps running --------------------------------------------


def build_everything(scene: Scene) -> list[str]:
    """Put one of each kind of hostile entry into one store; return what must stay."""
    for number, text in enumerate(
        ["name: [unclosed\n", alias_bomb(), "creation_time: '2999-01-01T00:00:00+00:00'\n"]
    ):
        scene.version(f"broken{number}", "b1", days=90, descriptor_text=text)
    fifo = scene.version("broken-fifo", "b1", days=90)
    (fifo / "model.yaml").unlink()
    os.mkfifo(fifo / "model.yaml")
    make_chain(scene.version("broken-deep", "b1", days=90), 2200)
    for name, text in (("dangling", "gone"), ("dotdot", "..")):
        scene.version(name, "v1", days=50)
        (scene.path(f"models/{name}/latest")).write_text(text)
    scene.version("linkout", "v1", days=50)
    os.symlink(scene.outside / "tree", scene.path("models/linkout/latest"))
    link_out(scene, f"models/{NAME}/q0", "tree")
    link_out(scene, "models/elsewhere", "tree")
    link_out(scene, f"{VICTIM}/shared.bin", "target.bin")
    os.link(scene.outside / "hard.bin", scene.path(f"{VICTIM}/hard.bin"))
    scene.version("Bad_Name", "v1", days=90)
    scene.path(f"models/{NAME}/notes").write_text("hello")
    scene.path("models/empty").mkdir()
    garbage_trash(scene)
    return [
        *(f"models/broken{number}/b1" for number in range(3)),
        "models/broken-fifo/b1",
        "models/broken-deep/b1",
        f"models/{NAME}/q0",
        "models/elsewhere",
        "models/Bad_Name/v1",
        f"models/{NAME}/notes",
        "models/empty",
        *KEPT,
    ]


@pytest.mark.usefixtures("deep_trees_removed")
def test_a_daemon_keeps_running_over_a_store_full_of_hostile_entries(tmp_path: Path) -> None:
    store = tmp_path / "bentoml"
    scene = Scene(tmp_path, store, make_outside(tmp_path / "outside"), {}, tmp_path / "c.yaml")
    for index in (1, 2, 3):
        scene.version(NAME, f"q{index}", days=40 - index)
    point_latest(store, NAME, "q3")
    stays = build_everything(scene)
    outside_before = invariants.digest_tree(scene.outside)
    scene.config_file.write_text(
        json.dumps(
            {
                "store": str(store),
                "protect": {"min_age": "0s", "settle": "0s"},
                "retention": {"max_versions": 2},
                "schedule": {"check_interval": "1s", "reconcile_interval": "10s"},
                "log": {"level": "debug"},
            }
        )
    )
    daemon = DaemonProcess(scene.config_file, tmp_path / "daemon.log", dict(os.environ))
    try:
        daemon.wait_for(
            lambda events: any(e["event"] == "version_removed" for e in events),
            "the victim removed",
        )
        removed_at = len(daemon.events())
        daemon.wait_for(
            lambda events: sum(e["event"] == "check" for e in events[removed_at:]) >= 3,
            "three more checks",
        )
        assert daemon.process.poll() is None
        events = daemon.events()
    finally:
        code = daemon.stop()

    assert code == 0
    assert [(e["name"], e["version"]) for e in events if e["event"] == "version_removed"] == [
        (NAME, "q1")
    ]
    assert [e for e in events if e["event"] in ("check_failed", "removal_failed")] == []
    assert {e["event"] for e in events} >= {"store_problem", "pointer_repaired", "trash_emptied"}
    assert [relative for relative in stays if not lexists(store, relative)] == []
    assert invariants.digest_tree(scene.outside) == outside_before
    for name in ("dangling", "dotdot", "linkout"):
        assert read_latest(store, name) == "v1"


# -- two wardens, and a full disk ------------------------------------------------------------


def test_two_daemons_and_a_prune_on_one_store_never_prune_at_once(tmp_path: Path) -> None:
    root = tmp_path / "bentoml"
    baseline, config = crashloop.build_trial_store(
        tmp_path, 7, crashloop.Settings(names=10, versions=8, files=2, bentos=8)
    )
    data = json.loads(config.read_text())
    data["schedule"] = {"check_interval": "1s", "reconcile_interval": "10s", "debounce": "0.2s"}
    config.write_text(json.dumps(data))
    daemons = [
        DaemonProcess(config, tmp_path / f"daemon-{n}.log", dict(os.environ)) for n in (1, 2)
    ]
    try:
        prune = run_cli("prune", "--config", str(config), "--wait", "60")
        for daemon in daemons:
            daemon.wait_for(
                lambda events: sum(e["event"] == "prune_finished" for e in events) >= 2,
                "two prune cycles",
            )
        logs = [daemon.events() for daemon in daemons]
    finally:
        codes = [daemon.stop() for daemon in daemons]

    assert codes == [0, 0]
    assert prune.code == 0, prune.text
    runs = [prune.events, *logs]
    events = [event for run in runs for event in run]
    assert invariants.check_store(baseline, events) == []
    removed = [e for e in events if e["event"] == "version_removed"]
    assert removed, "nothing was pruned: the test proves nothing"
    assert len({(e["kind"], e["name"], e["version"]) for e in removed}) == len(removed)
    # Under one lock, the cycles that removed something never overlap in time.
    spans = []
    for run in runs:
        started: dict[str, datetime] = {}
        for event in run:
            if event["event"] == "prune_started":
                started[event["run_id"]] = datetime.fromisoformat(event["timestamp"])
            if event["event"] == "prune_finished" and event["removed"]:
                spans.append((started[event["run_id"]], datetime.fromisoformat(event["timestamp"])))
    spans.sort()
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))
    assert root.is_dir()


@pytest.mark.tmpfs
def test_a_full_disk_while_rewriting_a_pointer_keeps_the_old_pointer_and_retries_later(
    tmp_path: Path, tmpfs: Callable[[str], Path]
) -> None:
    mount = tmpfs("4m")
    store = mount / "bentoml"
    for index in (1, 2):
        make_version(store, NAME, f"q{index}", created=NOW - timedelta(days=10 - index), size=8192)
    point_latest(store, NAME, "q1")  # someone pointed latest back at the older version
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
    filler = mount / "filler.bin"  # beside the store: the disk is full, not the store
    with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"f" * 4096)
    before = invariants.digest_tree(store / "models")

    full = run_cli("prune", "--config", str(config))

    assert full.code == 1, full.text
    (failed,) = full.named("removal_failed")
    assert "No space left on device" in failed["error"]
    assert "Traceback" not in full.stderr
    assert read_latest(store, NAME) == "q1"
    assert invariants.digest_tree(store / "models") == before
    assert run_cli("prune", "--config", str(config)).code == 1  # still full: still refused

    os.truncate(filler, filler.stat().st_size // 2)  # space comes back
    retried = run_cli("prune", "--config", str(config))

    assert retried.code == 0, retried.text
    assert [e["version"] for e in retried.named("version_removed")] == ["q1"]
    assert read_latest(store, NAME) == "q2"
    assert os.listdir(store / ".storewarden" / "trash") == []

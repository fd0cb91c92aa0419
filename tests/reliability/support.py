"""What the reliability tests share: the crash loop and store generator, stores with an outside.

The invariant checks (a version whole, pointers newest, trash empty,
outside untouched, every disappearance logged, BentoML reads it) live in
tests/invariants.py; bench/crashloop.py imports them from there, so the
script and the suite prove the same things.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from storewarden.logs import check_event
from tests.storebuilder import make_version

BENCH_DIRECTORY = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH_DIRECTORY))

import crashloop  # noqa: E402 - importable only once bench/ is on sys.path
import genstore  # noqa: E402 - as above

__all__ = [
    "CliResult",
    "crashloop",
    "genstore",
    "make_outside",
    "make_rich_version",
    "remove_deep_tree",
    "run_cli",
]


def make_outside(directory: Path) -> Path:
    """Create a directory of files beside a store, for links out of it; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "target.bin").write_bytes(os.urandom(4096))
    (directory / "hard.bin").write_bytes(os.urandom(4096))
    (directory / "tree").mkdir(exist_ok=True)
    (directory / "tree" / "inside.txt").write_text("keep me\n")
    return directory


def make_rich_version(
    root: Path, name: str, version: str, *, created: datetime, outside: Path, kind: str = "models"
) -> Path:
    """A version as real saves leave them: files, a subdirectory, links out of the store.

    The symlinks (to a file and to a directory) and the hard link point into
    ``outside``: removing the version must remove the links, never what they
    point at.
    """
    path = make_version(root, name, version, kind=kind, created=created, size=3000)
    (path / "assets").mkdir()
    (path / "assets" / "vocab.txt").write_text("a\nb\n")
    (path / "assets" / "merges.txt").write_text("ab\n")
    os.symlink(outside / "target.bin", path / "shared.bin")
    os.symlink(outside / "tree", path / "shared-tree")
    os.link(outside / "hard.bin", path / "hard.bin")
    return path


@dataclass(frozen=True)
class CliResult:
    """One ``python -m storewarden`` run: exit code, its audit events, the rest of its output."""

    code: int
    events: list[dict[str, Any]]
    stdout: str
    stderr: str

    def named(self, name: str) -> list[dict[str, Any]]:
        """Return the events called ``name``."""
        return [event for event in self.events if event["event"] == name]

    @property
    def text(self) -> str:
        """Return what a person reads: stderr and the non-JSON lines of stdout."""
        plain = [line for line in self.stdout.splitlines() if not line.startswith("{")]
        return "\n".join([*plain, self.stderr])


def run_cli(*arguments: str, timeout: float = 120, **options: Any) -> CliResult:
    """Run ``python -m storewarden ARGUMENTS``; every audit line must fit the schema."""
    result = subprocess.run(
        [sys.executable, "-m", "storewarden", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **options,
    )
    events = []
    for line in result.stdout.splitlines() + result.stderr.splitlines():
        if line.startswith('{"') and '"event": ' in line:  # not `status --json`'s document
            event = json.loads(line)
            check_event(event)
            events.append(event)
    return CliResult(result.returncode, events, result.stdout, result.stderr)


def remove_deep_tree(path: Path) -> None:
    """Remove a tree of any depth, even deeper than PATH_MAX, never following symlinks.

    pytest's own clean-up (shutil.rmtree, recursive) cannot remove a tree a
    few thousand directories deep; left behind, it breaks every later pytest
    run's clean-up. Works relative to directory descriptors, without recursion.
    """
    if not os.path.lexists(path):
        return
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    stack: list[tuple[int, str, int | None]] = [(parent, path.name, None)]
    while stack:
        parent_fd, name, fd = stack[-1]
        if fd is None:
            if not stat.S_ISDIR(os.lstat(name, dir_fd=parent_fd).st_mode):
                os.unlink(name, dir_fd=parent_fd)
                stack.pop()
                continue
            os.chmod(name, 0o700, dir_fd=parent_fd)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
            stack[-1] = (parent_fd, name, fd)
        child_directory = None
        for child in os.listdir(fd):
            if stat.S_ISDIR(os.lstat(child, dir_fd=fd).st_mode):
                child_directory = child
                break
            os.unlink(child, dir_fd=fd)
        if child_directory is not None:
            stack.append((fd, child_directory, None))
            continue
        os.close(fd)
        os.rmdir(name, dir_fd=parent_fd)
        stack.pop()
    os.close(parent)

"""Which versions are in use by a running process (psutil).

A version is in use when a process has a file under it open or
memory-mapped, has its working directory under it, or names its path or its
tag on its command line. Processes that cannot be inspected (another user's,
without CAP_SYS_PTRACE) are counted and reported, never fatal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from storewarden.store import VersionRecord

_TOKEN_SPLIT = re.compile(r"[\s=,;\"']+")


@dataclass(frozen=True)
class ProcessView:
    """What one process shows of itself: its pid, command line, cwd and open paths."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    cwd: str | None
    paths: tuple[str, ...]
    complete: bool = True


@dataclass(frozen=True)
class InUseScan:
    """Result of a scan: version path -> what holds it, plus how many processes were seen."""

    holders: Mapping[Path, str] = field(default_factory=dict)
    processes: int = 0
    uninspectable: int = 0


def inspect_processes() -> Iterator[ProcessView]:
    """Yield a view of every process psutil can see, except this one."""
    own = os.getpid()
    for process in psutil.process_iter(["pid", "name"]):
        if process.pid == own:
            continue
        complete = True
        cmdline: tuple[str, ...] = ()
        cwd: str | None = None
        paths: list[str] = []
        try:
            cmdline = tuple(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            complete = False
        try:
            cwd = process.cwd()
            paths.extend(item.path for item in process.open_files())
            paths.extend(item.path for item in process.memory_maps(grouped=False))
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            complete = False
        yield ProcessView(
            pid=process.pid,
            name=str(process.info.get("name") or ""),
            cmdline=cmdline,
            cwd=cwd,
            paths=tuple(paths),
            complete=complete,
        )


def _version_of(path: str, root: str, versions: Mapping[str, Path]) -> Path | None:
    """Map a path under the store to its version directory, if it is inside one."""
    if not path.startswith(root):
        return None
    parts = path[len(root) :].lstrip("/").split("/")
    if len(parts) < 3:
        return None
    return versions.get("/".join(parts[:3]))


def scan(
    root: Path,
    records: Iterable[VersionRecord],
    processes: Callable[[], Iterable[ProcessView]] = inspect_processes,
) -> InUseScan:
    """Given the store root and its versions, return which versions running processes hold.

    ``processes`` is injectable so tests can present made-up process tables.
    """
    root_text = str(root).rstrip("/") + "/"
    by_relative: dict[str, Path] = {}
    by_tag: dict[str, list[Path]] = {}
    for record in records:
        by_relative[f"{record.kind}/{record.name}/{record.version}"] = record.path
        by_tag.setdefault(record.tag, []).append(record.path)
    holders: dict[Path, str] = {}
    seen = uninspectable = 0
    for view in processes():
        seen += 1
        if not view.complete:
            uninspectable += 1
        who = f"pid {view.pid} ({view.name})"
        for path in view.paths:
            held = _version_of(path.removesuffix(" (deleted)"), root_text, by_relative)
            if held is not None:
                holders.setdefault(held, f"{who} has {path} open")
        if view.cwd is not None:
            held = _version_of(view.cwd + "/", root_text, by_relative)
            if held is not None:
                holders.setdefault(held, f"{who} works in {view.cwd}")
        for argument in view.cmdline:
            for token in _TOKEN_SPLIT.split(argument):
                if not token:
                    continue
                held = _version_of(token + "/", root_text, by_relative)
                if held is not None:
                    holders.setdefault(held, f"{who} names {token} on its command line")
                for tagged in by_tag.get(token, ()):
                    holders.setdefault(tagged, f"{who} names {token} on its command line")
    return InUseScan(holders=holders, processes=seen, uninspectable=uninspectable)

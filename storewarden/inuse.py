"""Which versions are in use by a running process (read from /proc, psutil without one).

A version is in use when a process has a file under it open or
memory-mapped, has its working directory under it, or names its path or its
tag on its command line (or a tag BentoML resolves to it: ``name:latest``, or
``name:prefix`` of its version), unless its environment sends BentoML to another
store (``BENTOML_HOME`` set to a directory that is not this store, compared by
device and inode as the process sees that path: BentoML resolves its tags
there). Processes that cannot be inspected (another
user's, without CAP_SYS_PTRACE) are counted and reported, never fatal. The
command lines of storewarden's own commands are not read: they name what
they remove, pin or restore, and use nothing.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from storewarden.store import POINTER, FileSystem, VersionRecord, read_pointer
from storewarden.tags import find_tags

_TOKEN_SPLIT = re.compile(r"[\s=,;\"']+")


Inode = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True)
class ProcessView:
    """What one process shows of itself: its pid, command line, cwd and open paths.

    ``inodes`` are the ``(device, inode)`` of its open files, mapped files
    and working directory: they name a file whatever path reached it (a bind
    mount of the store, a container that mounts it elsewhere), where
    ``paths`` are only the names this process's mount namespace gives them.
    """

    pid: int
    name: str
    cmdline: tuple[str, ...]
    cwd: str | None
    paths: tuple[str, ...]
    complete: bool = True
    inodes: frozenset[Inode] = frozenset()
    # BENTOML_HOME in the environment it started with; None if unset or unreadable.
    bentoml_home: str | None = None


@dataclass(frozen=True)
class InUseScan:
    """Result of a scan: version path -> what holds it, plus how many processes were seen."""

    holders: Mapping[Path, str] = field(default_factory=dict)
    processes: int = 0
    uninspectable: int = 0


def inspect_processes() -> Iterator[ProcessView]:
    """Yield a view of every process this one can see, except this one.

    Read from ``/proc`` directly (psutil's Process objects cost as much
    again as the reading itself: the scan runs at each plan and each
    cycle's first re-check); through psutil where there is no ``/proc``.
    """
    if not os.path.isdir("/proc/self"):
        yield from _inspect_with_psutil()
        return
    own = os.getpid()
    for pid in sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        if pid != own:
            view = _inspect(pid)
            if view is not None:
                yield view


def _inspect(pid: int) -> ProcessView | None:
    """Return what ``/proc/<pid>`` shows of a process; None if it has gone (or is a zombie).

    What cannot be read (another user's process, without CAP_SYS_PTRACE)
    leaves the view incomplete, as psutil's AccessDenied did.
    """
    complete = True
    cmdline: tuple[str, ...] = ()
    proc = f"/proc/{pid}"
    try:
        cmdline = _cmdline(_read_proc(proc, "cmdline"))
        if not cmdline:
            # Its main thread may have exited while others run on: /proc/<pid> then
            # shows no command line, descriptors or mappings; a live thread's do.
            thread = _live_thread(pid)
            if thread is not None:
                proc, cmdline = thread
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        complete = False
    try:
        held = _held(proc)
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        complete = False
        held = Held(None, [], frozenset())
    bentoml_home = None
    # Only a command line that may hold a tag makes the environment matter.
    if any(":" in argument for argument in cmdline):
        try:
            bentoml_home = _bentoml_home(proc)
        except (FileNotFoundError, ProcessLookupError):
            return None  # gone since its command line was read
        if bentoml_home is None and not _alive(proc):
            # An exiting process shows an empty environment: it holds nothing,
            # where reading it as "BENTOML_HOME unknown" would hold a version
            # of this store by a tag it meant for another.
            return None
    return ProcessView(
        pid=pid,
        name=_name(proc, cmdline),
        cmdline=cmdline,
        cwd=held.cwd,
        paths=tuple(held.paths),
        complete=complete,
        inodes=held.inodes,
        bentoml_home=bentoml_home,
    )


def _alive(proc: str) -> bool:
    """Return whether the process still has a command line (not gone, not a zombie)."""
    try:
        return bool(_read_proc(proc, "cmdline"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True  # cannot tell: the view stands


def _read_proc(proc: str, entry: str) -> bytes:
    """Return the whole of ``<proc>/<entry>`` (``/proc/<pid>``); raise OSError as reading does."""
    descriptor = os.open(f"{proc}/{entry}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(descriptor, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def _cmdline(data: bytes) -> tuple[str, ...]:
    """Return a command line from ``/proc/<pid>/cmdline``, split as psutil splits it.

    Arguments end in NUL; a process that rewrote its arguments into one
    string (``setproctitle``) has them separated by spaces.
    """
    text = os.fsdecode(data)
    if not text:
        return ()  # a kernel thread, or a zombie
    separator = "\0" if text.endswith("\0") else " "
    arguments = text.removesuffix(separator).split(separator)
    if separator == "\0" and len(arguments) == 1 and " " in text:
        arguments = text.removesuffix(separator).split(" ")
    return tuple(arguments)


def _name(proc: str, cmdline: tuple[str, ...]) -> str:
    """Return a process's name as psutil gives it: ``comm``, or its program's when cut short."""
    try:
        name = os.fsdecode(_read_proc(proc, "comm")).removesuffix("\n")
    except OSError:
        return ""
    if len(name) >= 15 and cmdline:  # the kernel keeps 15 characters of it
        program = os.path.basename(cmdline[0])
        if program.startswith(name):
            return program
    return name


def _inspect_with_psutil() -> Iterator[ProcessView]:
    """Yield the views psutil gives, where there is no ``/proc`` (no inodes there)."""
    import psutil  # noqa: PLC0415 - only where there is no /proc

    own = os.getpid()
    for process in psutil.process_iter(["pid", "name"]):
        if process.pid == own:
            continue
        complete = True
        cmdline: tuple[str, ...] = ()
        try:
            cmdline = tuple(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            complete = False
        cwd: str | None = None
        paths: list[str] = []
        try:
            cwd = process.cwd()
            paths = [item.path for item in process.open_files()]
            paths += [item.path for item in process.memory_maps(grouped=False)]
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            complete = False
        yield ProcessView(
            pid=process.pid,
            name=str(process.info.get("name") or ""),
            cmdline=cmdline,
            cwd=cwd,
            paths=tuple(dict.fromkeys(paths)),
            complete=complete,
        )


def _live_thread(pid: int) -> tuple[str, tuple[str, ...]] | None:
    """Return a live thread's ``/proc/<pid>/task/<tid>`` and command line; None if none has one."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in threads:
        if tid == str(pid):
            continue
        proc = f"/proc/{pid}/task/{tid}"
        try:
            cmdline = _cmdline(_read_proc(proc, "cmdline"))
        except OSError:
            continue
        if cmdline:
            return proc, cmdline
    return None


def _bentoml_home(proc: str) -> str | None:
    """Return BENTOML_HOME from ``/proc/<pid>/environ``; None if unset or unreadable.

    Raise FileNotFoundError or ProcessLookupError when the process has gone.

    A leading ``~`` is expanded with the process's own ``HOME``, as BentoML
    there expands it; without one it is left for :func:`_elsewhere` to call
    unknown.
    """
    try:
        data = _read_proc(proc, "environ")
    except (FileNotFoundError, ProcessLookupError):
        raise
    except OSError:
        return None
    environment: dict[bytes, bytes] = {}
    for item in data.split(b"\0"):
        key, _, value = item.partition(b"=")
        environment.setdefault(key, value)  # the first of a repeated name, as getenv reads it
    raw = environment.get(b"BENTOML_HOME")
    if raw is None:
        return None
    home = os.fsdecode(raw)
    user_home = environment.get(b"HOME")
    if user_home and (home == "~" or home.startswith("~/")):
        return os.fsdecode(user_home) + home[1:]
    return home


def _identity(path: str) -> Inode | None:
    """Return the ``(device, inode)`` of what ``path`` names; None if it cannot be stat'ed."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino)


def _elsewhere(
    view: ProcessView, store: Inode | None, identity: Callable[[str], Inode | None]
) -> bool:
    """Return whether the process's BENTOML_HOME is known to be a store other than this one.

    Compared by ``(device, inode)``, so a bind mount or any other path to this
    store is this store. The path is looked up as the process sees it first
    (``/proc/<pid>/root`` + it, or ``/proc/<pid>/cwd`` + it when relative: its
    mount namespace, its working directory), then as the warden does. Unset,
    unreadable, left for the process to expand (``$VAR``, ``~user``) or a path
    that cannot be stat'ed is unknown, which counts as this store (BentoML's
    default may be it): failing safe.
    """
    home = view.bentoml_home
    if not home or store is None or "$" in home or home.startswith("~"):
        return False
    home = home.rstrip("/") or "/"
    if home.startswith("/"):
        candidates = [f"/proc/{view.pid}/root{home}", home]
    else:
        candidates = [f"/proc/{view.pid}/cwd/{home}"]
        if view.cwd is not None:
            candidates.append(os.path.join(view.cwd, home))
    for candidate in candidates:
        found = identity(candidate)
        if found is not None:
            return found != store
    return False


@dataclass(frozen=True)
class Held:
    """What one process holds: its cwd, the paths of its open and mapped files, their inodes."""

    cwd: str | None
    paths: list[str]
    inodes: frozenset[Inode]


# Descriptors of things no path names: never a file of the store, so never stat'ed.
_NOT_FILES = ("socket:", "pipe:", "anon_inode:")


def _held(proc: str) -> Held:
    """Return what a process holds, read from ``proc`` (``/proc/<pid>``, or a thread's).

    Open files are the targets of ``fd/*`` (a stat through the link gives the
    file's device and inode whatever namespace opened it), mapped files come
    from ``maps`` (its device and inode columns), and the working directory
    from ``cwd``. Raise FileNotFoundError or ProcessLookupError if the
    process has gone (or is a zombie), another OSError (EACCES: another
    user's, without CAP_SYS_PTRACE) if it cannot be inspected.
    """
    inodes: set[Inode] = set()
    paths: list[str] = []
    cwd = os.readlink(f"{proc}/cwd")
    info = os.stat(f"{proc}/cwd")
    inodes.add((info.st_dev, info.st_ino))
    for descriptor in os.listdir(f"{proc}/fd"):
        link = f"{proc}/fd/{descriptor}"
        try:
            target = os.readlink(link)
            if target.startswith(_NOT_FILES):
                continue
            info = os.stat(link)
        except OSError:
            continue  # closed meanwhile, or a descriptor of nothing stat-able
        if target.startswith("/"):
            paths.append(target)
        if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
            inodes.add((info.st_dev, info.st_ino))
    mapped, mapped_inodes = _maps(_read_proc(proc, "maps"))
    paths.extend(mapped)
    inodes |= mapped_inodes
    return Held(cwd, paths, frozenset(inodes))


# address perms offset device inode path; a path is what starts with "/" (not [heap]).
_MAPPED = re.compile(rb"^\S+ \S+ \S+ ([0-9a-f]+):([0-9a-f]+) (\d+) +(/.*)$", re.MULTILINE)


def _maps(data: bytes) -> tuple[list[str], set[Inode]]:
    """Return the files ``/proc/<pid>/maps`` (``data``) maps: paths, and their inodes.

    Read there rather than from ``smaps`` (psutil's ``memory_maps``), whose
    per-mapping statistics cost ten times as much: a model server maps
    thousands of regions. A file mapped several times is taken once.
    """
    paths: dict[str, None] = {}
    inodes: set[Inode] = set()
    for major, minor, inode, path in dict.fromkeys(_MAPPED.findall(data)):
        paths[os.fsdecode(path)] = None
        inodes.add((os.makedev(int(major, 16), int(minor, 16)), int(inode)))
    return list(paths), inodes


def _relative_version(path: str, root: str) -> str | None:
    """Return ``kind/name/version`` of a path inside a version directory of the store, or None."""
    if not path.startswith(root):
        return None
    parts = path[len(root) :].lstrip("/").split("/", 3)
    if len(parts) < 3 or not all(parts[:3]):
        return None
    return "/".join(parts[:3])


def _resolve(token: str, cwd: str | None, cache: dict[str, str]) -> str:
    """Return a path argument with its symlinks resolved, a relative one against ``cwd``."""
    if not token.startswith("/"):
        if cwd is None:
            return token
        token = os.path.join(cwd, token)
    if token not in cache:
        try:
            cache[token] = os.path.realpath(token)
        except (OSError, ValueError):
            cache[token] = token
    return cache[token]


@dataclass(frozen=True)
class NamedVersions:
    """The versions command lines name with one name: version -> why, and their lengths.

    ``lengths`` (ascending) bound the prefixes a version of the name is
    looked up by to those some command line has.
    """

    versions: Mapping[str, str]
    lengths: tuple[int, ...]


@dataclass(frozen=True)
class ProcessTable:
    """A process table indexed once for a store: what each version key or tag is held by.

    Built in one pass over every process; asking about any number of versions
    afterwards is a dictionary lookup each.
    """

    by_version: Mapping[str, str]
    by_token: Mapping[str, str]
    processes: int
    uninspectable: int
    by_inode: Mapping[Inode, str] = field(default_factory=dict)
    # name -> the versions named with it on a command line; ``latest`` left out.
    by_name: Mapping[str, NamedVersions] = field(default_factory=dict)


def _is_warden(cmdline: tuple[str, ...]) -> bool:
    """Return whether a command line runs storewarden itself (its script, or ``-m storewarden``)."""
    # Its console script, run directly or through its shebang (the interpreter first).
    if any(os.path.basename(argument) == "storewarden" for argument in cmdline[:2]):
        return True
    head = cmdline[1:6]
    return any(
        argument == "-m" and following == "storewarden"
        for argument, following in itertools.pairwise(head)
    )


def _tokens(cmdline: Iterable[str]) -> Iterator[str]:
    """Yield the words of a command line: each argument split at spaces, ``=``, quotes."""
    for argument in cmdline:
        yield from (token for token in _TOKEN_SPLIT.split(argument) if token)


def _named_versions(
    view: ProcessView, root_text: str, resolved: dict[str, str]
) -> Iterator[tuple[str, str]]:
    """Yield ``(kind/name/version, word)`` for each command-line word naming a version's path."""
    for token in _tokens(view.cmdline):
        key = _relative_version(token + "/", root_text)
        if key is None and "/" in token:
            # Through a symlink (~/bentoml -> /data/bentoml, /srv/current -> a
            # version): /proc shows open files and cwd resolved, arguments not.
            key = _relative_version(_resolve(token, view.cwd, resolved) + "/", root_text)
        if key is not None:
            yield key, token


def index_processes(
    root: Path,
    views: Iterable[ProcessView],
    identity: Callable[[str], Inode | None] = _identity,
) -> ProcessTable:
    """Given the store root and process views, return them indexed by version and tag.

    ``identity`` gives a path's ``(device, inode)`` (None if it cannot be
    stat'ed): injectable so tests can present made-up filesystems.
    """
    root_text = str(root).rstrip("/") + "/"
    by_version: dict[str, str] = {}
    by_token: dict[str, str] = {}
    by_inode: dict[Inode, str] = {}
    by_name: dict[str, dict[str, str]] = {}
    resolved: dict[str, str] = {}
    store = identity(str(root))
    seen = uninspectable = 0
    for view in views:
        seen += 1
        if not view.complete:
            uninspectable += 1
        who = f"pid {view.pid} ({view.name})"
        for inode in view.inodes:
            by_inode.setdefault(inode, f"{who} holds a file of it open, mapped or as its cwd")
        for path in view.paths:
            key = _relative_version(path.removesuffix(" (deleted)"), root_text)
            if key is not None:
                by_version.setdefault(key, f"{who} has {path} open")
        if view.cwd is not None:
            key = _relative_version(view.cwd + "/", root_text)
            if key is not None:
                by_version.setdefault(key, f"{who} works in {view.cwd}")
        if _is_warden(view.cmdline):
            continue  # `storewarden delete iris:v1` names what it removes, not what it uses
        for key, token in _named_versions(view, root_text, resolved):
            by_version.setdefault(key, f"{who} names {token} on its command line")
        # RESNET:V1 and model(resnet:v1) name resnet:v1 (BentoML lower-cases a tag).
        tags = dict.fromkeys(tag for argument in view.cmdline for tag in find_tags(argument))
        if tags and not _elsewhere(view, store, identity):
            for tag in tags:  # a tag names a version of the store BentoML uses there
                why = by_token.setdefault(tag, f"{who} names {tag} on its command line")
                name, _, version = tag.partition(":")
                if version != POINTER:  # a pointer, never read as the start of a version
                    by_name.setdefault(name, {}).setdefault(version, why)
    named = {
        name: NamedVersions(versions, tuple(sorted({len(version) for version in versions})))
        for name, versions in by_name.items()
    }
    return ProcessTable(by_version, by_token, seen, uninspectable, by_inode, named)


def latest_version(record: VersionRecord) -> str | None:
    """Return the version the ``latest`` pointer of ``record``'s name names now; None if unknown.

    Unknown: no pointer, one that cannot be read, or one naming no version
    there. BentoML then rewrites it to the newest version by creation time,
    so any version of the name may be what ``name:latest`` loads.
    """
    directory = record.path.parent
    path = directory / POINTER
    try:
        pointer = read_pointer(record.kind, record.name, path, FileSystem(), os.lstat(path))
    except OSError:
        return None
    if pointer.target is None or not (directory / pointer.target).is_dir():
        return None
    return pointer.target


def _held_as_latest(
    table: ProcessTable,
    record: VersionRecord,
    latest: Callable[[VersionRecord], str | None],
    named: dict[tuple[str, str], str | None],
) -> str | None:
    """Return why ``record`` is held as what ``name:latest`` on a command line loads, or None."""
    why = table.by_token.get(f"{record.name}:{POINTER}")
    if why is None:
        return None
    if record.key not in named:
        named[record.key] = latest(record)
    target = named[record.key]
    if target is None:
        return f"{why}, and what latest names is unknown"
    return f"{why}, and latest names it" if target == record.version else None


def _held_by_prefix(
    table: ProcessTable,
    record: VersionRecord,
    is_version: Callable[[Path], bool],
    exact: dict[Path, bool],
) -> str | None:
    """Return why ``record`` is held as what a tag naming a prefix of its version loads, or None.

    BentoML's ``Store.get`` loads ``name:version`` itself when that directory
    exists and otherwise the version of the name that starts with it, any
    length, failing when several do. Every version that could be is held,
    ambiguous or not: one of them may have been the only one when the
    process loaded it. ``exact`` caches ``is_version`` per directory for one
    call of :func:`holders_in`.
    """
    named = table.by_name.get(record.name)
    if named is None:
        return None
    for end in named.lengths:  # one lookup per length named, however many tags
        if end >= len(record.version):
            break
        why = named.versions.get(record.version[:end])
        if why is None:
            continue
        directory = record.path.parent / record.version[:end]
        if directory not in exact:
            exact[directory] = is_version(directory)
        if not exact[directory]:
            return f"{why}, a prefix of {record.version} (BentoML loads a version by its prefix)"
    return None


def holders_in(
    table: ProcessTable,
    records: Iterable[VersionRecord],
    inodes: Mapping[Path, set[Inode]] | None = None,
    latest: Callable[[VersionRecord], str | None] = latest_version,
    is_version: Callable[[Path], bool] = os.path.isdir,
) -> InUseScan:
    """Return which of ``records`` the indexed process table holds.

    ``inodes`` gives, for versions walked just now, the ``(device, inode)`` of
    everything in them: a process holding any of those files holds the
    version, whatever path it used (the re-check before a removal walks its
    version anyway). Otherwise paths and tags are compared. A process naming
    ``name:latest`` (``bentoml serve iris:latest``) holds the version
    ``latest(record)`` says the pointer names now, or every version of the
    name while that is unknown (None); ``latest`` is injectable for tests.
    A tag whose version is a prefix of a record's version, and not itself a
    version of that kind and name (``is_version`` of its directory, asked of
    the store, not of ``records``: the re-check before a removal passes one
    record), holds the record as BentoML would load it.
    """
    holders: dict[Path, str] = {}
    named: dict[tuple[str, str], str | None] = {}
    exact: dict[Path, bool] = {}
    for record in records:
        why = table.by_version.get(f"{record.kind}/{record.name}/{record.version}")
        if why is None:
            why = table.by_token.get(record.tag)
        if why is None:
            why = _held_as_latest(table, record, latest, named)
        if why is None:
            why = _held_by_prefix(table, record, is_version, exact)
        if why is None and inodes is not None and table.by_inode:
            why = next(
                (
                    table.by_inode[inode]
                    for inode in inodes.get(record.path, ())
                    if inode in table.by_inode
                ),
                None,
            )
        if why is not None:
            holders[record.path] = why
    return InUseScan(holders=holders, processes=table.processes, uninspectable=table.uninspectable)


def scan(
    root: Path,
    records: Iterable[VersionRecord],
    processes: Callable[[], Iterable[ProcessView]] = inspect_processes,
) -> InUseScan:
    """Given the store root and its versions, return which versions running processes hold.

    ``processes`` is injectable so tests can present made-up process tables.
    """
    return holders_in(index_processes(root, processes()), records)

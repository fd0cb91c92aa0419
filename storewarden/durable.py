"""Writes that must survive a crash or a power loss: one place for fsync and atomic replace.

A file is replaced by writing a hidden temporary file beside it, flushing it
to disk, renaming it over the old one and flushing the directory, so a
reader (or the next boot) sees the old file or the new one, never half of
one. Pointers (through :class:`storewarden.prune.Operations`, whose steps
tests crash between), intents, pins, the census cache, the metrics textfile,
the usage history and archives all write through here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path

# Filesystems without hard links (vfat, some network mounts) answer link() so.
NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS)


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (creations, renames, unlinks) durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_new(path: Path, data: bytes, mode: int = 0o644, *, sync: bool = False) -> None:
    """Create ``path`` (it must not exist, nor be a symlink) holding ``data``, with ``mode``.

    The mode is set explicitly: the process umask must not narrow it (a
    ``latest`` BentoML wrote is 0644; node_exporter reads the textfile as
    another user). With ``sync``, the data is flushed to disk before return.
    Raise OSError (the file removed) if it cannot be written whole.
    """
    descriptor = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
    )
    try:
        try:
            os.fchmod(descriptor, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            if sync:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def replace_file(path: Path, data: bytes, mode: int = 0o644, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file, fsync, rename, fsync dir).

    The temporary file is hidden (``.<name>.<random>.tmp``) so that a
    reader globbing for ``*.prom`` or ``*.json`` never sees it. ``sync``
    false skips both fsyncs, for caches that may be lost. Raise OSError (no
    temporary file left) if it fails; the old file is then untouched.
    """
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    write_new(temporary, data, mode, sync=sync)
    try:
        os.rename(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if sync:
        fsync_directory(path.parent)


def link_new(source: Path, destination: Path) -> bool:
    """Give ``source`` the name ``destination`` unless that name exists; return whether it did.

    ``link`` never replaces (``rename`` would). On a filesystem without hard
    links, fall back to checking and renaming. ``source`` is gone afterwards
    either way when True is returned.
    """
    try:
        os.link(source, destination)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        if os.path.lexists(destination):
            return False
        os.rename(source, destination)
        return True
    os.unlink(source)
    return True


def append_line(path: Path, line: bytes, mode: int = 0o644) -> None:
    """Append ``line`` (ending in a newline) to ``path`` and flush it to disk.

    One ``write`` on a descriptor opened with ``O_APPEND``: a crash leaves at
    most this line cut short at the end, never an earlier one damaged. A new
    file's directory entry is flushed too. Raise OSError if it cannot be written.
    """
    created = not os.path.lexists(path)
    descriptor = os.open(
        path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode
    )
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    if created:
        fsync_directory(path.parent)

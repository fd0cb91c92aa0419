"""Derived paths, resolved once: the state directory, and where the warden must never write.

Besides the store, the warden writes to paths the config names
(``archive.dir``, ``log.file``). None of them may lie in the store's
``models/`` or ``bentos/`` (BentoML rejects the whole store for an entry
there that is not a tag, and the census would count it as the store's), nor
in the state directory's ``trash/`` or ``tmp/`` (the warden empties them).
:func:`forbidden_place` says so for any of them, links resolved, and each
caller words its own refusal.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = ".storewarden"  # under the store root
KIND_DIRECTORIES = ("models", "bentos")
# What the warden empties in its state directory (at every start, and after each removal).
WIPED_DIRECTORIES = ("trash", "tmp")


def state_directory(store: Path, state_dir: Path | None) -> Path:
    """Return the state directory, links resolved: ``state_dir`` or ``<store>/.storewarden``."""
    if state_dir is not None:
        return Path(os.path.realpath(state_dir))
    return Path(os.path.realpath(store)) / DEFAULT_STATE_DIR


class Danger(enum.Enum):
    """Why the warden must not write somewhere."""

    KIND_DIRECTORY = enum.auto()  # the store's models/ or bentos/: BentoML would break
    WIPED = enum.auto()  # the state directory's trash/ or tmp/: the warden empties them
    STATE_DIRECTORY = enum.auto()  # the state directory itself


@dataclass(frozen=True)
class Forbidden:
    """A path the warden must not write to: why, and the directory it is (or is inside)."""

    danger: Danger
    directory: Path


def forbidden_place(path: Path, store: Path, state_dir: Path | None = None) -> Forbidden | None:
    """Given a path the warden would write to, return why it must not, or None if it may.

    Links are resolved (a path through a symlink into ``models/`` is inside
    it). ``path`` is forbidden when it is, or lies inside, the store's
    ``models/`` or ``bentos/``, or the trash or tmp of ``state_dir``
    (resolved already, as :func:`state_directory` returns it), or when it
    is ``state_dir`` itself. No ``state_dir``: only the store is checked.
    """
    real = Path(os.path.realpath(path))
    if state_dir is not None:
        state = Path(os.path.realpath(state_dir))
        for name in WIPED_DIRECTORIES:
            wiped = state / name
            if real == wiped or wiped in real.parents:
                return Forbidden(Danger.WIPED, wiped)
        if real == state:
            return Forbidden(Danger.STATE_DIRECTORY, state)
    root = Path(os.path.realpath(store))
    for kind in KIND_DIRECTORIES:
        kind_dir = root / kind
        if real == kind_dir or kind_dir in real.parents:
            return Forbidden(Danger.KIND_DIRECTORY, kind_dir)
    return None

"""Disk usage of the filesystems the store spans."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

ALL_KINDS = ("models", "bentos")


@dataclass(frozen=True, slots=True)
class Usage:
    """Usage of the store's filesystem plus the bytes the store itself holds.

    ``used_percent`` follows ``df`` and psutil: used / (used + free), so
    blocks reserved for root do not count as free.

    A store whose ``models/`` or ``bentos/`` is a filesystem of its own has
    one ``part`` per filesystem (each with the ``kinds`` on it); the
    top-level figures are then those of the fullest one, and triggers and
    targets hold for each part on its own. ``store_bytes`` is always the
    whole store's.
    """

    total: int
    used: int
    free: int
    store_bytes: int
    parts: tuple[Usage, ...] = ()
    kinds: tuple[str, ...] = ALL_KINDS

    @property
    def used_percent(self) -> float:
        """Return used / (used + free) * 100, as ``df`` shows it."""
        capacity = self.used + self.free
        return 100.0 * self.used / capacity if capacity else 0.0

    def filesystems(self) -> tuple[Usage, ...]:
        """Return one usage per filesystem: the parts, or this one alone."""
        return self.parts or (self,)

    def after_freeing(self, freed: int, kind: str | None = None) -> Usage:
        """Return the usage projected after ``freed`` bytes of ``kind`` leave the store.

        With parts, only the filesystem holding ``kind`` gains the space
        (``kind`` None: every one, as a single filesystem does).
        """
        if self.parts:
            parts = tuple(
                part._freed(freed) if kind is None or kind in part.kinds else part
                for part in self.parts
            )
            fullest = max(parts, key=lambda part: part.used_percent)
            return replace(
                self,
                total=fullest.total,
                used=fullest.used,
                free=fullest.free,
                store_bytes=max(0, self.store_bytes - freed),
                parts=parts,
            )
        return self._freed(freed)

    def _freed(self, freed: int) -> Usage:
        freed = max(0, min(freed, self.used))
        return replace(
            self,
            used=self.used - freed,
            free=self.free + freed,
            store_bytes=max(0, self.store_bytes - freed),
        )

    def as_dict(self) -> dict[str, object]:
        """Return the usage as plain data for logs and JSON output."""
        data: dict[str, object] = {
            "total_bytes": self.total,
            "used_bytes": self.used,
            "free_bytes": self.free,
            "used_percent": round(self.used_percent, 2),
            "store_bytes": self.store_bytes,
        }
        if self.parts:
            data["filesystems"] = [
                {
                    "kinds": list(part.kinds),
                    "total_bytes": part.total,
                    "used_bytes": part.used,
                    "free_bytes": part.free,
                    "used_percent": round(part.used_percent, 2),
                }
                for part in self.parts
            ]
        return data


def measure(
    root: Path, store_bytes: int, layout: Sequence[tuple[Path, tuple[str, ...]]] = ()
) -> Usage:
    """Return the usage of the filesystem holding ``root``; raise OSError if it is gone.

    ``layout`` lists, when the store spans several filesystems, a directory
    on each with the kinds it holds (the store root's first).
    """
    if len(layout) < 2:
        total, used, free = disk_usage(root)
        return Usage(total=total, used=used, free=free, store_bytes=store_bytes)
    parts = []
    for directory, kinds in layout:
        total, used, free = disk_usage(directory)
        parts.append(Usage(total, used, free, 0, kinds=kinds))
    fullest = max(parts, key=lambda part: part.used_percent)
    return Usage(fullest.total, fullest.used, fullest.free, store_bytes, parts=tuple(parts))


def disk_usage(path: Path) -> tuple[int, int, int]:
    """Return ``(total, used, free)`` bytes of the filesystem holding ``path``, as ``df`` counts.

    psutil's ``disk_usage`` to the byte (``used`` counts root's reserved
    blocks as used, ``free`` is what any user may still write), from one
    ``statvfs``: psutil itself would cost a prune command its import.
    Raise OSError if ``path`` cannot be reached.
    """
    info = os.statvfs(path)
    total = info.f_blocks * info.f_frsize
    return total, total - info.f_bfree * info.f_frsize, info.f_bavail * info.f_frsize

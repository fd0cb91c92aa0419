"""Disk usage of the store's filesystem."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True)
class Usage:
    """Usage of the store's filesystem plus the bytes the store itself holds.

    ``used_percent`` follows ``df`` and psutil: used / (used + free), so
    blocks reserved for root do not count as free.
    """

    total: int
    used: int
    free: int
    store_bytes: int

    @property
    def used_percent(self) -> float:
        """Return used / (used + free) * 100, as ``df`` shows it."""
        capacity = self.used + self.free
        return 100.0 * self.used / capacity if capacity else 0.0

    def after_freeing(self, freed: int) -> Usage:
        """Return the usage projected after ``freed`` bytes are removed from the store."""
        freed = max(0, min(freed, self.used))
        return replace(
            self,
            used=self.used - freed,
            free=self.free + freed,
            store_bytes=max(0, self.store_bytes - freed),
        )

    def as_dict(self) -> dict[str, float | int]:
        """Return the usage as plain data for logs and JSON output."""
        return {
            "total_bytes": self.total,
            "used_bytes": self.used,
            "free_bytes": self.free,
            "used_percent": round(self.used_percent, 2),
            "store_bytes": self.store_bytes,
        }


def measure(root: Path, store_bytes: int) -> Usage:
    """Return the usage of the filesystem holding ``root``; raise OSError if it is gone."""
    disk = psutil.disk_usage(str(root))
    return Usage(total=disk.total, used=disk.used, free=disk.free, store_bytes=store_bytes)

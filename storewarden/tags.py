"""BentoML tags: what a valid name or version looks like."""

from __future__ import annotations

import re

TAG_PATTERN = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")
MAX_TAG_LENGTH = 63


def is_valid_tag_part(text: str) -> bool:
    """Return whether ``text`` is a valid BentoML name or version."""
    return len(text) <= MAX_TAG_LENGTH and TAG_PATTERN.match(text) is not None

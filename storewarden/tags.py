"""BentoML tags: what a valid name or version looks like."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

# The characters of a tag part: BentoML's tag_fmt is [a-z0-9]([-._a-z0-9]*[a-z0-9])?
_PART_CHARACTERS = "-._a-z0-9"
_EDGES = "-._"  # a part neither starts nor ends with one of these
TAG_PATTERN = re.compile(rf"^[a-z0-9]([{_PART_CHARACTERS}]*[a-z0-9])?$")
MAX_TAG_LENGTH = 63
# Runs of part characters joined by colons: `iris:v1`, `registry:iris:v1`.
_TAG_SHAPED = re.compile(rf"[{_PART_CHARACTERS}]+(?::[{_PART_CHARACTERS}]+)+")


# Where a version removed in place (its kind directory a mount of its own) waits
# while its files go: a name directory BentoML lists, as it must be a valid tag,
# but under which no tag of the version resolves. Never a name of the store's.
REMOVING_PREFIX = "storewarden-removing-"


def is_valid_tag_part(text: str) -> bool:
    """Return whether ``text`` is a valid BentoML name or version."""
    return len(text) <= MAX_TAG_LENGTH and TAG_PATTERN.match(text) is not None


def find_tags(text: str) -> Iterator[str]:
    """Given any text (a command-line argument), yield every ``name:version`` inside it.

    Lower-cased first, as BentoML reads a tag. A tag is found wherever it
    stands, between any characters that cannot be part of it:
    ``model(iris:v1)``, ``[iris:v1]``, ``--model=iris:v1``, ``iris:v1,resnet:v2``;
    each neighbouring pair of ``a:b:c`` is one, and the separators ``-._``
    at a part's edges are dropped (``iris:v1.`` ends a sentence). Text that
    only looks like a tag (``host:8080``) is yielded too: whoever asks about
    versions errs on the side of keeping them.
    """
    if ":" not in text:
        return  # most arguments: no tag can be in them (the process scan asks of every one)
    for match in _TAG_SHAPED.finditer(text.lower()):
        parts = [part.strip(_EDGES) for part in match.group().split(":")]
        for name, version in itertools.pairwise(parts):
            if is_valid_tag_part(name) and is_valid_tag_part(version):
                yield f"{name}:{version}"


def is_store_name(text: str) -> bool:
    """Return whether ``text`` names versions of the store (a valid name, not one being removed)."""
    return is_valid_tag_part(text) and not text.startswith(REMOVING_PREFIX)


def new_tag_problem(name: str, version: str) -> str | None:
    """Given the name and version a version would be created under, return what is wrong; or None.

    Stricter than what the census reads: both lower case (BentoML
    lower-cases every tag, so ``Iris`` would be another name to it), each
    matching the whole pattern (``$`` lets a final newline through, in
    BentoML's check too); the version may not be ``latest`` (a directory
    there is read as the pointer) nor the name begin with
    :data:`REMOVING_PREFIX` (the warden's, for a removal in place).
    """
    if name.lower() != name or version.lower() != version:
        return f"BentoML lower-cases tags (it would read {name.lower()}:{version.lower()})"
    for part in (name, version):
        if len(part) > MAX_TAG_LENGTH or TAG_PATTERN.fullmatch(part) is None:
            return (
                f"not a valid tag (at most {MAX_TAG_LENGTH} lower case letters, digits,"
                " . _ -, beginning and ending with a letter or digit)"
            )
    if version == "latest":
        return "latest is the pointer to a name's newest version, not a version"
    if name.startswith(REMOVING_PREFIX):
        return f"names beginning {REMOVING_PREFIX!r} are reserved for storewarden"
    return None


# A tag part as BentoML spells it, plus the glob characters * ? [ ] !.
_GLOB_PART = re.compile(r"^[a-z0-9._*?\[\]!-]{1,63}$")


def check_pin_glob(tag: str) -> str:
    """Return ``tag`` if it is a pin glob (``name:version``, ``name:*``); raise ValueError.

    BentoML lower-cases every tag, so a glob with a capital letter could never
    match; ``latest`` is a pointer, not a version, and is refused too.
    """
    name, colon, version = tag.partition(":")
    if not colon or not _GLOB_PART.match(name) or not _GLOB_PART.match(version):
        hint = f" (BentoML lower-cases tags: write {tag.lower()!r})" if tag != tag.lower() else ""
        raise ValueError(
            f"pin {tag!r} must look like 'name:version' or 'name:*' "
            f"(lower case letters, digits, . _ - and the globs * ? [ ]){hint}"
        )
    if version == "latest":
        raise ValueError(
            f"pin {tag!r}: latest is a pointer, not a version, so it would match nothing."
            " protect.keep_latest keeps whatever latest names; to pin the version it"
            f" names now, run `storewarden pin {tag}`"
        )
    return tag

"""A fast, strict reader for the plain YAML subset BentoML writes in model.yaml.

The census needs two things from each descriptor: ``creation_time`` and
``labels``. Building the whole document with PyYAML (even its C loader)
costs ~0.4 ms a file, most of it constructing keys the warden never reads.
:func:`read_plain` instead checks, line by line, that the document stays
inside a small subset of YAML whose meaning is unambiguous -- block mappings
with consistent indentation, keys of plain characters, values that are
plain words, single-quoted strings, ``{}`` or ``[]`` -- and reads the two
fields. Anything else (sequences, flow collections, double quotes,
comments, anchors, tags, multi-line scalars, a label value YAML would turn
into a bool or a number) returns None, and the caller parses the file with
PyYAML's C loader. So the fast path is only ever taken where it and PyYAML
agree; a property test holds it to that.
"""

from __future__ import annotations

import re

_KEY = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
# A plain word never starts with an indicator and never ends with ':'; words are
# joined by single spaces, so neither ': ' nor ' #' can occur inside a value.
_WORD = r"[A-Za-z0-9_./+](?:[A-Za-z0-9_./+:-]*[A-Za-z0-9_./+-])?"
_PLAIN = rf"{_WORD}(?: {_WORD})*"
_QUOTED = r"'(?:[^'\n]|'')*'"
_LINE = re.compile(rf"^( *)({_KEY}):(?: ({_QUOTED}|{_PLAIN}|\{{\}}|\[\]))?$")
# Plain scalars YAML 1.1 resolves to something other than a string (bool, null,
# numbers, timestamps, sexagesimals). Broader than PyYAML's resolver on purpose:
# a false alarm only costs a full parse.
_NOT_A_STRING = re.compile(
    r"^(?:~|null|true|false|yes|no|on|off|y|n|[-+.0-9][-+.0-9_eExXa-fA-FoO:]*"
    r"|\.(?:inf|nan)|\d{4}-\d\d?-\d\d?.*)$",
    re.IGNORECASE,
)


def _scalar(text: str) -> str:
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return text


class _OutsideSubsetError(Exception):
    """The text left the plain subset; PyYAML must read it."""


def _step_indent(levels: list[int], opened: bool, indent: int) -> None:
    """Move the block-indent stack to ``indent``; raise _OutsideSubsetError if YAML differs."""
    if opened and indent > levels[-1]:
        levels.append(indent)
        return
    while levels and levels[-1] > indent:
        levels.pop()
    if not levels or levels[-1] != indent:
        raise _OutsideSubsetError  # an indentation YAML would reject or read otherwise


def _label(key: str, value: str | None) -> str:
    """Return a label value as PyYAML gives it; raise _OutsideSubsetError unless a string."""
    if value is None or value in ("{}", "[]") or _NOT_A_STRING.match(key):
        raise _OutsideSubsetError  # nested, or a key YAML would turn into a bool or a number
    if not value.startswith("'") and _NOT_A_STRING.match(value):
        raise _OutsideSubsetError
    return _scalar(value)


def _read(text: str) -> tuple[str | None, dict[str, str]]:
    levels = [0]
    opened = False  # the previous line was 'key:' with nothing after it
    parents: list[str] = []  # keys of the open blocks, outermost first
    creation_time: str | None = None
    labels: dict[str, str] = {}
    labels_seen = False
    for line in text.split("\n"):
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise _OutsideSubsetError
        _step_indent(levels, opened, len(match.group(1)))
        key, value = match.group(2), match.group(3)
        depth = len(levels) - 1
        del parents[depth:]
        if depth == 0 and key == "creation_time":
            if value is None or not value.startswith("'"):
                raise _OutsideSubsetError  # unquoted: PyYAML's timestamp rules decide, not ours
            creation_time = _scalar(value)
        elif depth == 0 and key == "labels":
            if labels_seen or value not in (None, "{}"):
                raise _OutsideSubsetError  # repeated (last one wins) or not a block mapping
            labels_seen = True
        elif parents[:1] == ["labels"]:
            if depth != 1:
                raise _OutsideSubsetError
            labels[key] = _label(key, value)
        opened = value is None
        parents.append(key)
    return creation_time, labels


def read_plain(text: str) -> tuple[str | None, dict[str, str]] | None:
    """Given a descriptor's text, return ``(creation_time text, labels)``, or None.

    None means the text is outside the plain subset and must be parsed by
    PyYAML; a returned value equals what PyYAML would give for those fields
    (labels as strings, creation_time as its text).
    """
    if not text or not text[0].isalnum():
        return None
    try:
        return _read(text)
    except _OutsideSubsetError:
        return None

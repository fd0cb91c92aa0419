"""Which models a bento needs: read from its ``bento.yaml`` as BentoML computes it.

BentoML 1.2+ does not copy a model into a bento it builds: ``bento.yaml``
records the resolved tag, and the bento needs that model version in the
store to be served or containerized. BentoML's own ``bentoml models delete``
refuses a model any bento of the store names, taking the union of the
top-level ``models`` list and every ``services[].models`` list
(``BaseBentoInfo.all_models``). Its CLI does not look at an entry's
``registry``, so neither does the warden: an entry of another registry only
protects a store model that carries the same tag, which is what BentoML's
CLI refuses too.

Everything here is pure: it takes parsed YAML and returns tags and the
problems met, never raising on hostile input. Work is bounded by the
number of distinct YAML objects (aliases are visited once), so a "billion
laughs" document cannot make it loop for ever.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from storewarden.tags import is_valid_tag_part

LATEST = "latest"
# A problem list longer than this is cut: one line per bad entry of a hostile
# file with a million of them would flood the audit log.
MAX_PROBLEMS = 10
# Longer than any tag (63 + 1 + 63); longer text is not looked at further.
_MAX_TAG_TEXT = 200


def normalize_tag(value: object) -> tuple[str | None, str | None]:
    """Given one entry's tag, return ``(name:version, None)`` or ``(None, problem)``.

    BentoML lower-cases tags (``Tag.__init__``), so ``Iris:V1`` needs
    ``iris:v1``. A tag without a version, or with ``latest``, needs whatever
    ``latest`` names when BentoML resolves it: ``name:latest``.
    """
    if not isinstance(value, str):
        return None, f"tag {_short(value)} is not text"
    if len(value) > _MAX_TAG_TEXT:
        return None, f"tag {value[:40]!r}... is too long to be a tag"
    name, colon, version = value.strip().lower().partition(":")
    if not colon or not version:
        version = LATEST
    if not is_valid_tag_part(name):
        return None, f"tag {value!r} has no valid model name"
    if version != LATEST and not is_valid_tag_part(version):
        return None, f"tag {value!r} has no valid version"
    return f"{name}:{version}", None


def _short(value: object) -> str:
    text = repr(value) if isinstance(value, int | float | bool) or value is None else None
    return text if text is not None else f"of type {type(value).__name__}"


def _entries(data: Mapping[Any, object]) -> Iterator[tuple[str, object]]:
    """Yield ``(where, entry)`` for every model entry: top-level, then each service's."""
    seen: set[int] = set()

    def listed(where: str, models: object) -> Iterator[tuple[str, object]]:
        if models is None or id(models) in seen:
            return
        seen.add(id(models))
        if not isinstance(models, list):
            yield where, _NOT_A_LIST
            return
        for entry in models:
            yield where, entry

    yield from listed("models", data.get("models"))
    services = data.get("services")
    if services is None:
        return
    if not isinstance(services, list):
        yield "services", _NOT_A_LIST
        return
    for position, service in enumerate(services):
        if id(service) in seen:
            continue
        seen.add(id(service))
        if isinstance(service, dict):
            yield from listed(f"services[{position}].models", service.get("models"))


_NOT_A_LIST = object()


def bento_references(data: Mapping[Any, object]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Given a parsed ``bento.yaml``, return the model tags it needs and the problems met.

    An entry is a mapping with a ``tag`` (what BentoML writes) or a bare tag
    string. Entries that name no valid tag are reported and skipped: BentoML
    cannot load such a bento, so it needs no model for them.
    """
    tags: dict[str, None] = {}
    problems: list[str] = []
    dropped = 0

    def problem(text: str) -> None:
        nonlocal dropped
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)
        else:
            dropped += 1

    for where, entry in _entries(data):
        if entry is _NOT_A_LIST:
            problem(f"{where} is not a list")
            continue
        value = entry.get("tag") if isinstance(entry, dict) else entry
        tag, why = normalize_tag(value)
        if tag is None:
            problem(f"{where}: {why}; ignored")
        else:
            tags[tag] = None
    if dropped:
        problems.append(f"and {dropped} more problems")
    return tuple(tags), tuple(problems)

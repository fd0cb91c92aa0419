"""Write a realistic BentoML 1.4 store fast, for benchmarks and slow tests.

The store is laid out exactly as BentoML 1.4.40 writes one, as checked
against the real package: ``models/<name>/<version>/model.yaml`` plus
artifact files, ``bentos/<name>/<version>/bento.yaml`` plus ``src/``, and a
plain-file ``latest`` pointer per name. ``model.yaml`` comes from a string
template instead of one ``yaml.safe_dump`` per version; the template's output
is byte-for-byte what BentoML's ``ModelInfo.dump()`` writes, which the
integration test checks against the real package.

Everything is seeded: the same arguments (including ``now``) give the same
store. Versions are made the way BentoML makes them (base32 of a uuid1's time
and clock bits), so they are 16 characters of ``[a-z2-7]`` that do not sort by
creation time, and every file's mtime is set to its version's creation time so
the store looks aged.

As a script it prints a table of what it made and how long it took::

    python bench/genstore.py DIR --names 50 --versions 100 --files 4 --bytes 4096
"""

from __future__ import annotations

import argparse
import base64
import bisect
import os
import random
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

import yaml

Kind = Literal["models", "bentos"]

BENTOML_VERSION: Final = "1.4.40"
# BentoML records the interpreter that saved the model as major.minor.micro.
PYTHON_VERSION: Final = (
    f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
)
TAG_PATTERN: Final = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")
MAX_TAG_LENGTH: Final = 63
BENTO_VERSIONS_PER_NAME: Final = 4

_MICROSECONDS_PER_DAY: Final = 86_400 * 1_000_000
# uuid1 counts 100 ns ticks from the start of the Gregorian calendar.
_UUID_EPOCH: Final = datetime(1582, 10, 15, tzinfo=UTC)
# Random bytes cycled through to fill artifact files: random so that a
# compressing filesystem (zfs, btrfs) stores as many blocks as it is told to.
_PAYLOAD_POOL_BYTES: Final = 1024 * 1024
# Each file starts at a different, not block-aligned offset into the pool, so
# a deduplicating filesystem cannot fold files together either.
_PAYLOAD_STRIDE: Final = 4099
_FILE_MODE: Final = 0o644
_VERSION_DIRECTORY_MODE: Final = 0o700
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

_DOMAINS: Final = (
    "iris",
    "fraud",
    "churn",
    "ranking",
    "sentiment",
    "ocr",
    "speech",
    "recsys",
    "pricing",
    "spam",
    "toxicity",
    "forecast",
    "search",
    "vision",
    "intent",
    "anomaly",
)
_ARCHITECTURES: Final = (
    "clf",
    "xgb",
    "lgbm",
    "bert-base",
    "resnet50",
    "llama-3b",
    "t5-small",
    "detector",
    "regressor",
    "tokenizer",
)
# Mostly dashes, as in BentoML's examples, but the other legal separators too.
_SEPARATORS: Final = ("-", "-", "-", "_", ".")
_BENTO_SUFFIXES: Final = ("service", "api", "svc")
_ARTIFACT_NAMES: Final = (
    "saved_model.pkl",
    "weights.bin",
    "config.json",
    "custom_objects.pkl",
    "tokenizer.json",
    "vocab.txt",
)
# A quarter of versions carry one of these; "true" exercises YAML quoting.
_MODEL_LABEL_CHOICES: Final[tuple[Mapping[str, str], ...]] = (
    MappingProxyType({"stage": "prod"}),
    MappingProxyType({"stage": "staging"}),
    MappingProxyType({"stage": "dev"}),
    MappingProxyType({"owner": "search-team"}),
    MappingProxyType({"stage": "prod", "owner": "ranking-team"}),
    MappingProxyType({"keep": "true"}),
)
_BENTO_LABEL_CHOICES: Final[tuple[Mapping[str, str], ...]] = (
    MappingProxyType({"team": "ml"}),
    MappingProxyType({"stage": "prod"}),
    MappingProxyType({"team": "platform", "stage": "canary"}),
)
_LABELLED_SHARE: Final = 0.25
_NO_LABELS: Final[Mapping[str, str]] = MappingProxyType({})

_RESOLVER: Final = yaml.resolver.Resolver()
_STRING_TAG: Final = "tag:yaml.org,2002:str"
# The part of model.yaml that is the same for every version BentoML 1.4.40
# writes through ``bentoml.models.create`` on this interpreter.
_MODEL_YAML_MIDDLE: Final = yaml.safe_dump(
    {
        "options": {},
        "metadata": {},
        "context": {
            "framework_name": "",
            "framework_versions": {},
            "bentoml_version": BENTOML_VERSION,
            "python_version": PYTHON_VERSION,
        },
        "signatures": {},
        "api_version": "v1",
    },
    sort_keys=False,
)


@dataclass(frozen=True)
class GeneratedVersion:
    """One version the generator wrote.

    ``bytes`` is the apparent size (``st_size``) of every file inside the
    version directory, ``model.yaml``/``bento.yaml`` included; with
    ``sparse=True`` the artifact files occupy next to no disk blocks.
    ``models`` lists the model tags a bento was built with (empty for models).
    """

    kind: Kind
    name: str
    version: str
    path: Path
    creation_time: datetime
    labels: Mapping[str, str]
    bytes: int
    models: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        """Return the version's tag, ``name:version``."""
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class GeneratedStore:
    """What :func:`generate_store` wrote under ``root``.

    ``versions`` maps ``(kind, name)`` to that name's versions, oldest first;
    the last one is what the name's ``latest`` pointer names.
    ``total_bytes`` sums every version's ``bytes`` (pointers excluded) and
    ``file_count`` counts the files inside version directories.
    """

    root: Path
    version_count: int
    file_count: int
    total_bytes: int
    versions: Mapping[tuple[Kind, str], tuple[GeneratedVersion, ...]]

    def all_versions(self, kind: Kind | None = None) -> Iterator[GeneratedVersion]:
        """Given an optional kind, yield every generated version (of that kind)."""
        for (version_kind, _name), versions in self.versions.items():
            if kind is None or version_kind == kind:
                yield from versions

    def latest(self, kind: Kind, name: str) -> GeneratedVersion:
        """Given a kind and name, return its newest version; raise KeyError if none."""
        return self.versions[(kind, name)][-1]


def render_model_yaml(
    name: str, version: str, labels: Mapping[str, str], creation_time: datetime
) -> str:
    """Given a model's tag, labels and creation time, return its model.yaml text.

    The text equals ``yaml.safe_dump(info, sort_keys=False)`` of the dict
    BentoML 1.4.40 builds for a model made with ``bentoml.models.create``
    (module '', no framework, no options, metadata or signatures).
    Raise ValueError if ``creation_time`` is not timezone-aware UTC.
    """
    return (
        f"name: {_yaml_tag_scalar(name)}\n"
        f"version: {_yaml_tag_scalar(version)}\n"
        "module: ''\n"
        f"{_labels_block(tuple(labels.items()))}"
        f"{_MODEL_YAML_MIDDLE}"
        # An ISO timestamp always resolves as a YAML timestamp, so safe_dump
        # single-quotes it to keep it a string; it never contains a quote.
        f"creation_time: '{_utc_isoformat(creation_time)}'\n"
    )


def render_bento_yaml(
    name: str,
    version: str,
    labels: Mapping[str, str],
    creation_time: datetime,
    models: Sequence[GeneratedVersion],
) -> str:
    """Given a bento's tag, labels, creation time and models, return its bento.yaml text.

    The layout is what ``bentoml build`` 1.4.40 writes for a one-service,
    one-API bento (spec 2): the models sit under ``services[0].models`` and
    the top-level ``models`` list stays empty, as real builds leave it.
    Raise ValueError if a time is not timezone-aware UTC.
    """
    service_class = _service_class(name)
    info = {
        "service": f"service:{service_class}",
        "name": name,
        "version": version,
        "bentoml_version": BENTOML_VERSION,
        "creation_time": _utc_isoformat(creation_time),
        "labels": dict(labels),
        "models": [],
        "entry_service": service_class,
        "services": [
            {
                "name": service_class,
                "service": "",
                "models": [
                    {
                        "tag": model.tag,
                        "module": "",
                        "creation_time": _utc_isoformat(model.creation_time),
                    }
                    for model in models
                ],
                "dependencies": [],
                "config": {},
            }
        ],
        "envs": [],
        "schema": {
            "name": service_class,
            "type": "service",
            "routes": [
                {
                    "name": "predict",
                    "route": "/predict",
                    "batchable": False,
                    "input": {
                        "properties": {"text": {"title": "Text", "type": "string"}},
                        "required": ["text"],
                        "title": "Input",
                        "type": "object",
                    },
                    "output": {"type": "string"},
                    "is_task": False,
                }
            ],
            "paths": {"/predict": {"mounted": False}},
        },
        "args": {},
        "spec": 2,
        "image": {
            "base_image": "python:3.11-slim",
            "python_version": "3.11",
            "commands": [],
            "python_requirements": f"bentoml=={BENTOML_VERSION}\n",
            "post_commands": [],
            "build_include": [],
        },
    }
    return yaml.safe_dump(info, sort_keys=False)


def generate_store(
    root: Path,
    *,
    names: int,
    versions_per_name: int,
    files_per_version: int,
    bytes_per_file: int,
    bentos: int = 0,
    seed: int = 0,
    span_days: int = 180,
    now: datetime | None = None,
    sparse: bool = False,
) -> GeneratedStore:
    """Given a directory, write a BentoML 1.4 store into it and return what was written.

    Makes ``names`` model names with ``versions_per_name`` versions each,
    every version holding ``files_per_version`` artifact files of
    ``bytes_per_file`` bytes (sparse files if ``sparse``), and ``bentos``
    bento versions, four to a bento name. Creation times are unique across
    the store and drawn at random from the ``span_days`` days before ``now``
    (default: the current time); a bento pins the version of a model that
    was latest when the bento was built. ``root`` is created if missing.

    Raise ValueError if a count is out of range, ``now`` is not
    timezone-aware, or the span has too few microseconds for unique times;
    raise FileExistsError if ``root`` already holds a ``models`` or
    ``bentos`` directory.
    """
    _check_arguments(
        names=names,
        versions_per_name=versions_per_name,
        files_per_version=files_per_version,
        bytes_per_file=bytes_per_file,
        bentos=bentos,
        span_days=span_days,
    )
    now = datetime.now(UTC) if now is None else now
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    for kind in ("models", "bentos"):
        if (root / kind).exists():
            raise FileExistsError(f"{root / kind} already exists; generate into a fresh directory")

    rng = random.Random(seed)
    bento_name_count = -(-bentos // BENTO_VERSIONS_PER_NAME)
    model_names = _make_names(rng, names, suffixes=None)
    bento_names = _make_names(rng, bento_name_count, suffixes=_BENTO_SUFFIXES)
    ages = rng.sample(
        range(1, span_days * _MICROSECONDS_PER_DAY + 1), names * versions_per_name + bentos
    )
    # A handful of build hosts: each stamps its node bytes on the versions it makes.
    nodes = [rng.getrandbits(16).to_bytes(2, "big") for _ in range(3)]
    pool = memoryview(rng.randbytes(_PAYLOAD_POOL_BYTES))

    root.mkdir(parents=True, exist_ok=True)
    for directory in ("models", "bentos", "envs", "tmp"):
        (root / directory).mkdir()

    writer = _Writer(pool=pool, sparse=sparse)
    versions: dict[tuple[Kind, str], tuple[GeneratedVersion, ...]] = {}
    age_iterator = iter(ages)
    for name in model_names:
        creation_times = sorted(
            now - timedelta(microseconds=next(age_iterator)) for _ in range(versions_per_name)
        )
        versions[("models", name)] = writer.write_models(
            root / "models" / name,
            name=name,
            creation_times=creation_times,
            versions=_make_versions(rng, creation_times, nodes),
            labels=[_pick_labels(rng, _MODEL_LABEL_CHOICES) for _ in creation_times],
            files_per_version=files_per_version,
            bytes_per_file=bytes_per_file,
        )
    for index, name in enumerate(bento_names):
        count = min(BENTO_VERSIONS_PER_NAME, bentos - index * BENTO_VERSIONS_PER_NAME)
        creation_times = sorted(
            now - timedelta(microseconds=next(age_iterator)) for _ in range(count)
        )
        # A service keeps serving one model name and pins whatever version was latest.
        served = versions[("models", rng.choice(model_names))]
        pinned = [_latest_at(served, moment) for moment in creation_times]
        versions[("bentos", name)] = writer.write_bentos(
            root / "bentos" / name,
            name=name,
            creation_times=creation_times,
            versions=_make_versions(rng, creation_times, nodes),
            labels=[_pick_labels(rng, _BENTO_LABEL_CHOICES) for _ in creation_times],
            models=[() if model is None else (model,) for model in pinned],
        )
    for kind in ("models", "bentos"):
        newest = [
            generated[-1].creation_time
            for (generated_kind, _name), generated in versions.items()
            if generated_kind == kind
        ]
        if newest:
            _set_mtime(root / kind, max(newest))

    return GeneratedStore(
        root=root,
        version_count=sum(len(generated) for generated in versions.values()),
        file_count=writer.file_count,
        total_bytes=sum(version.bytes for generated in versions.values() for version in generated),
        versions=MappingProxyType(versions),
    )


class _Writer:
    """Writes version directories with few syscalls and counts the files it made."""

    def __init__(self, *, pool: memoryview, sparse: bool) -> None:
        self._pool = pool
        self._sparse = sparse
        self._payload_offset = 0
        self.file_count = 0

    def write_models(
        self,
        name_directory: Path,
        *,
        name: str,
        creation_times: Sequence[datetime],
        versions: Sequence[str],
        labels: Sequence[Mapping[str, str]],
        files_per_version: int,
        bytes_per_file: int,
    ) -> tuple[GeneratedVersion, ...]:
        """Given one model name's versions, oldest first, write them and their pointer."""
        name_directory.mkdir()
        artifact_names = _artifact_names(files_per_version)
        generated = []
        for version, creation_time, version_labels in zip(
            versions, creation_times, labels, strict=True
        ):
            directory = f"{name_directory}/{version}"
            mtime_ns = _nanoseconds(creation_time)
            # BentoML builds a version in a mkdtemp directory (0700) and
            # copytree carries that mode into the store. Plain str paths
            # because Path objects cost more than the syscalls here.
            os.mkdir(directory, _VERSION_DIRECTORY_MODE)
            model_yaml = render_model_yaml(name, version, version_labels, creation_time).encode()
            self._write_text(f"{directory}/model.yaml", model_yaml, mtime_ns)
            for artifact_name in artifact_names:
                self._write_artifact(f"{directory}/{artifact_name}", bytes_per_file, mtime_ns)
            os.utime(directory, ns=(mtime_ns, mtime_ns))
            generated.append(
                GeneratedVersion(
                    kind="models",
                    name=name,
                    version=version,
                    path=Path(directory),
                    creation_time=creation_time,
                    labels=version_labels,
                    bytes=len(model_yaml) + files_per_version * bytes_per_file,
                )
            )
        self._finish_name(name_directory, generated[-1])
        return tuple(generated)

    def write_bentos(
        self,
        name_directory: Path,
        *,
        name: str,
        creation_times: Sequence[datetime],
        versions: Sequence[str],
        labels: Sequence[Mapping[str, str]],
        models: Sequence[tuple[GeneratedVersion, ...]],
    ) -> tuple[GeneratedVersion, ...]:
        """Given one bento name's versions, oldest first, write them and their pointer."""
        name_directory.mkdir()
        generated = []
        for version, creation_time, version_labels, version_models in zip(
            versions, creation_times, labels, models, strict=True
        ):
            directory = name_directory / version
            mtime_ns = _nanoseconds(creation_time)
            directory.mkdir(_VERSION_DIRECTORY_MODE)
            files = {
                "bento.yaml": render_bento_yaml(
                    name, version, version_labels, creation_time, version_models
                ),
                "README.md": f"# {name}\n\nGenerated by storewarden's bench/genstore.py.\n",
                "src/service.py": _service_source(name),
                "env/python/requirements.txt": f"bentoml=={BENTOML_VERSION}\n",
            }
            size = 0
            for relative_path, text in files.items():
                path = directory / relative_path
                path.parent.mkdir(parents=True, exist_ok=True)
                content = text.encode()
                self._write_text(str(path), content, mtime_ns)
                size += len(content)
            for subdirectory in ("src", "env/python", "env", "."):
                _set_mtime(directory / subdirectory, creation_time)
            generated.append(
                GeneratedVersion(
                    kind="bentos",
                    name=name,
                    version=version,
                    path=directory,
                    creation_time=creation_time,
                    labels=version_labels,
                    bytes=size,
                    models=tuple(model.tag for model in version_models),
                )
            )
        self._finish_name(name_directory, generated[-1])
        return tuple(generated)

    def _finish_name(self, name_directory: Path, newest: GeneratedVersion) -> None:
        """Write the plain-file latest pointer (no newline, 0644) and age the name directory."""
        mtime_ns = _nanoseconds(newest.creation_time)
        descriptor = os.open(name_directory / "latest", _OPEN_FLAGS, _FILE_MODE)
        try:
            _write_all(descriptor, newest.version.encode())
            # The umask may have narrowed the mode; BentoML's pointers are 0644.
            os.fchmod(descriptor, _FILE_MODE)
            os.utime(descriptor, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(descriptor)
        os.utime(name_directory, ns=(mtime_ns, mtime_ns))

    def _write_text(self, path: str, content: bytes, mtime_ns: int) -> None:
        """Create ``path`` holding ``content`` with the given mtime."""
        descriptor = os.open(path, _OPEN_FLAGS, _FILE_MODE)
        try:
            _write_all(descriptor, content)
            os.utime(descriptor, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(descriptor)
        self.file_count += 1

    def _write_artifact(self, path: str, size: int, mtime_ns: int) -> None:
        """Create ``path`` with ``size`` bytes of pool data (or a hole if sparse)."""
        descriptor = os.open(path, _OPEN_FLAGS, _FILE_MODE)
        try:
            if self._sparse:
                os.ftruncate(descriptor, size)
            else:
                self._write_payload(descriptor, size)
            os.utime(descriptor, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(descriptor)
        self.file_count += 1

    def _write_payload(self, descriptor: int, size: int) -> None:
        """Write ``size`` bytes cycled from the pool, starting where the last file left off."""
        pool_size = len(self._pool)
        offset = self._payload_offset
        self._payload_offset = (offset + _PAYLOAD_STRIDE) % pool_size
        remaining = size
        while remaining > 0:
            chunk_end = min(pool_size, offset + remaining)
            written = os.write(descriptor, self._pool[offset:chunk_end])
            remaining -= written
            offset = (offset + written) % pool_size


def _check_arguments(
    *,
    names: int,
    versions_per_name: int,
    files_per_version: int,
    bytes_per_file: int,
    bentos: int,
    span_days: int,
) -> None:
    """Raise ValueError naming every count that is out of range."""
    problems = [
        f"{label} must be at least {minimum}, got {value}"
        for label, value, minimum in (
            ("names", names, 0),
            ("versions_per_name", versions_per_name, 1),
            ("files_per_version", files_per_version, 0),
            ("bytes_per_file", bytes_per_file, 0),
            ("bentos", bentos, 0),
            ("span_days", span_days, 1),
        )
        if value < minimum
    ]
    if bentos > 0 and names == 0:
        problems.append("bentos need at least one model name to pin")
    wanted = max(names, 0) * max(versions_per_name, 0) + max(bentos, 0)
    if wanted > max(span_days, 0) * _MICROSECONDS_PER_DAY:
        problems.append(f"span_days={span_days} has too few microseconds for {wanted} unique times")
    if problems:
        raise ValueError("; ".join(problems))


def _make_names(rng: random.Random, count: int, *, suffixes: Sequence[str] | None) -> list[str]:
    """Return ``count`` distinct valid tag names built from domain words."""
    made: list[str] = []
    taken: set[str] = set()
    while len(made) < count:
        domain = rng.choice(_DOMAINS)
        tail = rng.choice(_ARCHITECTURES if suffixes is None else suffixes)
        name = f"{domain}{rng.choice(_SEPARATORS)}{tail}"
        if name in taken:
            name = f"{name}-{len(made)}"
        if name in taken:
            continue
        if not TAG_PATTERN.fullmatch(name) or len(name) > MAX_TAG_LENGTH:
            raise AssertionError(f"generated an invalid tag name {name!r}")
        taken.add(name)
        made.append(name)
    return made


def _make_versions(
    rng: random.Random, creation_times: Sequence[datetime], nodes: Sequence[bytes]
) -> list[str]:
    """Given creation times, return one distinct BentoML-style version string for each.

    BentoML's ``Tag.make_new_version`` base32-encodes bytes 0-5 (time_low,
    time_mid) and 8-11 (clock sequence, first node bytes) of a uuid1; the
    low time bits wrap every seven minutes, so versions do not sort by time.
    """
    made: list[str] = []
    taken: set[str] = set()
    for creation_time in creation_times:
        delta = creation_time - _UUID_EPOCH
        microseconds = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        ticks = microseconds * 10 + rng.randrange(10)
        time_bytes = (ticks & 0xFFFF_FFFF).to_bytes(4, "big") + ((ticks >> 32) & 0xFFFF).to_bytes(
            2, "big"
        )
        node = rng.choice(nodes)
        while True:
            # uuid1 sets the RFC 4122 variant bits (10) above 14 random bits.
            clock_sequence = (0x8000 | rng.getrandbits(14)).to_bytes(2, "big")
            version = base64.b32encode(time_bytes + clock_sequence + node).decode("ascii").lower()
            if version not in taken:
                break
        taken.add(version)
        made.append(version)
    return made


def _pick_labels(rng: random.Random, choices: Sequence[Mapping[str, str]]) -> Mapping[str, str]:
    """Return no labels most of the time, otherwise one of ``choices``."""
    if rng.random() >= _LABELLED_SHARE:
        return _NO_LABELS
    return rng.choice(choices)


def _latest_at(versions: Sequence[GeneratedVersion], moment: datetime) -> GeneratedVersion | None:
    """Given one name's versions, oldest first, return the newest made before ``moment``."""
    index = bisect.bisect_left([version.creation_time for version in versions], moment)
    return versions[index - 1] if index > 0 else None


def _artifact_names(count: int) -> list[str]:
    """Return ``count`` artifact file names: familiar ones first, then shards."""
    named = list(_ARTIFACT_NAMES[:count])
    return named + [f"shard-{index:05d}.bin" for index in range(len(named), count)]


def _service_class(name: str) -> str:
    """Return the service class name ``bentoml build`` would see for bento ``name``."""
    return "".join(part.capitalize() for part in re.split(r"[-._]", name))


def _service_source(name: str) -> str:
    """Return a small BentoML service module for the bento ``name``."""
    service_class = _service_class(name)
    return (
        "import bentoml\n\n\n"
        "@bentoml.service\n"
        f"class {service_class}:\n"
        "    @bentoml.api\n"
        "    def predict(self, text: str) -> str:\n"
        "        return text\n"
    )


@lru_cache(maxsize=4096)
def _yaml_tag_scalar(text: str) -> str:
    """Given a tag part, return it as safe_dump writes it as a mapping value.

    Plain when YAML would read it back as a string; quoted otherwise (``123``,
    ``1.5``, ``yes``, ``null``). Tag parts hold no spaces or specials, so the
    quoted form is always one line.
    """
    # types-PyYAML leaves Resolver.resolve unannotated.
    resolved = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if TAG_PATTERN.fullmatch(text) and resolved == _STRING_TAG:
        return text
    return yaml.safe_dump({"key": text}).removeprefix("key: ").removesuffix("\n")


@lru_cache(maxsize=256)
def _labels_block(items: tuple[tuple[str, str], ...]) -> str:
    """Given label pairs in order, return the ``labels:`` block as safe_dump writes it."""
    return yaml.safe_dump({"labels": dict(items)}, sort_keys=False)


def _utc_isoformat(moment: datetime) -> str:
    """Return ``moment`` as BentoML writes it; raise ValueError unless it is UTC."""
    if moment.utcoffset() != timedelta(0):
        raise ValueError(f"expected a UTC time, got {moment!r}")
    return moment.isoformat()


def _nanoseconds(moment: datetime) -> int:
    """Return ``moment`` as integer nanoseconds since the Unix epoch, without float rounding."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1_000


def _set_mtime(path: Path, moment: datetime) -> None:
    """Set ``path``'s access and modification times to ``moment``."""
    mtime_ns = _nanoseconds(moment)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _write_all(descriptor: int, content: bytes) -> None:
    """Write all of ``content``, looping over short writes."""
    view = memoryview(content)
    while view:
        view = view[os.write(descriptor, view) :]


def main(argv: Sequence[str] | None = None) -> int:
    """Given command-line arguments, generate a store, print a table and return 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path, help="BENTOML_HOME to write (created if missing)")
    parser.add_argument("--names", type=int, required=True, help="model names")
    parser.add_argument("--versions", type=int, required=True, help="versions per model name")
    parser.add_argument("--files", type=int, required=True, help="artifact files per version")
    parser.add_argument("--bytes", type=int, required=True, help="bytes per artifact file")
    parser.add_argument("--bentos", type=int, default=0, help="bento versions, four to a name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--span-days", type=int, default=180, help="creation times spread")
    parser.add_argument("--sparse", action="store_true", help="artifact files are holes")
    arguments = parser.parse_args(argv)

    started = time.perf_counter()
    store = generate_store(
        arguments.directory,
        names=arguments.names,
        versions_per_name=arguments.versions,
        files_per_version=arguments.files,
        bytes_per_file=arguments.bytes,
        bentos=arguments.bentos,
        seed=arguments.seed,
        span_days=arguments.span_days,
        sparse=arguments.sparse,
    )
    seconds = time.perf_counter() - started

    rows = [
        ("store", str(store.root)),
        ("model names", str(arguments.names)),
        ("bento versions", str(arguments.bentos)),
        ("versions", f"{store.version_count:,}"),
        ("files", f"{store.file_count:,}"),
        ("apparent bytes", f"{store.total_bytes:,}" + (" (sparse)" if arguments.sparse else "")),
        ("seconds", f"{seconds:.2f}"),
        ("versions per second", f"{store.version_count / seconds:,.0f}" if seconds else "-"),
    ]
    width = max(len(label) for label, _value in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

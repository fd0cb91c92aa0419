"""The invariants every store the tests (and bench/crashloop.py) leave behind must keep.

:func:`capture` records a store before the work (every version's files by
checksum, the pointers' forms, a directory outside it that versions link
into, what is protected); :func:`check_store` says how the store breaks the
invariants afterwards; :func:`check_with_bentoml` has the real BentoML read
stores back. docs/reliability.md lists the invariants.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from storewarden.store import parse_descriptor

DESCRIPTORS = {"models": "model.yaml", "bentos": "bento.yaml"}
KINDS = ("models", "bentos")
RECOVERY_EVENTS = frozenset(
    {"removal_rolled_back", "trash_emptied", "pointer_repaired", "name_removed"}
)

Key = tuple[str, str, str]  # (kind, name, version)


def digest_tree(top: Path) -> dict[str, str]:
    """Return every entry below ``top`` as relative path -> its kind, link target or sha256.

    Symlinks are recorded, never followed. Return ``{}`` if ``top`` is missing.
    """
    found: dict[str, str] = {}
    if not os.path.lexists(top):
        return found
    pending = [top]  # not os.walk: Python 3.11's recurses, and hostile trees nest deep
    while pending:
        base = pending.pop()
        try:
            with os.scandir(base) as scan:
                entries = sorted(entry.name for entry in scan)
        except OSError:
            continue
        for entry in entries:
            path = base / entry
            relative = str(path.relative_to(top))
            try:
                info = os.lstat(path)
            except OSError:  # deeper than PATH_MAX: recorded, not followed
                found[relative] = "unreachable"
                continue
            if stat.S_ISDIR(info.st_mode):
                pending.append(path)
            if stat.S_ISLNK(info.st_mode):
                found[relative] = f"link {os.readlink(path)}"
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = "dir"
            elif stat.S_ISREG(info.st_mode):
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:  # a FIFO or a device: never opened (a FIFO would block)
                found[relative] = f"special {stat.S_IFMT(info.st_mode):o}"
    return found


@dataclass(frozen=True)
class VersionFacts:
    """One version as generated: its creation time, labels and every file's checksum."""

    key: Key
    creation_time: datetime
    labels: Mapping[str, str]
    files: Mapping[str, str]


@dataclass(frozen=True)
class Baseline:
    """The store and its surroundings before the warden ran, to check against after."""

    root: Path
    outside: Path
    versions: Mapping[Key, VersionFacts]
    pointer_forms: Mapping[tuple[str, str], str]
    outside_digest: Mapping[str, str]
    protected: frozenset[Key]

    def names(self) -> set[tuple[str, str]]:
        """Return every (kind, name) the store had."""
        return {(kind, name) for kind, name, _version in self.versions}


def read_descriptor(path: Path) -> tuple[datetime, dict[str, str]]:
    """Return a descriptor's creation_time and labels (read with PyYAML, not storewarden)."""
    data = yaml.safe_load(path.read_text())
    moment = data["creation_time"]
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    labels = {str(key): str(value) for key, value in (data.get("labels") or {}).items()}
    return moment.astimezone(UTC), labels


def capture(root: Path, outside: Path, protect: ProtectSpec) -> Baseline:
    """Record every version of the store at ``root`` and everything under ``outside``."""
    versions: dict[Key, VersionFacts] = {}
    forms: dict[tuple[str, str], str] = {}
    for kind in KINDS:
        kind_dir = root / kind
        if not kind_dir.is_dir():
            continue
        for name_dir in sorted(kind_dir.iterdir()):
            pointer = name_dir / "latest"
            if os.path.lexists(pointer):
                forms[(kind, name_dir.name)] = "symlink" if pointer.is_symlink() else "file"
            for version_dir in sorted(name_dir.iterdir()):
                if version_dir.name == "latest":
                    continue
                moment, labels = read_descriptor(version_dir / DESCRIPTORS[kind])
                key = (kind, name_dir.name, version_dir.name)
                versions[key] = VersionFacts(key, moment, labels, digest_tree(version_dir))
    return Baseline(
        root=root,
        outside=outside,
        versions=versions,
        pointer_forms=forms,
        outside_digest=digest_tree(outside),
        protected=protect.protected(versions),
    )


@dataclass(frozen=True)
class ProtectSpec:
    """The protections the trial config sets, and which versions they keep (computed here).

    ``pinned`` names keep every version; ``kept_names`` keep their newest
    ``keep_last`` versions (a rule); a version labelled ``keep: "true"`` stays.
    """

    pinned: tuple[str, ...]
    kept_names: tuple[str, ...]
    keep_last: int = 2

    def config(self, root: Path) -> dict[str, Any]:
        """Return the warden config that prunes everything these protections do not keep."""
        return {
            "store": str(root),
            "trigger": {"max_store_size": "1KiB"},
            "protect": {
                "min_age": "0s",
                "settle": "0s",
                "keep_latest": False,
                "keep_last": 0,
                "labels": {"keep": "true"},
                "pins": [f"{name}:*" for name in self.pinned],
            },
            "rules": [
                {"match": name, "keep_latest": True, "keep_last": self.keep_last}
                for name in self.kept_names
            ],
        }

    def protected(self, versions: Mapping[Key, VersionFacts]) -> frozenset[Key]:
        """Return the versions these protections keep."""
        kept = {
            key
            for key, facts in versions.items()
            if key[1] in self.pinned or facts.labels.get("keep") == "true"
        }
        for name in self.kept_names:
            own = sorted(
                (facts for key, facts in versions.items() if key[:2] == ("models", name)),
                key=lambda facts: facts.creation_time,
            )
            kept.update(facts.key for facts in own[-self.keep_last :])
        return frozenset(kept)


# -- checking the store after the trial --------------------------------------------------


def removal_events(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Return the version_removed events."""
    return [event for event in events if event.get("event") == "version_removed"]


def check_store(
    baseline: Baseline, events: Sequence[Mapping[str, Any]], state_dir: Path | None = None
) -> list[str]:
    """Return every way the store now breaks the invariants (empty when it keeps them all)."""
    problems: list[str] = []
    state = state_dir or baseline.root / ".storewarden"
    for directory in ("trash", "tmp"):
        leftovers = sorted(os.listdir(state / directory)) if (state / directory).is_dir() else []
        if leftovers:
            problems.append(f"{directory} not empty: {leftovers[:5]}")
    remaining = _check_versions(baseline, problems)
    problems.extend(_check_pointers(baseline, remaining))
    if digest_tree(baseline.outside) != baseline.outside_digest:
        problems.append(f"something outside the store changed: {baseline.outside}")
    for kind, name, version in sorted(baseline.protected - remaining):
        problems.append(f"protected version removed: {kind}/{name}:{version}")
    problems.extend(_check_events(baseline, remaining, events))
    problems.extend(bentos_without_models(baseline.root))
    return problems


def bentos_without_models(root: Path) -> list[str]:
    """Return each bento in the store that lacks a model version its bento.yaml names.

    Such a bento can no longer be served or containerized (BentoML: "Model
    ... could not be found locally"); the warden must never leave one.
    """
    problems = []
    bentos = root / "bentos"
    for name in sorted(os.listdir(bentos)) if bentos.is_dir() else []:
        for version in sorted(os.listdir(bentos / name)):
            descriptor = bentos / name / version / "bento.yaml"
            if version == "latest" or not descriptor.is_file():
                continue
            for tag in parse_descriptor(descriptor.read_bytes()).references:
                model, _, model_version = tag.partition(":")
                if model_version == "latest":
                    pointer = root / "models" / model / "latest"
                    model_version = pointer.read_text() if pointer.is_file() else ""
                if not (root / "models" / model / model_version / "model.yaml").is_file():
                    problems.append(f"bento {name}:{version} lacks the model {tag} it needs")
    return problems


def _check_versions(baseline: Baseline, problems: list[str]) -> set[Key]:
    """Return the versions still in the store; add a problem for each stray or damaged one."""
    remaining: set[Key] = set()
    for kind in KINDS:
        kind_dir = baseline.root / kind
        names = sorted(kind_dir.iterdir()) if kind_dir.is_dir() else []
        for name_dir in names:
            for entry in sorted(os.listdir(name_dir)):
                key = (kind, name_dir.name, entry)
                facts = baseline.versions.get(key)
                if entry == "latest":
                    continue
                if facts is None:
                    problems.append(f"stray entry in the store: {name_dir / entry}")
                    continue
                remaining.add(key)
                now = digest_tree(name_dir / entry)
                if now != facts.files:
                    missing = sorted(set(facts.files) - set(now))
                    changed = sorted(
                        p for p in facts.files if p in now and now[p] != facts.files[p]
                    )
                    extra = sorted(set(now) - set(facts.files))
                    problems.append(
                        f"{kind}/{key[1]}:{key[2]} is not whole: missing {missing[:5]},"
                        f" changed {changed[:5]}, extra {extra[:5]}"
                    )
    return remaining


def _check_events(
    baseline: Baseline, remaining: set[Key], events: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Every version gone has a version_removed event; none is claimed wrongly or twice unmarked."""
    problems = []
    claimed: Counter[Key] = Counter()
    unmarked: Counter[Key] = Counter()
    for event in removal_events(events):
        key = (str(event["kind"]), str(event["name"]), str(event["version"]))
        claimed[key] += 1
        if not event.get("recovered"):
            unmarked[key] += 1
    disappeared = set(baseline.versions) - remaining
    for kind, name, version in sorted(disappeared - set(claimed)):
        problems.append(f"{kind}/{name}:{version} vanished without a version_removed event")
    for kind, name, version in sorted(set(claimed) - disappeared):
        problems.append(f"version_removed for {kind}/{name}:{version}, which is still there")
    for key, count in sorted(unmarked.items()):
        if count > 1:
            problems.append(f"{key} logged as removed {count} times without recovered")
    return problems


def _check_pointers(baseline: Baseline, remaining: set[Key]) -> list[str]:
    problems = []
    for kind, name in sorted(baseline.names()):
        name_dir = baseline.root / kind / name
        own = [baseline.versions[key] for key in remaining if key[:2] == (kind, name)]
        pointer = name_dir / "latest"
        if not own:
            if os.path.lexists(name_dir):
                problems.append(f"{kind}/{name} has no version left but its directory remains")
            continue
        if not os.path.lexists(pointer):
            problems.append(f"{kind}/{name} has versions but no latest")
            continue
        form = "symlink" if pointer.is_symlink() else "file"
        target = os.readlink(pointer) if form == "symlink" else pointer.read_text()
        newest = max(own, key=lambda facts: facts.creation_time).key[2]
        if target != newest:
            problems.append(f"{kind}/{name} latest names {target!r}, the newest is {newest!r}")
        expected_form = baseline.pointer_forms.get((kind, name), "file")
        if form != expected_form:
            problems.append(f"{kind}/{name} latest became a {form}, was a {expected_form}")
        if form == "file" and stat.S_IMODE(os.lstat(pointer).st_mode) != 0o644:
            problems.append(f"{kind}/{name} latest is not 0644")
    return problems


# argv: JSON {store root: ["models/name" whose latest is a symlink]}. BentoML's own
# list() and get() read each store in turn, its stores pointed at one root after
# another (importing BentoML once costs a second or two). get("name:latest") fails on
# a symlinked latest (BentoML itself writes files; see BENTOML_STORE.md), so those
# names are listed, not got.
BENTOML_READ = """
import json, sys
import bentoml
from bentoml._internal.bento.bento import BentoStore
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models.model import ModelStore

seen = {}
for root, symlinked in json.loads(sys.argv[1]).items():
    BentoMLContainer.model_store.set(ModelStore(root + "/models"))
    BentoMLContainer.bento_store.set(BentoStore(root + "/bentos"))
    try:
        models = bentoml.models.list()
        bentos = bentoml.bentos.list()
        latest = {
            **{"models/" + name: str(bentoml.models.get(name + ":latest").tag)
               for name in sorted({model.tag.name for model in models})
               if "models/" + name not in symlinked},
            **{"bentos/" + name: str(bentoml.bentos.get(name + ":latest").tag)
               for name in sorted({bento.tag.name for bento in bentos})
               if "bentos/" + name not in symlinked},
        }
    except Exception as error:
        seen[root] = {"error": f"{type(error).__name__}: {error}"}
        continue
    seen[root] = {
        "models": sorted(str(model.tag) for model in models),
        "bentos": sorted(str(bento.tag) for bento in bentos),
        "latest": latest,
    }
print(json.dumps(seen))
"""


def check_with_bentoml(baselines: Sequence[Baseline]) -> list[str]:
    """Read each store with the real BentoML (one subprocess); return how it disagrees."""
    for baseline in baselines:  # BentoML's list() needs both kind directories
        for kind in KINDS:
            (baseline.root / kind).mkdir(exist_ok=True)
    roots = {
        str(baseline.root): [
            f"{kind}/{name}"
            for (kind, name), form in baseline.pointer_forms.items()
            if form == "symlink"
        ]
        for baseline in baselines
    }
    with tempfile.TemporaryDirectory() as home:
        environment = {**os.environ, "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "1"}
        result = subprocess.run(
            [sys.executable, "-c", BENTOML_READ, json.dumps(roots)],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
            timeout=600,
        )
    if result.returncode != 0:
        return [f"BentoML failed: {result.stderr.strip()[-600:]}"]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    problems = []
    for baseline in baselines:
        problems += [f"{baseline.root}: {problem}" for problem in _disagreements(baseline, seen)]
    return problems


def _disagreements(baseline: Baseline, seen_all: Mapping[str, Any]) -> list[str]:
    seen = seen_all[str(baseline.root)]
    if "error" in seen:
        return [f"BentoML cannot read the store: {seen['error']}"]
    remaining = {key: facts for key, facts in baseline.versions.items() if present(baseline, key)}
    problems = []
    for kind in KINDS:
        expected = sorted(f"{name}:{version}" for k, name, version in remaining if k == kind)
        # BentoML lists the version a symlinked latest names twice (the link is a directory
        # to its is_dir()); that is BentoML's, not the warden's.
        linked = {
            name
            for (k, name), form in baseline.pointer_forms.items()
            if (k, form) == (kind, "symlink")
        }
        doubled = {tag for tag in seen[kind] if tag.split(":")[0] in linked}
        listed = sorted([tag for tag in seen[kind] if tag not in doubled] + list(doubled))
        if listed != expected:
            problems.append(f"BentoML lists {kind} {listed[:5]}, expected {expected[:5]}")
    for kind, name in sorted({key[:2] for key in remaining}):
        if baseline.pointer_forms.get((kind, name)) == "symlink":
            continue  # BentoML cannot get() through a symlinked latest; _check_pointers reads it
        newest = max(
            (facts for key, facts in remaining.items() if key[:2] == (kind, name)),
            key=lambda facts: facts.creation_time,
        )
        got = seen["latest"].get(f"{kind}/{name}")
        if got != f"{name}:{newest.key[2]}":
            problems.append(f"BentoML get({name}:latest) gave {got}, expected {newest.key[2]}")
    return problems


# -- running the warden -------------------------------------------------------------------


def present(baseline: Baseline, key: Key) -> bool:
    return (baseline.root / key[0] / key[1] / key[2]).is_dir()

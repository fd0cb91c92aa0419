"""SIGKILL a real `storewarden prune` at random moments, restart it, check the store each time.

Each trial generates a fresh store (bench/genstore.py: model names, bentos,
labels, plain-file pointers) beside a directory ``outside/`` that one version
links to (a symlink and a hard link), and records a checksum of every file.
It then runs ``python -m storewarden prune`` under a config that keeps it
pruning (``max_store_size`` far below the store, most protections off) and
SIGKILLs it after a random delay, one to three times in a row (a kill can land
in the recovery of the previous one), and finally lets a run finish. Then:

- every version left is complete and byte for byte what was generated;
- every ``latest`` names a remaining version, the newest by creation_time, in
  the form it had, or the name directory is gone with its last version;
- the trash and the temp directory are empty, nothing else appeared;
- nothing outside the store changed (the link targets included);
- no protected version (pinned, labelled, a rule's keep_latest/keep_last) went;
- every version that disappeared has a ``version_removed`` event (before the
  kill, or ``recovered`` from a restart), and none is claimed twice unmarked;
- BentoML's own ``bentoml.models.list()``, ``bentoml.bentos.list()`` and
  ``get("name:latest")`` succeed and agree.

Prints a table (and, with ``--each``, one row per trial)::

    python bench/crashloop.py --trials 200             # the figure in docs/reliability.md
    python bench/crashloop.py --trials 20 --seed 3 --each --keep

The reliability tests import this module and run a few trials of it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from genstore import generate_store

from storewarden.logs import SchemaError, check_event
from storewarden.store import parse_descriptor

DESCRIPTORS = {"models": "model.yaml", "bentos": "bento.yaml"}
KINDS = ("models", "bentos")
# How many kills a trial makes before its last, uninterrupted run.
KILL_COUNTS = (1, 1, 1, 2, 2, 3)
RECOVERY_EVENTS = frozenset(
    {"removal_rolled_back", "trash_emptied", "pointer_repaired", "name_removed"}
)

Key = tuple[str, str, str]  # (kind, name, version)


# -- what the store held before the trial ---------------------------------------------


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
    remaining = {key: facts for key, facts in baseline.versions.items() if _present(baseline, key)}
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


@dataclass
class Run:
    """One `storewarden prune` process: its events, and whether it was killed."""

    events: list[dict[str, Any]]
    exit_code: int | None
    killed: bool
    problems: list[str]

    def named(self, name: str) -> list[dict[str, Any]]:
        """Return the events called ``name``."""
        return [event for event in self.events if event["event"] == name]

    @property
    def phase(self) -> str:
        """Where a kill landed: start-up, recovery, pruning, or after the prune finished."""
        if self.named("prune_finished"):
            return "after"
        if self.named("prune_started"):
            return "pruning"
        recovering = [event for event in self.events if event["event"] in RECOVERY_EVENTS]
        recovering += [event for event in self.named("version_removed") if event.get("recovered")]
        return "recovery" if recovering else "start-up"


@dataclass(frozen=True)
class Kill:
    """When to SIGKILL a run: ``delay`` seconds after it starts, or, if ``per_removal`` is
    set, at ``fraction`` of the time its plan should take once it logs ``prune_started``
    (``planned`` removals of ``per_removal`` seconds each)."""

    delay: float = 0.0
    fraction: float = 0.0
    per_removal: float | None = None


def _wait_for_plan(process: subprocess.Popen[bytes], log: Path) -> int | None:
    """Poll ``log`` every millisecond for ``prune_started``; return its ``planned``.

    Return None if the run ends first.
    """
    while process.poll() is None:
        for line in log.read_text().splitlines():
            if '"event": "prune_started"' in line:
                return int(json.loads(line)["planned"])
        time.sleep(0.001)
    return None


def run_warden(config: Path, log: Path, kill: Kill | None, timeout: float = 300) -> Run:
    """Run `storewarden prune --config config`, SIGKILLed as ``kill`` says if set.

    Its JSON lines go to ``log`` (a file, so a child never blocks on a full pipe);
    every line that starts like JSON must parse and fit the audit schema.
    """
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "storewarden", "prune", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        killed = False
        delay = kill.delay if kill is not None else timeout
        if kill is not None and kill.per_removal is not None:
            planned = _wait_for_plan(process, log) or 0
            delay = kill.fraction * planned * kill.per_removal
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            if kill is None:
                process.kill()
                process.wait()
                return Run([], None, False, [f"prune did not finish in {timeout} s"])
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            killed = True
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
            check_event(event)
        except (json.JSONDecodeError, SchemaError) as error:
            problems.append(f"bad log line ({error}): {line[:200]}")
            continue
        events.append(event)
    code = None if killed else process.returncode
    if code not in (None, 0):
        problems.append(f"prune exited {code}: {log.read_text()[-600:]}")
    return Run(events, code, killed, problems)


# -- one trial ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The size of each trial's store."""

    names: int = 12
    versions: int = 8
    files: int = 3
    bytes: int = 4096
    bentos: int = 8


@dataclass
class Trial:
    """What one trial did and found."""

    index: int
    phases: list[str]
    removed: int
    recovered: int
    rolled_back: int
    bentoml_checked: bool
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        """Return how many runs were killed."""
        return len(self.phases)


def build_trial_store(directory: Path, seed: int, settings: Settings) -> tuple[Baseline, Path]:
    """Generate a store with an ``outside`` directory beside it; return its baseline and config."""
    root = directory / "bentoml"
    outside = directory / "outside"
    generated = generate_store(
        root,
        names=settings.names,
        versions_per_name=settings.versions,
        files_per_version=settings.files,
        bytes_per_file=settings.bytes,
        bentos=settings.bentos,
        seed=seed,
    )
    outside.mkdir()
    (outside / "target.bin").write_bytes(os.urandom(8192))
    (outside / "hard.bin").write_bytes(os.urandom(8192))
    names = sorted(name for kind, name in generated.versions if kind == "models")
    # The oldest version of an unprotected name links out of the store: the links go
    # with it, their targets stay.
    linked = generated.versions[("models", names[-1])][0].path
    os.symlink(outside / "target.bin", linked / "shared.bin")
    os.link(outside / "hard.bin", linked / "hard.bin")
    protect = ProtectSpec(pinned=(names[0],), kept_names=(names[1],))
    config = directory / "config.yaml"
    config.write_text(json.dumps(protect.config(root)))  # JSON is YAML
    return capture(root, outside, protect), config


def run_trial(
    directory: Path,
    index: int,
    rng: random.Random,
    settings: Settings,
    timing: Timing,
    *,
    with_bentoml: bool,
) -> Trial:
    """Kill the warden 1-3 times at random, let a last run finish, and check everything."""
    baseline, config = build_trial_store(directory, index, settings)
    runs: list[Run] = []
    for number in range(rng.choice(KILL_COUNTS)):
        run = run_warden(config, directory / f"run-{number}.log", timing.kill(rng))
        runs.append(run)
        if not run.killed:
            break
    runs.append(run_warden(config, directory / "run-last.log", None))
    events = [event for run in runs for event in run.events]
    problems = [problem for run in runs for problem in run.problems]
    problems += check_store(baseline, events)
    if with_bentoml:
        problems += check_with_bentoml([baseline])
    return Trial(
        index=index,
        phases=[run.phase for run in runs if run.killed],
        removed=len(baseline.versions)
        - sum(1 for key in baseline.versions if _present(baseline, key)),
        recovered=sum(1 for event in removal_events(events) if event.get("recovered")),
        rolled_back=sum(1 for event in events if event["event"] == "removal_rolled_back"),
        bentoml_checked=with_bentoml,
        problems=problems,
    )


def _present(baseline: Baseline, key: Key) -> bool:
    return (baseline.root / key[0] / key[1] / key[2]).is_dir()


@dataclass(frozen=True)
class Timing:
    """When, in seconds after its start, an uninterrupted prune of a trial store did what.

    Python's start-up and imports take most of a small run, and vary more
    than the prune lasts; so most kills are timed from the ``prune_started``
    line instead (see :meth:`kill`).
    """

    pruning_from: float
    pruning_to: float
    exit: float

    removals: int

    def kill(self, rng: random.Random) -> Kill:
        """Return a random kill: one in four anywhere in the run, the rest while it prunes."""
        if rng.random() < 0.25:
            return Kill(delay=rng.uniform(0.0, self.exit))
        per_removal = (self.pruning_to - self.pruning_from) / max(1, self.removals)
        return Kill(fraction=rng.random(), per_removal=per_removal)


def calibrate(work: Path, settings: Settings, runs: int = 3) -> Timing:
    """Time uninterrupted prunes of trial stores (the fastest of ``runs``, the first is cold).

    Raise RuntimeError if an uninterrupted prune already breaks the store.
    """
    timings = []
    for number in range(runs):
        directory = work / f"calibration-{number}"
        directory.mkdir()
        baseline, config = build_trial_store(directory, number, settings)
        started_wall = time.time()
        started = time.monotonic()
        run = run_warden(config, directory / "run.log", None)
        seconds = time.monotonic() - started
        problems = run.problems + check_store(baseline, run.events)
        if problems:
            raise RuntimeError(
                "an uninterrupted prune already breaks the store: " + "; ".join(problems)
            )
        shutil.rmtree(directory)
        begun, ended = (
            min(seconds, max(0.0, moment - started_wall))
            for moment in (
                datetime.fromisoformat(run.named(name)[0]["timestamp"]).timestamp()
                for name in ("prune_started", "prune_finished")
            )
        )
        timings.append(Timing(begun, ended, seconds, len(run.named("version_removed"))))
    return min(timings, key=lambda timing: timing.exit)


@dataclass
class Summary:
    """Every trial of a run, with the calibrated timing of an uninterrupted prune."""

    trials: list[Trial]
    timing: Timing
    seconds: float

    @property
    def problems(self) -> list[str]:
        """Return every problem of every trial, prefixed with its trial."""
        return [
            f"trial {trial.index}: {problem}" for trial in self.trials for problem in trial.problems
        ]

    def phase_counts(self) -> Counter[str]:
        """Return how many kills landed in each phase."""
        return Counter(phase for trial in self.trials for phase in trial.phases)


def run_trials(
    work: Path,
    trials: int,
    *,
    seed: int = 0,
    settings: Settings | None = None,
    bentoml_every: int = 1,
    keep: bool = False,
) -> Summary:
    """Run ``trials`` trials under ``work``; BentoML reads every ``bentoml_every``-th store."""
    settings = settings or Settings()
    rng = random.Random(seed)
    started = time.monotonic()
    timing = calibrate(work, settings)
    results = []
    for index in range(1, trials + 1):
        directory = work / f"trial-{index:04d}"
        directory.mkdir()
        with_bentoml = bentoml_every > 0 and index % bentoml_every == 0
        trial = run_trial(directory, index, rng, settings, timing, with_bentoml=with_bentoml)
        results.append(trial)
        if not trial.problems and not keep:
            shutil.rmtree(directory)
    return Summary(results, timing, time.monotonic() - started)


# -- output -----------------------------------------------------------------------------------


def summary_rows(summary: Summary) -> list[tuple[str, str]]:
    """Return the summary table's rows."""
    phases = summary.phase_counts()
    trials = summary.trials
    checked = [trial for trial in trials if trial.bentoml_checked]
    return [
        ("trials", str(len(trials))),
        (
            "uninterrupted prune: start, prune_started, exit",
            f"0, {summary.timing.pruning_from:.2f}, {summary.timing.exit:.2f} s",
        ),
        ("SIGKILLs", str(sum(trial.kills for trial in trials))),
        ("  landed in start-up", str(phases["start-up"])),
        ("  landed in recovery of an earlier kill", str(phases["recovery"])),
        ("  landed while pruning", str(phases["pruning"])),
        ("  landed after the prune finished", str(phases["after"])),
        ("versions removed", str(sum(trial.removed for trial in trials))),
        ("removals completed by a restart", str(sum(trial.recovered for trial in trials))),
        ("removals rolled back by a restart", str(sum(trial.rolled_back for trial in trials))),
        (
            "BentoML list/get checks passed",
            f"{sum(1 for t in checked if not t.problems)}/{len(checked)}",
        ),
        ("trials with a violated invariant", str(sum(1 for trial in trials if trial.problems))),
        ("seconds", f"{summary.seconds:.0f}"),
    ]


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """Print rows as aligned columns."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trials, print the tables; return 1 if any invariant was violated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--names", type=int, default=Settings.names)
    parser.add_argument("--versions", type=int, default=Settings.versions)
    parser.add_argument("--bentos", type=int, default=Settings.bentos)
    parser.add_argument("--bentoml-every", type=int, default=1, help="0: never read with BentoML")
    parser.add_argument("--work", type=Path, help="directory for the trial stores (default: temp)")
    parser.add_argument("--each", action="store_true", help="print one row per trial")
    parser.add_argument("--keep", action="store_true", help="keep every trial store")
    arguments = parser.parse_args(argv)
    settings = Settings(names=arguments.names, versions=arguments.versions, bentos=arguments.bentos)
    with contextlib.ExitStack() as stack:
        work = arguments.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        summary = run_trials(
            work,
            arguments.trials,
            seed=arguments.seed,
            settings=settings,
            bentoml_every=arguments.bentoml_every,
            keep=arguments.keep,
        )
        if arguments.each:
            rows = [("trial", "kills landed in", "removed", "recovered", "rolled back", "ok")]
            rows += [
                (
                    str(trial.index),
                    ",".join(trial.phases),
                    str(trial.removed),
                    str(trial.recovered),
                    str(trial.rolled_back),
                    "yes" if not trial.problems else "NO",
                )
                for trial in summary.trials
            ]
            print_table(rows)
            print()
        print_table(summary_rows(summary))
        for problem in summary.problems:
            print(f"VIOLATION {problem}")
        if summary.problems and arguments.work is None:
            print("(rerun with --work DIR to keep the failing stores)")
    return 1 if summary.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

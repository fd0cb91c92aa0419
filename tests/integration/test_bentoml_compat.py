"""A store the real BentoML wrote, pruned by storewarden, is still one BentoML reads.

BentoML (the installed package) saves the models and builds the bentos in one
subprocess; storewarden prunes in-process (Engine, thresholds that force
removals) and through its CLI (``storewarden delete``); then BentoML reads the
store back in a fresh subprocess and its own CLI lists it. BentoML runs in
subprocesses because importing it is slow and leaves global state behind.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from storewarden import logs
from storewarden.config import build_config
from storewarden.engine import CycleResult, Engine

pytestmark = pytest.mark.slow

UNIT = 256 * 1024  # bytes of weights in each model version

# (name, labels) in creation order; BentoML stamps each with a later creation_time.
MODELS: list[tuple[str, dict[str, str]]] = [
    ("iris", {"stage": "dev"}),
    ("iris", {"stage": "prod"}),
    ("iris", {"stage": "dev"}),
    ("iris", {"stage": "dev"}),
    ("mnist", {"stage": "dev"}),
    ("mnist", {"stage": "dev"}),
    ("mnist", {"stage": "dev"}),
    ("scratch", {"stage": "prod"}),
    ("scratch", {"stage": "dev"}),
    ("scratch", {"stage": "dev"}),
    ("gone", {"stage": "dev"}),
    ("gone", {"stage": "dev"}),
]
BENTOS = 2

SERVICE = """
import bentoml


@bentoml.service
class Svc:
    model = bentoml.models.BentoModel("iris:latest")

    @bentoml.api
    def predict(self, x: int) -> int:
        return x
"""

# argv: the JSON of MODELS, the number of bentos, the build context.
SAVE_WITH_BENTOML = """
import json, os, pathlib, sys
import bentoml

models, bentos, context = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
size = int(sys.argv[4])
for name, labels in models:
    with bentoml.models.create(name, labels=labels) as model:
        pathlib.Path(model.path, "weights.bin").write_bytes(os.urandom(size))
for _ in range(bentos):
    # lock_packages off: locking resolves requirements against PyPI over the network.
    bentoml.bentos.build(service="service:Svc", build_ctx=context, python={"lock_packages": False})

def entry(item):
    return {
        "tag": str(item.tag),
        "creation_time": item.info.creation_time.isoformat(),
        "labels": dict(item.info.labels),
    }

print(json.dumps({
    "models": [entry(model) for model in bentoml.models.list()],
    "bentos": [entry(bento) for bento in bentoml.bentos.list()],
}))
"""

# argv: names whose latest is a symlink (BentoML's get() cannot follow one; the test reads those).
READ_WITH_BENTOML = """
import json, pathlib, sys
import bentoml

symlinked = set(json.loads(sys.argv[1]))
models = bentoml.models.list()
bentos = bentoml.bentos.list()

def entry(item):
    return {
        "tag": str(item.tag),
        "creation_time": item.info.creation_time.isoformat(),
        "labels": dict(item.info.labels),
    }

print(json.dumps({
    "models": [entry(model) for model in models],
    "bentos": [entry(bento) for bento in bentos],
    "model_latest": {
        name: str(bentoml.models.get(name + ":latest").tag)
        for name in sorted({model.tag.name for model in models} - symlinked)
    },
    "bento_latest": {
        name: str(bentoml.bentos.get(name + ":latest").tag)
        for name in sorted({bento.tag.name for bento in bentos})
    },
    "model_files": {
        str(model.tag): sorted(path.name for path in pathlib.Path(model.path).iterdir())
        for model in models
    },
}))
"""


def bentoml_environment(home: Path) -> dict[str, str]:
    """Return the environment for a BentoML subprocess on ``home``."""
    return {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}


def run_python(home: Path, script: str, *arguments: str) -> dict[str, Any]:
    """Run ``script`` with BentoML's home set and return the JSON of its last stdout line."""
    completed = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        env=bentoml_environment(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=home.parent,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return result


def disk_bytes(path: Path) -> int:
    """Return the blocks (x512) of a version directory and everything in it, as ``du`` counts."""
    total = os.lstat(path).st_blocks * 512
    for directory, subdirectories, files in os.walk(path):
        for entry in [*subdirectories, *files]:
            total += os.lstat(os.path.join(directory, entry)).st_blocks * 512
    return total


@dataclass(frozen=True)
class Saved:
    """What BentoML saved: tags of each name, oldest first, and each tag's time and labels."""

    home: Path
    models: dict[str, list[str]]
    bentos: dict[str, list[str]]
    creation_times: dict[str, str]
    labels: dict[str, dict[str, str]]

    def tag(self, name: str, index: int) -> str:
        """Return the tag of the ``index``-th model version of ``name`` (oldest first)."""
        return self.models[name][index]


def group_oldest_first(entries: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Group listed tags by name (each once), each name's tags ordered by creation time."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in {entry["tag"]: entry for entry in entries}.values():
        grouped.setdefault(entry["tag"].partition(":")[0], []).append(entry)
    return {
        name: [item["tag"] for item in sorted(items, key=lambda item: item["creation_time"])]
        for name, items in grouped.items()
    }


def save_with_bentoml(root: Path) -> Saved:
    """Have BentoML save 12 model versions of 4 names and build 2 bentos under ``root``/bentoml.

    scratch's latest is then turned into a symlink, as tools other than BentoML write it.
    """
    home = root / "bentoml"
    context = root / "build"
    context.mkdir()
    (context / "service.py").write_text(SERVICE)
    listed = run_python(
        home, SAVE_WITH_BENTOML, json.dumps(MODELS), str(BENTOS), str(context), str(UNIT)
    )
    models = group_oldest_first(listed["models"])
    bentos = group_oldest_first(listed["bentos"])
    assert {name: len(tags) for name, tags in models.items()} == {
        "iris": 4,
        "mnist": 3,
        "scratch": 3,
        "gone": 2,
    }
    assert [len(tags) for tags in bentos.values()] == [BENTOS]
    pointer = home / "models" / "scratch" / "latest"
    target = pointer.read_text()
    assert target == models["scratch"][-1].partition(":")[2]
    pointer.unlink()
    os.symlink(target, pointer)
    entries = listed["models"] + listed["bentos"]
    return Saved(
        home,
        models,
        bentos,
        creation_times={entry["tag"]: entry["creation_time"] for entry in entries},
        labels={entry["tag"]: entry["labels"] for entry in entries},
    )


def version_bytes(home: Path) -> int:
    """Return the bytes of every version directory under models/ and bentos/."""
    total = 0
    for kind in ("models", "bentos"):
        for name in os.listdir(home / kind):
            for version in os.listdir(home / kind / name):
                path = home / kind / name / version
                if version != "latest" and not path.is_symlink():
                    total += disk_bytes(path)
    return total


def prune_in_process(saved: Saved) -> tuple[CycleResult, list[dict[str, Any]]]:
    """Run one Engine cycle whose thresholds force removals; return it and its audit events.

    Rules: mnist keeps one version (retention); scratch's latest is not
    protected. max_store_size asks for the two mnist removals plus 3.5
    versions of pressure, which the oldest unprotected versions give: iris #0
    and #2 (#1 is labelled prod), then scratch #1 and #2 (#0 is labelled prod).
    """
    config = build_config(
        {
            "store": str(saved.home),
            "trigger": {
                "high_percent": 100,
                "low_percent": 99.99,
                "max_store_size": version_bytes(saved.home) - UNIT * 11 // 2,
            },
            "protect": {"settle": "0s", "min_age": "0s", "labels": {"stage": "prod"}},
            "rules": [
                {"match": "scratch", "keep_latest": False, "keep_last": 0},
                {"match": "mnist", "max_versions": 1},
            ],
        }
    )
    stream = io.StringIO()
    logs.configure(store=saved.home, stream=stream, strict=True)
    try:
        result = Engine(config).cycle(recover=True)
    finally:
        structlog.reset_defaults()
    return result, [json.loads(line) for line in stream.getvalue().splitlines()]


def delete_with_cli(saved: Saved, root: Path) -> list[dict[str, Any]]:
    """Delete every version of "gone" (one through name:latest) and the latest bento.

    BentoML wrote them seconds ago; without settle 0s the delete would wait
    for a writer that might still be at work. Return the CLI's audit events.
    """
    config = root / "storewarden.yaml"
    config.write_text("protect:\n  settle: 0s\n")
    delete = subprocess.run(
        [
            sys.executable,
            "-m",
            "storewarden",
            "delete",
            "--config",
            str(config),
            "gone:latest",
            saved.tag("gone", 0),
            "svc:latest",
        ],
        env={**os.environ, "BENTOML_HOME": str(saved.home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
    )
    assert delete.returncode == 0, delete.stderr
    events = [json.loads(line) for line in delete.stdout.splitlines()]
    for event in events:
        logs.check_event(event)
    return events


def tags_removed(events: list[dict[str, Any]], kind: str) -> list[str]:
    """Return the ``name:version`` of each version_removed event of ``kind``, in order."""
    return [
        f"{event['name']}:{event['version']}"
        for event in events
        if event["event"] == "version_removed" and event["kind"] == kind
    ]


def read_pointers(home: Path) -> dict[str, str]:
    """Return ``kind/name`` -> the version each ``latest`` pointer names (file or symlink)."""
    pointers = {}
    for kind in ("models", "bentos"):
        for name in os.listdir(home / kind):
            pointer = home / kind / name / "latest"
            if pointer.is_symlink():
                pointers[f"{kind}/{name}"] = os.readlink(pointer)
            elif pointer.exists():
                pointers[f"{kind}/{name}"] = pointer.read_text()
    return pointers


@dataclass(frozen=True)
class Pruned:
    """The store after storewarden pruned it, and what BentoML then made of it."""

    saved: Saved
    cycle: CycleResult
    engine_events: list[dict[str, Any]]
    cli_events: list[dict[str, Any]]
    pointers: dict[str, str]
    view: dict[str, Any]
    listing: subprocess.CompletedProcess[str]

    @property
    def removed_models(self) -> set[str]:
        """Return every model tag storewarden reported removed."""
        return set(tags_removed(self.engine_events + self.cli_events, "models"))

    @property
    def removed_bentos(self) -> set[str]:
        """Return every bento tag storewarden reported removed."""
        return set(tags_removed(self.engine_events + self.cli_events, "bentos"))


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Pruned:
    """Save with BentoML, prune with the Engine and the CLI, read back with BentoML."""
    root = tmp_path_factory.mktemp("compat")
    saved = save_with_bentoml(root)
    cycle, engine_events = prune_in_process(saved)
    cli_events = delete_with_cli(saved, root)
    # Read before BentoML does: its get("name:latest") repairs a dangling pointer by itself.
    pointers = read_pointers(saved.home)
    view = run_python(saved.home, READ_WITH_BENTOML, json.dumps(["scratch"]))
    listing = subprocess.run(
        [sys.executable, "-m", "bentoml", "models", "list", "-o", "json"],
        env=bentoml_environment(saved.home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=root,
    )
    return Pruned(saved, cycle, engine_events, cli_events, pointers, view, listing)


def test_engine_removes_retention_victims_then_the_oldest_unprotected_versions(
    pruned: Pruned,
) -> None:
    saved = pruned.saved
    removed = tags_removed(pruned.engine_events, "models")

    assert removed == [
        saved.tag("mnist", 0),
        saved.tag("mnist", 1),
        saved.tag("iris", 0),
        saved.tag("iris", 2),
        saved.tag("scratch", 1),
        saved.tag("scratch", 2),
    ]
    assert [outcome.record.tag for outcome in pruned.cycle.removed] == removed
    assert pruned.cycle.target_reached
    assert tags_removed(pruned.engine_events, "bentos") == []


def test_cli_delete_removes_every_tag_it_was_given_including_name_latest(pruned: Pruned) -> None:
    saved = pruned.saved

    assert sorted(tags_removed(pruned.cli_events, "models")) == sorted(saved.models["gone"])
    assert tags_removed(pruned.cli_events, "bentos") == [saved.bentos["svc"][1]]
    assert all(
        event["reason"] == "explicit"
        for event in pruned.cli_events
        if event["event"] == "version_removed"
    )


def test_bentoml_lists_exactly_the_versions_storewarden_did_not_report_removed(
    pruned: Pruned,
) -> None:
    saved = pruned.saved
    listed_models = [entry["tag"] for entry in pruned.view["models"]]
    listed_bentos = [entry["tag"] for entry in pruned.view["bentos"]]
    all_models = {tag for tags in saved.models.values() for tag in tags}

    assert set(listed_models) == all_models - pruned.removed_models
    assert sorted(listed_bentos) == sorted(set(saved.bentos["svc"]) - pruned.removed_bentos)
    # BentoML lists the version a symlinked latest names twice (its own reader
    # follows the link as a directory); every other tag appears once.
    duplicates = {tag for tag in listed_models if listed_models.count(tag) > 1}
    assert duplicates == {saved.tag("scratch", 0)}


def test_bentoml_latest_is_the_newest_remaining_version_by_creation_time(pruned: Pruned) -> None:
    remaining_models = group_oldest_first(pruned.view["models"])
    remaining_bentos = group_oldest_first(pruned.view["bentos"])

    assert pruned.view["model_latest"] == {
        name: tags[-1] for name, tags in remaining_models.items() if name != "scratch"
    }
    assert set(pruned.view["model_latest"]) == {"iris", "mnist"}
    assert pruned.view["bento_latest"] == {
        name: tags[-1] for name, tags in remaining_bentos.items()
    }
    assert pruned.view["bento_latest"] == {"svc": pruned.saved.bentos["svc"][0]}


def test_storewarden_leaves_every_pointer_naming_the_newest_remaining_version(
    pruned: Pruned,
) -> None:
    remaining = {
        f"models/{name}": tags for name, tags in group_oldest_first(pruned.view["models"]).items()
    } | {f"bentos/{name}": tags for name, tags in group_oldest_first(pruned.view["bentos"]).items()}

    assert pruned.pointers == {key: tags[-1].partition(":")[2] for key, tags in remaining.items()}
    assert set(pruned.pointers) == {"models/iris", "models/mnist", "models/scratch", "bentos/svc"}


def test_a_symlinked_latest_stays_a_symlink_to_the_newest_remaining_version(
    pruned: Pruned,
) -> None:
    pointer = pruned.saved.home / "models" / "scratch" / "latest"
    remaining = group_oldest_first(pruned.view["models"])["scratch"]

    assert pointer.is_symlink()
    assert os.readlink(pointer) == remaining[-1].partition(":")[2]
    assert remaining == [pruned.saved.tag("scratch", 0)]
    changed = [
        (event["old"], event["new"])
        for event in pruned.engine_events
        if event["event"] == "latest_changed" and event["name"] == "scratch"
    ]
    assert changed[-1][1] == os.readlink(pointer)


def test_a_name_whose_every_version_was_deleted_disappears_from_bentoml(pruned: Pruned) -> None:
    listed_names = {entry["tag"].partition(":")[0] for entry in pruned.view["models"]}

    assert "gone" not in listed_names
    assert not (pruned.saved.home / "models" / "gone").exists()
    assert listed_names == {"iris", "mnist", "scratch"}


def test_bentoml_models_list_command_exits_0_and_shows_the_remaining_tags(pruned: Pruned) -> None:
    all_models = {tag for tags in pruned.saved.models.values() for tag in tags}

    assert pruned.listing.returncode == 0, pruned.listing.stderr
    listed = {item["tag"] for item in json.loads(pruned.listing.stdout)}
    assert listed == all_models - pruned.removed_models
    assert not any(tag.startswith("gone:") for tag in listed)


def test_remaining_versions_keep_their_creation_time_labels_and_files(pruned: Pruned) -> None:
    saved = pruned.saved

    assert pruned.view["models"], "something must remain to be checked"
    for entry in pruned.view["models"] + pruned.view["bentos"]:
        assert entry["creation_time"] == saved.creation_times[entry["tag"]]
        assert entry["labels"] == saved.labels[entry["tag"]]
    for tag, files in pruned.view["model_files"].items():
        assert files == ["model.yaml", "weights.bin"], tag

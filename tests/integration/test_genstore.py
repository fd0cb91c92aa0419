"""bench/genstore.py writes stores that the real BentoML package reads back as generated.

BentoML runs in a subprocess: importing it here is slow and leaves global
state (configuration containers, loggers) behind for every later test.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

# bench/ is a directory of scripts, not a package; put it on the path to import one.
BENCH_DIRECTORY = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH_DIRECTORY))

import genstore  # noqa: E402 - importable only once bench/ is on sys.path
from genstore import GeneratedStore  # noqa: E402 - as above

NOW = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)

# Run by the real bentoml with BENTOML_HOME set; prints what BentoML sees as JSON.
READ_STORE_WITH_BENTOML = """
import io, json, pathlib
import bentoml

def describe(item, yaml_name):
    buffer = io.StringIO()
    item.info.dump(buffer)
    return {
        "tag": str(item.tag),
        "creation_time": item.info.creation_time.isoformat(),
        "labels": item.info.labels,
        "dump_matches_file": buffer.getvalue()
        == pathlib.Path(item.path, yaml_name).read_text(),
    }

models = bentoml.models.list()
bentos = bentoml.bentos.list()
print(json.dumps({
    "models": [describe(model, "model.yaml") for model in models],
    "model_latest": {
        name: str(bentoml.models.get(name + ":latest").tag)
        for name in sorted({model.tag.name for model in models})
    },
    "bentos": [
        describe(bento, "bento.yaml")
        | {"models": [str(model.tag) for model in bento.info.all_models]}
        for bento in bentos
    ],
    "bento_latest": {
        name: str(bentoml.bentos.get(name + ":latest").tag)
        for name in sorted({bento.tag.name for bento in bentos})
    },
}))
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedStore:
    """A small store: 3 model names x 4 versions with two files each, plus 2 bentos."""
    return genstore.generate_store(
        tmp_path_factory.mktemp("bentoml-home"),
        names=3,
        versions_per_name=4,
        files_per_version=2,
        bytes_per_file=1000,
        bentos=2,
        seed=7,
        now=NOW,
    )


@pytest.fixture(scope="module")
def bentoml_view(generated: GeneratedStore) -> dict[str, Any]:
    """What the real bentoml package reports about the generated store."""
    environment = os.environ | {
        "BENTOML_HOME": str(generated.root),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    completed = subprocess.run(
        [sys.executable, "-c", READ_STORE_WITH_BENTOML],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    view: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return view


def files_under(directory: Path) -> Iterator[Path]:
    """Yield every regular file below ``directory``."""
    return (path for path in directory.rglob("*") if path.is_file())


def nanoseconds_since_epoch(moment: datetime) -> int:
    """Return ``moment`` as exact integer nanoseconds since the Unix epoch."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def test_bentoml_lists_every_generated_model_tag(
    generated: GeneratedStore, bentoml_view: dict[str, Any]
) -> None:
    listed = sorted(model["tag"] for model in bentoml_view["models"])
    assert listed == sorted(version.tag for version in generated.all_versions("models"))
    assert len(listed) == 12


def test_bentoml_latest_is_the_newest_model_version_by_creation_time(
    generated: GeneratedStore, bentoml_view: dict[str, Any]
) -> None:
    expected = {
        name: max(versions, key=lambda version: version.creation_time).tag
        for (kind, name), versions in generated.versions.items()
        if kind == "models"
    }
    assert bentoml_view["model_latest"] == expected
    for (kind, name), versions in generated.versions.items():
        assert generated.latest(kind, name) == versions[-1]


def test_bentoml_reads_each_models_creation_time_and_labels_as_generated(
    generated: GeneratedStore, bentoml_view: dict[str, Any]
) -> None:
    read = {
        model["tag"]: (model["creation_time"], model["labels"]) for model in bentoml_view["models"]
    }
    expected = {
        version.tag: (version.creation_time.isoformat(), dict(version.labels))
        for version in generated.all_versions("models")
    }
    assert read == expected
    assert any(labels for _time, labels in read.values()), "seed 7 should label some versions"


def test_bentoml_rewrites_each_yaml_file_byte_for_byte_as_generated(
    bentoml_view: dict[str, Any],
) -> None:
    items = bentoml_view["models"] + bentoml_view["bentos"]
    assert [item["tag"] for item in items if not item["dump_matches_file"]] == []


def test_bentoml_lists_the_bentos_with_their_pinned_models(
    generated: GeneratedStore, bentoml_view: dict[str, Any]
) -> None:
    read = {bento["tag"]: bento for bento in bentoml_view["bentos"]}
    bentos = list(generated.all_versions("bentos"))
    assert sorted(read) == sorted(bento.tag for bento in bentos)
    assert len(bentos) == 2
    assert any(bento.models for bento in bentos), "seed 7 should pin a model"
    model_tags = {version.tag for version in generated.all_versions("models")}
    for bento in bentos:
        assert read[bento.tag]["creation_time"] == bento.creation_time.isoformat()
        assert read[bento.tag]["labels"] == dict(bento.labels)
        assert read[bento.tag]["models"] == list(bento.models)
        assert set(bento.models) <= model_tags
    assert bentoml_view["bento_latest"] == {
        name: versions[-1].tag
        for (kind, name), versions in generated.versions.items()
        if kind == "bentos"
    }


def test_version_directories_are_private_and_every_file_is_aged_to_the_creation_time(
    generated: GeneratedStore,
) -> None:
    for version in generated.all_versions():
        assert stat.S_IMODE(version.path.stat().st_mode) == 0o700
        for path in [version.path, *files_under(version.path)]:
            assert path.stat().st_mtime_ns == nanoseconds_since_epoch(version.creation_time), path


def test_latest_pointers_are_plain_0644_files_holding_only_the_version(
    generated: GeneratedStore,
) -> None:
    for (kind, name), versions in generated.versions.items():
        pointer = generated.root / kind / name / "latest"
        assert not pointer.is_symlink()
        assert stat.S_IMODE(pointer.stat().st_mode) == 0o644
        assert pointer.read_bytes() == versions[-1].version.encode()


def test_reported_bytes_and_file_count_match_the_files_on_disk(
    generated: GeneratedStore,
) -> None:
    for version in generated.all_versions():
        assert version.bytes == sum(path.stat().st_size for path in files_under(version.path))
    assert generated.total_bytes == sum(version.bytes for version in generated.all_versions())
    assert generated.file_count == sum(
        len(list(files_under(version.path))) for version in generated.all_versions()
    )
    assert generated.version_count == 14


def test_names_and_versions_are_valid_tags_and_creation_times_are_unique(
    generated: GeneratedStore,
) -> None:
    versions = list(generated.all_versions())
    for version in versions:
        for part in (version.name, version.version):
            assert genstore.TAG_PATTERN.fullmatch(part), part
            assert len(part) <= genstore.MAX_TAG_LENGTH
        assert len(version.version) == 16
        assert NOW - version.creation_time <= timedelta(days=180)
    assert len({version.creation_time for version in versions}) == len(versions)


def test_version_strings_do_not_sort_by_creation_time(tmp_path: Path) -> None:
    store = genstore.generate_store(
        tmp_path, names=1, versions_per_name=50, files_per_version=0, bytes_per_file=0, now=NOW
    )
    (versions,) = store.versions.values()
    in_time_order = [version.version for version in versions]
    assert sorted(in_time_order) != in_time_order


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("iris-clf", "2nywwihj3g3naax4"),
        ("123", "2222222222222222"),
        ("1.5", "yes"),
        ("null", "0x1f"),
        ("a.b-c_d", "1_000"),
    ],
)
@pytest.mark.parametrize("labels", [{}, {"stage": "prod"}, {"keep": "true", "owner": "a b"}])
def test_model_yaml_template_matches_safe_dump_even_for_values_yaml_would_misread(
    name: str, version: str, labels: dict[str, str]
) -> None:
    for creation_time in (NOW, NOW.replace(microsecond=0)):
        info = {
            "name": name,
            "version": version,
            "module": "",
            "labels": labels,
            "options": {},
            "metadata": {},
            "context": {
                "framework_name": "",
                "framework_versions": {},
                "bentoml_version": "1.4.40",
                "python_version": genstore.PYTHON_VERSION,
            },
            "signatures": {},
            "api_version": "v1",
            "creation_time": creation_time.isoformat(),
        }
        rendered = genstore.render_model_yaml(name, version, labels, creation_time)
        assert rendered == yaml.safe_dump(info, sort_keys=False)


def test_the_same_seed_and_now_give_the_same_store(tmp_path: Path) -> None:
    def describe(root: Path) -> list[tuple[str, datetime, dict[str, str]]]:
        store = genstore.generate_store(
            root,
            names=2,
            versions_per_name=3,
            files_per_version=1,
            bytes_per_file=10,
            bentos=1,
            seed=3,
            now=NOW,
        )
        return [
            (version.tag, version.creation_time, dict(version.labels))
            for version in store.all_versions()
        ]

    assert describe(tmp_path / "first") == describe(tmp_path / "second")


def test_sparse_artifacts_have_their_full_size_but_occupy_almost_no_blocks(
    tmp_path: Path,
) -> None:
    store = genstore.generate_store(
        tmp_path,
        names=1,
        versions_per_name=1,
        files_per_version=1,
        bytes_per_file=8 * 1024 * 1024,
        sparse=True,
        now=NOW,
    )
    (version,) = store.all_versions()
    artifact = next(path for path in files_under(version.path) if path.name != "model.yaml")
    assert artifact.stat().st_size == 8 * 1024 * 1024
    assert artifact.stat().st_blocks * 512 < 1024 * 1024


def test_generating_into_an_existing_store_is_refused(generated: GeneratedStore) -> None:
    with pytest.raises(FileExistsError):
        genstore.generate_store(
            generated.root, names=1, versions_per_name=1, files_per_version=0, bytes_per_file=0
        )


def test_naive_now_and_negative_counts_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        genstore.generate_store(
            tmp_path,
            names=1,
            versions_per_name=1,
            files_per_version=0,
            bytes_per_file=0,
            now=datetime(2026, 1, 1),  # noqa: DTZ001 - a naive time is the point of the test
        )
    with pytest.raises(ValueError, match="names must be at least 0"):
        genstore.generate_store(
            tmp_path, names=-1, versions_per_name=1, files_per_version=0, bytes_per_file=0
        )


def test_script_writes_the_store_and_prints_a_table(tmp_path: Path) -> None:
    root = tmp_path / "home"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCH_DIRECTORY / "genstore.py"),
            str(root),
            "--names",
            "2",
            "--versions",
            "3",
            "--files",
            "1",
            "--bytes",
            "64",
            "--bentos",
            "1",
            "--sparse",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    table = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in completed.stdout.splitlines())
    assert table["versions"] == "7"
    model_versions = [path for path in (root / "models").glob("*/*") if path.is_dir()]
    assert len(model_versions) == 6

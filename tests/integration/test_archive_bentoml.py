"""Archives storewarden writes before a removal are what the real BentoML imports.

BentoML (the installed package) saves three model versions and builds a
bento; storewarden removes two of the models and the bento with
``archive.dir`` set, one archive format each (tar, gz, and xz -- the
``.bentomodel``/``.bento`` that ``bentoml models export`` writes). Then:

- in a fresh BentoML home, ``bentoml models import`` and ``bentoml import``
  take each archive and BentoML reads back the same tag, labels,
  creation_time and file contents;
- in the pruned home, ``storewarden restore`` puts them back and BentoML's
  ``get`` finds them, ``latest`` naming the newest by creation_time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storewarden.config import build_config
from storewarden.engine import Engine
from tests.e2e.test_cli import run_cli
from tests.integration.test_bentoml_compat import SERVICE, bentoml_environment, run_python

pytestmark = pytest.mark.slow

# argv: the build context. Prints each model's and bento's tag, labels, time and file digests.
SAVE = """
import hashlib, json, os, pathlib, sys
import bentoml

context = sys.argv[1]
for index in range(3):
    with bentoml.models.create("iris", labels={"stage": f"s{index}", "team": "vision"}) as model:
        root = pathlib.Path(model.path)
        (root / "weights.bin").write_bytes(os.urandom(200_000 + index))
        (root / "sub").mkdir()
        (root / "sub" / "config.json").write_text(json.dumps({"index": index}))
bentoml.bentos.build(service="service:Svc", build_ctx=context, python={"lock_packages": False})
"""

# argv: JSON list of [kind, tag]. Prints what BentoML's get() finds for each, and each latest.
READ = """
import hashlib, json, pathlib, sys
import bentoml

def files(path):
    root = pathlib.Path(path)
    return {
        str(item.relative_to(root)): hashlib.sha256(item.read_bytes()).hexdigest()
        for item in sorted(root.rglob("*")) if item.is_file()
    }

found = {}
for kind, tag in json.loads(sys.argv[1]):
    item = bentoml.models.get(tag) if kind == "models" else bentoml.bentos.get(tag)
    found[tag] = {
        "tag": str(item.tag),
        "labels": dict(item.info.labels),
        "creation_time": item.info.creation_time.isoformat(),
        "files": files(item.path),
    }
print(json.dumps({
    "found": found,
    "models": sorted(str(model.tag) for model in bentoml.models.list()),
    "bentos": sorted(str(bento.tag) for bento in bentoml.bentos.list()),
    "model_latest": str(bentoml.models.get("iris:latest").tag),
    "bento_latest": str(bentoml.bentos.get("svc:latest").tag) if bentoml.bentos.list() else None,
}))
"""


@dataclass(frozen=True)
class Archived:
    """The store BentoML wrote, what it held before pruning, and the archives storewarden wrote."""

    home: Path
    before: dict[str, Any]
    models: list[str]  # oldest first
    bento: str
    archives: dict[str, Path]  # tag -> archive


def engine(home: Path, archive_dir: Path, archive_format: str, **extra: Any) -> Engine:
    """Return an engine on ``home`` archiving into ``archive_dir`` in ``archive_format``."""
    return Engine(
        build_config(
            {
                "store": str(home),
                "trigger": {"high_percent": 99.9, "low_percent": 99.0},
                "protect": {"settle": 0, "min_age": 0, "in_use": False},
                "archive": {"dir": str(archive_dir), "format": archive_format},
                **extra,
            }
        )
    )


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> Archived:
    """Save with BentoML, then remove iris's oldest (prune), middle (delete) and the bento."""
    root = tmp_path_factory.mktemp("archive-compat")
    home = root / "bentoml"
    context = root / "build"
    context.mkdir()
    (context / "service.py").write_text(SERVICE)
    completed = subprocess.run(
        [sys.executable, "-c", SAVE, str(context)],
        env=bentoml_environment(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=root,
    )
    assert completed.returncode == 0, completed.stderr
    versions = sorted(
        (home / "models" / "iris").glob("*/model.yaml"), key=lambda path: path.stat().st_mtime
    )
    bento_version = next((home / "bentos" / "svc").glob("*/bento.yaml")).parent.name
    tags = [f"iris:{path.parent.name}" for path in versions]
    bento = f"svc:{bento_version}"
    before = run_python(
        home, READ, json.dumps([["models", tag] for tag in tags] + [["bentos", bento]])
    )
    models = sorted(tags, key=lambda tag: before["found"][tag]["creation_time"])
    archive_dir = root / "archive"
    archive_dir.mkdir()

    pruned = engine(home, archive_dir, "tar", retention={"max_versions": 2}).cycle()
    assert [outcome.record.tag for outcome in pruned.removed] == [models[0]]
    engine(home, archive_dir, "gz").delete([models[1]])
    engine(home, archive_dir, "xz").delete([bento])

    files = {path.name: path for path in archive_dir.iterdir()}
    archives = {
        models[0]: files[f"{models[0].replace(':', '+')}.bentomodel.tar"],
        models[1]: files[f"{models[1].replace(':', '+')}.bentomodel.gz"],
        bento: files[f"{bento.replace(':', '+')}.bento"],
    }
    assert len(files) == 3
    return Archived(home, before["found"], models, bento, archives)


def bentoml_cli(home: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run BentoML's own command line on ``home``."""
    return subprocess.run(
        [sys.executable, "-m", "bentoml", *arguments],
        env=bentoml_environment(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=home.parent,
    )


def test_bentoml_imports_every_archive_with_its_tag_labels_time_and_files(
    archived: Archived, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh-bentoml"
    for tag, path in archived.archives.items():
        command = ("import",) if tag == archived.bento else ("models", "import")
        imported = bentoml_cli(fresh, *command, str(path))
        assert imported.returncode == 0, imported.stderr

    read = run_python(
        fresh,
        READ,
        json.dumps(
            [
                ["models", archived.models[0]],
                ["models", archived.models[1]],
                ["bentos", archived.bento],
            ]
        ),
    )

    for tag in archived.archives:
        assert read["found"][tag] == archived.before[tag], tag
    assert read["models"] == sorted(archived.models[:2])
    assert read["model_latest"] == archived.models[1]
    assert read["bento_latest"] == archived.bento


def test_storewarden_restore_puts_versions_back_where_bentoml_finds_them(
    archived: Archived,
) -> None:
    home = archived.home
    for tag in (archived.models[1], archived.bento):
        restored = run_cli(home, "restore", str(archived.archives[tag]))
        assert restored.returncode == 0, restored.stderr

    read = run_python(
        home,
        READ,
        json.dumps([["models", archived.models[1]], ["bentos", archived.bento]]),
    )

    assert read["found"][archived.models[1]] == archived.before[archived.models[1]]
    assert read["found"][archived.bento] == archived.before[archived.bento]
    assert read["models"] == sorted(archived.models[1:])
    assert read["model_latest"] == archived.models[2], "an older version leaves latest alone"
    assert read["bento_latest"] == archived.bento, "the only bento is latest again"
    listed = bentoml_cli(home, "models", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr

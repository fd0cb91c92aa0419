"""Safety cases met with stores the real BentoML package wrote (issue 14: cases 1, 2, 5, 6, 8).

Each test has BentoML save (or import) models in a subprocess, lets
storewarden act on the store, and has BentoML read the result back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_bentoml_compat import bentoml_environment, run_python
from tests.reliability.test_hostile_input import drop_file_capabilities

pytestmark = pytest.mark.slow

# argv: bytes of weights. Saves iris once, normally; prints its tag.
SAVE_ONE = """
import json, os, pathlib, sys
import bentoml

with bentoml.models.create("iris") as model:
    pathlib.Path(model.path, "weights.bin").write_bytes(os.urandom(int(sys.argv[1])))
print(json.dumps({"tag": str(model.tag)}))
"""

# argv: chunks, bytes a chunk, seconds between chunks. A real save of iris whose copy
# into the store is slow: BentoML's own Model.save (register, copytree, then latest),
# with copytree slowed down as a large model on a slow disk copies, model.yaml first.
SLOW_SAVE = """
import json, os, pathlib, shutil, sys, time
import bentoml

chunks, size, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
real_copytree = shutil.copytree

def slow_copytree(source, destination, *args, **kwargs):
    source, destination = pathlib.Path(source), pathlib.Path(destination)
    if "models" not in destination.parts:
        return real_copytree(source, destination, *args, **kwargs)
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "model.yaml", destination / "model.yaml")
    print(json.dumps({"copying": destination.name}), flush=True)
    reader = open(source / "weights.bin", "rb")
    with reader, open(destination / "weights.bin", "wb") as writer:
        for chunk in range(chunks):
            if chunk == chunks - 1:
                sys.stdin.readline()  # the last chunk waits for the test's word: never too soon
            writer.write(reader.read(size))
            writer.flush()
            time.sleep(pause)
    return destination

shutil.copytree = slow_copytree
with bentoml.models.create("iris") as model:
    pathlib.Path(model.path, "weights.bin").write_bytes(os.urandom(chunks * size))
print(json.dumps({"saved": str(model.tag)}), flush=True)
"""

# What BentoML makes of iris:latest: its tag and how many bytes of weights it has.
READ_LATEST = """
import json, pathlib
import bentoml

model = bentoml.models.get("iris:latest")
print(json.dumps({
    "tag": str(model.tag),
    "weights": pathlib.Path(model.path, "weights.bin").stat().st_size,
}))
"""


def storewarden(
    home: Path, *arguments: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI on ``home``; return its result."""
    options = ["--config", str(config)] if config is not None else []
    return subprocess.run(
        [sys.executable, "-m", "storewarden", *arguments, *options],
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def events(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Return the audit events a CLI run printed."""
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def start_slow_save(
    home: Path, chunks: int = 8, size: int = 256 * 1024
) -> tuple[subprocess.Popen[str], str]:
    """Start a slow real save of iris; return it and its version once model.yaml is in place.

    The copy's last chunk waits for a line on the saver's stdin (``communicate("go\\n")``).
    """
    saver = subprocess.Popen(
        [sys.executable, "-c", SLOW_SAVE, str(chunks), str(size), "0.5"],
        env=bentoml_environment(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert saver.stdout is not None
    line = saver.stdout.readline()
    assert line, saver.communicate()[1]
    return saver, json.loads(line)["copying"]


# -- case 1: latest never moves onto a version still being written ------------------------


@pytest.mark.parametrize("how", ["delete-latest", "prune-without-keep-latest"])
def test_latest_never_moves_onto_a_version_bentoml_is_still_copying(
    tmp_path: Path, how: str
) -> None:
    home = tmp_path / "bentoml"
    old = run_python(home, SAVE_ONE, str(64 * 1024))["tag"]
    time.sleep(1.5)  # old settles (settle: 1s); the new one will be written all along
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "protect": {"settle": "1s", "min_age": "0s", "keep_last": 0},
                "trigger": {"max_store_size": 1},
                "rules": [{"match": "iris", "keep_latest": False}],
            }
        )
    )
    saver, copying = start_slow_save(home)
    try:
        if how == "delete-latest":
            result = storewarden(home, "delete", "iris:latest", "--kind", "models", config=config)
            assert result.returncode == 4, result.stderr
            assert "no_settled_latest" in result.stderr
        else:
            result = storewarden(home, "prune", config=config)
            assert result.returncode == 0, result.stderr
            skipped = [e for e in events(result) if e["event"] == "removal_skipped"]
            assert [(e["version"], e["reasons"]) for e in skipped] == [
                (old.partition(":")[2], ["no_settled_latest"])
            ]
        # While the copy goes on, latest still names the whole old version.
        during = run_python(home, READ_LATEST)
        assert during == {"tag": old, "weights": 64 * 1024}
        assert not [e for e in events(result) if e["event"] == "latest_changed"]
    finally:
        output, errors = saver.communicate("go\n", timeout=120)
    assert saver.returncode == 0, errors
    saved = json.loads(output.splitlines()[-1])["saved"]
    assert saved.partition(":")[2] == copying
    # BentoML then points latest at the new version, once it is whole.
    assert run_python(home, READ_LATEST) == {"tag": saved, "weights": 8 * 256 * 1024}


# -- case 2: a version directory that is a symlink ---------------------------------------


def test_a_latest_naming_a_symlinked_version_bentoml_loads_is_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    first = run_python(home, SAVE_ONE, "1000")["tag"]
    second = run_python(home, SAVE_ONE, "2000")["tag"]
    # The newest version lives elsewhere (another disk, say), linked into the store.
    version = second.partition(":")[2]
    linked = home / "models" / "iris" / version
    elsewhere = tmp_path / "elsewhere" / version
    elsewhere.parent.mkdir()
    shutil.move(linked, elsewhere)
    os.symlink(elsewhere, linked)
    assert run_python(home, READ_LATEST) == {"tag": second, "weights": 2000}
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"protect": {"settle": "0s"}}))  # the other version settled

    result = storewarden(home, "prune", config=config)

    assert result.returncode == 0, result.stderr
    names = [event["event"] for event in events(result)]
    assert "pointer_repaired" not in names
    assert (home / "models" / "iris" / "latest").read_text() == version
    assert run_python(home, READ_LATEST) == {"tag": second, "weights": 2000}
    assert (home / "models" / "iris" / first.partition(":")[2]).is_dir()
    assert os.path.islink(linked)
    assert (elsewhere / "weights.bin").stat().st_size == 2000


# -- red team, round four: latest a symlink to a file holding the version -----------------


@pytest.mark.parametrize("where", ["beside-in-the-name-directory", "outside-the-store"])
def test_a_latest_linked_to_a_file_names_what_bentoml_reads_through_it(
    tmp_path: Path, where: str
) -> None:
    home = tmp_path / "bentoml"
    old = run_python(home, SAVE_ONE, "1000")["tag"]
    middle = run_python(home, SAVE_ONE, "2000")["tag"]
    newest = run_python(home, SAVE_ONE, "3000")["tag"]
    version = old.partition(":")[2]
    name_dir = home / "models" / "iris"
    holder = name_dir / "pointer.txt" if where.startswith("beside") else tmp_path / "ptr"
    holder.write_text(version)
    (name_dir / "latest").unlink()
    os.symlink("pointer.txt" if where.startswith("beside") else holder, name_dir / "latest")
    assert run_python(home, READ_LATEST) == {"tag": old, "weights": 1000}
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "protect": {"settle": "0s", "min_age": "0s", "keep_last": 1},
                "trigger": {"max_store_size": 1},
            }
        )
    )

    result = storewarden(home, "prune", config=config)

    assert result.returncode == 0, result.stderr
    assert "pointer_repaired" not in [event["event"] for event in events(result)]
    assert run_python(home, READ_LATEST) == {"tag": old, "weights": 1000}
    assert holder.read_text() == version
    kept = sorted(p.name for p in name_dir.iterdir() if p.is_dir())
    if where == "outside-the-store":  # unknown to the warden: nothing of the name goes
        assert len(kept) == 3
        return
    assert middle.partition(":")[2] not in kept  # the one version neither latest nor kept
    assert len(kept) == 2
    # Moving it writes a plain file over the link, which BentoML reads; pointer.txt stays.
    moved = storewarden(home, "delete", "iris:latest", "--kind", "models", config=config)
    assert moved.returncode == 0, moved.stderr
    assert not (name_dir / "latest").is_symlink()
    assert run_python(home, READ_LATEST) == {"tag": newest, "weights": 3000}
    assert holder.read_text() == version


# -- case 5: a model.yaml that cannot be read is not half written --------------------------


def test_a_model_whose_model_yaml_cannot_be_read_is_protected_not_abandoned(
    tmp_path: Path,
) -> None:
    home = tmp_path / "bentoml"
    unreadable = run_python(home, SAVE_ONE, "1000")["tag"]
    run_python(home, SAVE_ONE, "1000")
    version = unreadable.partition(":")[2]
    # latest names the version whose model.yaml the warden cannot read; BentoML (here
    # root, standing for the other user it runs as) still can.
    (home / "models" / "iris" / "latest").write_text(version)
    (home / "models" / "iris" / version / "model.yaml").chmod(0)
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "protect": {"settle": "0s", "min_age": "0s", "abandoned_after": "0s"},
                "trigger": {"max_store_size": 1},
            }
        )
    )

    result = subprocess.run(
        [sys.executable, "-m", "storewarden", "prune", "--config", str(config)],
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=drop_file_capabilities if os.geteuid() == 0 else None,
    )

    assert result.returncode == 0, result.stderr
    removed = [e for e in events(result) if e["event"] == "version_removed"]
    assert version not in {event["version"] for event in removed}
    assert (home / "models" / "iris" / version / "model.yaml").exists()
    assert run_python(home, READ_LATEST) == {"tag": unreadable, "weights": 1000}


# -- case 6: archive names that would collide ----------------------------------------------

# argv: tags to save with explicit versions. One line of JSON: the tags saved.
SAVE_TAGS = """
import json, os, pathlib, sys
import bentoml

saved = []
for tag in sys.argv[1:]:
    with bentoml.models.create(tag) as model:
        pathlib.Path(model.path, "weights.bin").write_bytes(tag.encode() * 100)
    saved.append(str(model.tag))
print(json.dumps(saved))
"""

# argv: archive paths. Imports each with BentoML's own CLI into the store; lists the result.
IMPORT_ALL = """
import json, subprocess, sys
import bentoml

for path in sys.argv[1:]:
    subprocess.run([sys.executable, "-m", "bentoml", "models", "import", path], check=True)
weights = {}
for model in bentoml.models.list():
    with open(model.path_of("weights.bin"), "rb") as handle:
        weights[str(model.tag)] = handle.read().decode()
print(json.dumps(weights))
"""


def test_two_versions_whose_archive_names_would_collide_both_come_back(tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    saved = run_python(home, SAVE_TAGS, "resnet-50:v1", "resnet:50-v1")
    archives = tmp_path / "archive"
    archives.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "archive": {"dir": str(archives)},
                "protect": {"settle": "0s", "min_age": "0s", "keep_last": 0},
                "trigger": {"max_store_size": 1},
                "rules": [{"match": "*", "keep_latest": False}],
            }
        )
    )

    result = storewarden(home, "prune", config=config)

    assert result.returncode == 0, result.stderr
    removed = {
        f"{e['name']}:{e['version']}" for e in events(result) if e["event"] == "version_removed"
    }
    assert removed == set(saved)
    written = sorted(archives.iterdir())
    assert len(written) == 2
    # Both archives import back with BentoML's own CLI, each the version it was.
    restored = run_python(tmp_path / "elsewhere", IMPORT_ALL, *map(str, written))
    assert restored == {tag: tag * 100 for tag in saved}


# -- case 8: an imported version is new to this store, whatever its creation_time ------------

# argv: the export path. Saves iris with BentoML, dates it 90 days back (as a model
# trained long ago and exported then would be), and exports it with BentoML's own CLI.
SAVE_OLD_AND_EXPORT = """
import json, os, pathlib, subprocess, sys
from datetime import datetime, timedelta, timezone
import bentoml

with bentoml.models.create("iris") as model:
    pathlib.Path(model.path, "weights.bin").write_bytes(os.urandom(1000))
descriptor = pathlib.Path(bentoml.models.get(model.tag).path, "model.yaml")
old = (datetime.now(tz=timezone.utc) - timedelta(days=90)).isoformat()
text = descriptor.read_text()
start = text.index("creation_time: '") + len("creation_time: '")
descriptor.write_text(text[:start] + old + text[text.index("'", start):])
subprocess.run([sys.executable, "-m", "bentoml", "models", "export", str(model.tag), sys.argv[1]],
               check=True, capture_output=True)
print(json.dumps({"tag": str(model.tag), "created": old}))
"""

IMPORT_ONE = """
import json, subprocess, sys
import bentoml

subprocess.run([sys.executable, "-m", "bentoml", "models", "import", sys.argv[1]],
               check=True, capture_output=True)
print(json.dumps([str(model.tag) for model in bentoml.models.list()]))
"""


def test_a_model_imported_today_but_created_months_ago_is_protected_by_min_age(
    tmp_path: Path,
) -> None:
    exported = run_python(
        tmp_path / "elsewhere", SAVE_OLD_AND_EXPORT, str(tmp_path / "iris.bentomodel")
    )
    home = tmp_path / "bentoml"
    run_python(home, SAVE_ONE, "1000")  # a model of this store, created now
    time.sleep(1.1)
    assert exported["tag"] in run_python(home, IMPORT_ONE, str(tmp_path / "iris.bentomodel"))
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "protect": {"settle": "1s", "min_age": "1h", "keep_last": 0},
                "trigger": {"max_store_size": 1},
                "rules": [{"match": "*", "keep_latest": False}],
            }
        )
    )
    time.sleep(1.1)  # both settled: only min_age can keep them now

    status = storewarden(home, "status", "--json", config=config)
    result = storewarden(home, "prune", config=config)

    assert result.returncode == 0, result.stderr
    assert [e for e in events(result) if e["event"] == "version_removed"] == []
    (iris,) = [name for name in json.loads(status.stdout)["names"] if name["name"] == "iris"]
    imported = {v["version"]: v for v in iris["versions"]}[exported["tag"].partition(":")[2]]
    assert imported["creation_time"].startswith(exported["created"][:10])
    assert "min_age" in imported["protected"]
    assert imported["in_store_since"] > imported["creation_time"]

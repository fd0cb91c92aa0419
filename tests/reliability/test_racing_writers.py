"""Writers racing a daemon that prunes as hard as it can.

The daemon (``storewarden run``, a subprocess) runs with ``max_store_size``
far below the store, so every check is a prune, and a short ``settle``. At
the same time:

- the real ``bentoml`` package saves versions of ``racer`` in a loop and
  reads each new latest back (a subprocess);
- two slow writers copy a large version file by file, as BentoML's copytree
  does, over a dozen seconds. ``slowfirst`` imports an old version (its
  creation_time days back, as ``bentoml models import`` keeps it) and writes
  ``model.yaml`` first: it looks complete and removable all along, and only
  ``settle`` protects it. ``slowlast`` saves a new version and writes
  ``model.yaml`` last: it is ``incomplete`` the whole time; then it points
  ``latest`` at it, making the version before fair game;
- a sampler reads every ``latest`` in a tight loop.

Neither writer may see an error, no version may be removed while it is being
written, and ``latest`` must never name an incomplete version.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import invariants
from tests.e2e.test_daemon import DaemonProcess
from tests.integration.test_bentoml_references import LOAD_NEEDED
from tests.reliability.support import genstore
from tests.storebuilder import make_version, point_latest

pytestmark = pytest.mark.slow

RACE_SECONDS = 12.0
SETTLE = 6.0  # seconds; a slow writer writes a file every SLOW_INTERVAL, well inside it
SLOW_FILES = 16
SLOW_INTERVAL = RACE_SECONDS / SLOW_FILES
SLOW_FILE_BYTES = 1024 * 1024

# argv: seconds to run. Saves racer versions with the real package until then; one JSON
# line per save; any exception fails the process.
BENTOML_WRITER = """
import json, os, pathlib, sys, time
import bentoml

deadline = time.time() + float(sys.argv[1])
count = 0
while time.time() < deadline or count < 3:
    with bentoml.models.create("racer", labels={"n": str(count)}) as model:
        for shard in range(3):
            pathlib.Path(model.path, f"shard-{shard}.bin").write_bytes(os.urandom(64 * 1024))
    saved = time.time()
    latest = bentoml.models.get("racer:latest")
    for path in sorted(pathlib.Path(latest.path).iterdir()):
        path.read_bytes()
    print(json.dumps({"version": model.tag.version, "saved": saved,
                      "latest": latest.tag.version}), flush=True)
    count += 1
"""

# argv: "first" or "last" (when model.yaml is written), files, bytes, interval; environment:
# VERSION_DIR, DESCRIPTOR (model.yaml's text). Not on the command line, where the warden's
# in-use scan would see the path and protect the version (as it should) instead of settle.
# Copies like copytree, file by file; checks the copy; a new version ("last") then becomes
# latest, as BentoML's register() makes it.
SLOW_WRITER = """
import hashlib, json, os, pathlib, sys, time

version_dir, descriptor = pathlib.Path(os.environ["VERSION_DIR"]), os.environ["DESCRIPTOR"]
descriptor_when, files, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
interval = float(sys.argv[4])
version = version_dir.name
written = {}

def write(relative, data):
    with open(version_dir / relative, "wb") as handle:
        handle.write(data)
    written[relative] = hashlib.sha256(data).hexdigest()

version_dir.mkdir(mode=0o700)
if descriptor_when == "first":
    write("model.yaml", descriptor.encode())
for index in range(files):
    write(f"part-{index:02d}.bin", os.urandom(size))
    time.sleep(interval)
if descriptor_when == "last":
    write("model.yaml", descriptor.encode())
for relative, digest in written.items():
    assert hashlib.sha256((version_dir / relative).read_bytes()).hexdigest() == digest, relative
done = time.time()
if descriptor_when == "last":
    (version_dir.parent / "latest").write_text(version)
print(json.dumps({"version": version, "done": done, "files": written}), flush=True)
"""


class LatestSampler(threading.Thread):
    """Reads every name's ``latest`` in a loop; records each moment it named an incomplete version.

    A reading counts only if ``latest`` named the same version before and after
    the version was looked at (so it named it the whole time). An empty
    pointer is BentoML's own truncate-then-write and is skipped.
    """

    def __init__(self, root: Path, names: tuple[str, ...]) -> None:
        super().__init__(name="latest-sampler")
        self.root = root
        self.names = names
        self.stop = threading.Event()
        self.samples = 0
        self.violations: list[str] = []

    def read(self, name: str) -> str | None:
        try:
            return (self.root / "models" / name / "latest").read_text()
        except FileNotFoundError:
            return None

    def complete(self, name: str, version: str) -> bool:
        try:
            data = yaml.safe_load(
                (self.root / "models" / name / version / "model.yaml").read_text()
            )
        except (OSError, yaml.YAMLError):
            return False
        return isinstance(data, dict) and "creation_time" in data

    def run(self) -> None:
        while not self.stop.is_set():
            for name in self.names:
                before = self.read(name)
                if not before:
                    continue
                complete = self.complete(name, before)
                if not complete and self.read(name) == before:
                    self.violations.append(f"{time.time():.3f} {name}/latest -> {before}")
                self.samples += 1
            time.sleep(0.005)


@pytest.fixture
def samplers() -> Iterator[list[LatestSampler]]:
    """Sampler threads, stopped and joined whatever happens."""
    started: list[LatestSampler] = []
    yield started
    for sampler in started:
        sampler.stop.set()
        sampler.join()


def parse_lines(output: str) -> list[dict[str, Any]]:
    """Return the JSON lines of a writer's output."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("observer", ["auto", "polling"])
def test_writers_racing_a_daemon_under_pressure_never_see_an_error_or_a_broken_latest(
    tmp_path: Path, samplers: list[LatestSampler], observer: str
) -> None:
    root = tmp_path / "bentoml"
    (root / "models").mkdir(parents=True)
    old = datetime.now(tz=UTC) - timedelta(days=3)
    for name in ("slowfirst", "slowlast"):
        make_version(root, name, "before", created=old, size=256 * 1024)
        point_latest(root, name, "before")
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "store": str(root),
                "trigger": {"max_store_size": "1KiB"},
                "protect": {"min_age": "0s", "settle": f"{SETTLE}s", "keep_last": 1},
                "schedule": {
                    "check_interval": "1s",
                    "reconcile_interval": "10s",
                    "debounce": "0.2s",
                    "observer": observer,
                    "poll_interval": "0.5s",
                },
            }
        )
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log", dict(os.environ))
    try:
        daemon.wait_for(lambda events: any(e["event"] == "daemon_ready" for e in events), "ready")
        sampler = LatestSampler(root, ("racer", "slowfirst", "slowlast"))
        samplers.append(sampler)
        sampler.start()
        environment = {**os.environ, "BENTOML_HOME": str(root), "BENTOML_DO_NOT_TRACK": "1"}
        writers = {
            "bentoml": subprocess.Popen(
                [sys.executable, "-c", BENTOML_WRITER, str(RACE_SECONDS)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment,
            ),
            **{
                name: subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        SLOW_WRITER,
                        when,
                        str(SLOW_FILES),
                        str(SLOW_FILE_BYTES),
                        str(SLOW_INTERVAL),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={
                        **os.environ,
                        "VERSION_DIR": str(root / "models" / name / "during"),
                        "DESCRIPTOR": genstore.render_model_yaml(name, "during", {}, created),
                    },
                )
                for name, when, created in (
                    ("slowfirst", "first", old - timedelta(days=7)),
                    ("slowlast", "last", datetime.now(tz=UTC)),
                )
            },
        }
        outputs = {name: writer.communicate(timeout=300) for name, writer in writers.items()}
        # Once the writers are done, the daemon gets to what they left, once it settled:
        # the old import, and the version the new one replaced as latest.
        daemon.wait_for(
            lambda events: (
                {("slowfirst", "during"), ("slowlast", "before")}
                <= {(e["name"], e["version"]) for e in events if e["event"] == "version_removed"}
            ),
            "the old import and the replaced version removed",
        )
        sampler.stop.set()
        sampler.join()
        events = daemon.events()
    finally:
        code = daemon.stop()

    for name, writer in writers.items():
        assert writer.returncode == 0, f"the {name} writer failed:\n{outputs[name][1][-3000:]}"
    saves = parse_lines(outputs["bentoml"][0])
    assert len(saves) >= 3
    assert all(save["latest"] == save["version"] for save in saves)
    assert sampler.violations == []
    assert sampler.samples > 100

    removed = {(e["name"], e["version"]): e for e in events if e["event"] == "version_removed"}
    stamp = {key: datetime.fromisoformat(e["timestamp"]).timestamp() for key, e in removed.items()}
    for save in saves:  # a racer version goes, if at all, after its save finished
        key = ("racer", save["version"])
        assert key not in stamp or stamp[key] > save["saved"], f"{key} removed while saved"
    racer_removed = [key for key in removed if key[0] == "racer"]
    assert racer_removed, "the daemon never pruned the racer's old versions: no pressure?"
    (imported,) = parse_lines(outputs["slowfirst"][0])
    assert stamp[("slowfirst", "during")] > imported["done"], "removed while it was written"
    assert ("slowfirst", "before") not in removed
    (saved,) = parse_lines(outputs["slowlast"][0])
    assert stamp[("slowlast", "before")] > saved["done"], "removed while latest named it"
    assert ("slowlast", "during") not in removed
    version_dir = root / "models" / "slowlast" / "during"
    for relative, digest in saved["files"].items():
        assert hashlib.sha256((version_dir / relative).read_bytes()).hexdigest() == digest
    assert [e for e in events if e["event"] in ("removal_failed", "check_failed")] == []
    assert code == 0

    # BentoML reads what is left, and agrees with it.
    baseline = invariants.capture(
        root, tmp_path / "nothing-outside", invariants.ProtectSpec((), ())
    )
    assert invariants.check_with_bentoml([baseline]) == []


# argv: seconds to run, the build context directory. Saves an iris version every
# few tenths of a second with the real package, so there is always an old one
# about to be pruned. One JSON line per save.
MODEL_SAVER = """
import json, os, pathlib, sys, time
import bentoml

deadline = time.time() + float(sys.argv[1])
while time.time() < deadline:
    with bentoml.models.create("iris") as model:
        pathlib.Path(model.path, "weights.bin").write_bytes(os.urandom(32 * 1024))
    print(json.dumps({"saved": str(model.tag)}), flush=True)
    time.sleep(0.3)
"""

# argv: seconds to run, the build context directory. Builds bentos in a loop, each
# naming (by explicit version) the oldest iris version in the store: the very one
# the daemon removes next. A build that finds its model already gone fails, which
# is fine; a bento in the store whose model is gone is not. One JSON line per try.
BENTO_BUILDER = """
import json, pathlib, sys, time
import bentoml

deadline, context = time.time() + float(sys.argv[1]), pathlib.Path(sys.argv[2])
SOURCE = '''
import bentoml


@bentoml.service(name="racesvc")
class RaceSvc:
    model = bentoml.models.BentoModel("{tag}")

    @bentoml.api
    def predict(self, x: int) -> int:
        return x
'''
count = 0
while time.time() < deadline:
    try:  # none saved yet, or a version removed while listed
        models = sorted(bentoml.models.list("iris"), key=lambda model: model.info.creation_time)
    except Exception:
        models = []
    if not models:
        time.sleep(0.1)
        continue
    tag = str(models[0].tag)
    module = f"race_{count}"
    (context / f"{module}.py").write_text(SOURCE.format(tag=tag))
    try:
        built = bentoml.bentos.build(
            service=f"{module}:RaceSvc", build_ctx=str(context), python={"lock_packages": False}
        )
        print(json.dumps({"bento": str(built.tag), "model": tag}), flush=True)
    except Exception as error:  # the model went before the build resolved it
        print(json.dumps({"failed": tag, "error": type(error).__name__}), flush=True)
    count += 1
"""


def test_bentos_built_on_the_oldest_model_while_a_daemon_prunes_it_are_never_left_broken(
    tmp_path: Path,
) -> None:
    root = tmp_path / "bentoml"
    (root / "models").mkdir(parents=True)
    context = tmp_path / "build"
    context.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "store": str(root),
                "trigger": {"max_store_size": "1KiB"},
                "protect": {"min_age": "0s", "settle": "1s", "keep_last": 1},
                "schedule": {
                    "check_interval": "1s",
                    "reconcile_interval": "10s",
                    "debounce": "0.2s",
                },
            }
        )
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log", dict(os.environ))
    try:
        daemon.wait_for(lambda events: any(e["event"] == "daemon_ready" for e in events), "ready")
        environment = {**os.environ, "BENTOML_HOME": str(root), "BENTOML_DO_NOT_TRACK": "1"}
        writers = {
            name: subprocess.Popen(
                [sys.executable, "-c", script, str(RACE_SECONDS), str(context)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment,
            )
            for name, script in (("saver", MODEL_SAVER), ("builder", BENTO_BUILDER))
        }
        outputs = {name: writer.communicate(timeout=300) for name, writer in writers.items()}
        time.sleep(3)  # the daemon goes on pruning what the race left
        events = daemon.events()
    finally:
        code = daemon.stop()

    for name, writer in writers.items():
        assert writer.returncode == 0, f"the {name} failed:\n{outputs[name][1][-3000:]}"
    tries = parse_lines(outputs["builder"][0])
    built = [entry for entry in tries if "bento" in entry]
    assert len(built) >= 3, tries
    removed = [e for e in events if e["event"] == "version_removed"]
    assert {e["kind"] for e in removed} == {"models", "bentos"}, "no pressure on both kinds?"
    assert invariants.bentos_without_models(root) == []
    # BentoML itself finds every model each remaining bento needs.
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_NEEDED],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.splitlines()[-1])
    assert [e for e in events if e["event"] in ("removal_failed", "check_failed")] == []
    assert code == 0

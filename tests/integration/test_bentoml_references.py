"""Bentos the real BentoML built keep working after storewarden prunes their store.

BentoML 1.4 does not copy a model into a bento it builds: ``bento.yaml`` names
the resolved tag and the bento loads it from the store. The real package saves
the models and builds three bentos (one naming a model by explicit version,
one with two services naming different models, one by ``name:latest`` after
which a newer version was saved); storewarden prunes under pressure; then
BentoML loads every model each remaining bento needs, serves one of them for
real, and storewarden's delete refuses a model a bento needs, as BentoML's own
``bentoml models delete`` does.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from storewarden import logs
from storewarden.config import build_config
from storewarden.engine import Engine
from tests.integration.test_bentoml_compat import bentoml_environment, run_python

pytestmark = pytest.mark.slow

EXPLICIT_SERVICE = """
import bentoml


@bentoml.service
class SvcExplicit:
    model = bentoml.models.BentoModel("{iris_0}")

    @bentoml.api
    def predict(self, x: int) -> int:
        return x
"""

TWO_SERVICES = """
import pathlib

import bentoml


@bentoml.service
class Helper:
    model = bentoml.models.BentoModel("{mnist_0}")

    @bentoml.api
    def weights(self) -> int:
        return len(pathlib.Path(self.model.path, "weights.bin").read_bytes())


@bentoml.service
class SvcTwo:
    model = bentoml.models.BentoModel("{iris_1}")
    helper = bentoml.depends(Helper)

    @bentoml.api
    def predict(self, x: int) -> int:
        weights = pathlib.Path(self.model.path, "weights.bin").read_bytes()
        return x + len(weights)
"""

LATEST_SERVICE = """
import bentoml


@bentoml.service
class SvcLatest:
    model = bentoml.models.BentoModel("iris:latest")

    @bentoml.api
    def predict(self, x: int) -> int:
        return x
"""

# argv: the root for the build contexts, the bytes of weights per model.
SAVE_AND_BUILD = """
import json, os, pathlib, sys
import bentoml

root, size = pathlib.Path(sys.argv[1]), int(sys.argv[2])
services = json.loads(sys.argv[3])

def save(name):
    with bentoml.models.create(name) as model:
        pathlib.Path(model.path, "weights.bin").write_bytes(os.urandom(size))
    return str(model.tag)

tags = {}
for index in range(4):
    tags[f"iris_{index}"] = save("iris")
for index in range(2):
    tags[f"mnist_{index}"] = save("mnist")
bentos = {}
for name, (source, entry) in services.items():
    context = root / name
    context.mkdir()
    # One module name per bento: Python caches an imported module by its name.
    (context / f"service_{name}.py").write_text(source.format(**tags))
    # lock_packages off: locking resolves requirements against PyPI over the network.
    built = bentoml.bentos.build(
        service=f"service_{name}:{entry}",
        build_ctx=str(context),
        python={"lock_packages": False},
    )
    bentos[name] = str(built.tag)
tags["iris_4"] = save("iris")  # after the build: svc_latest's model is latest no more
print(json.dumps({"models": tags, "bentos": bentos}))
"""

# Every model each bento in the store needs, loaded by BentoML itself.
LOAD_NEEDED = """
import json
import bentoml

loaded = {}
for bento in bentoml.bentos.list():
    loaded[str(bento.tag)] = [
        str(bentoml.models.get(model.tag).tag) for model in bento.info.all_models
    ]
print(json.dumps(loaded))
"""


@dataclass(frozen=True)
class Built:
    """What BentoML saved and built, by role."""

    home: Path
    models: dict[str, str]
    bentos: dict[str, str]


@dataclass(frozen=True)
class Pruned:
    """The store after a prune, and the audit events of that prune."""

    built: Built
    events: list[dict[str, Any]]


def removed(events: list[dict[str, Any]]) -> list[str]:
    """Return ``name:version`` of each version_removed event, in order."""
    return [
        f"{event['name']}:{event['version']}"
        for event in events
        if event["event"] == "version_removed"
    ]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Pruned:
    """Save and build with BentoML, then prune once under pressure with storewarden."""
    root = tmp_path_factory.mktemp("references")
    home = root / "bentoml"
    contexts = root / "contexts"
    contexts.mkdir()
    services = {
        "explicit": (EXPLICIT_SERVICE, "SvcExplicit"),
        "two": (TWO_SERVICES, "SvcTwo"),
        "latest": (LATEST_SERVICE, "SvcLatest"),
    }
    listed = run_python(home, SAVE_AND_BUILD, str(contexts), str(64 * 1024), json.dumps(services))
    built = Built(home, listed["models"], listed["bentos"])
    config = build_config(
        {
            "store": str(home),
            # Every unprotected version is a candidate: the store is "too big".
            "trigger": {"high_percent": 100, "low_percent": 99.99, "max_store_size": 1},
            "protect": {"settle": "0s", "min_age": "0s", "keep_last": 0},
            "rules": [{"match": "svc_explicit", "keep_latest": False}],
        }
    )
    stream = io.StringIO()
    logs.configure(store=home, stream=stream, strict=True)
    try:
        Engine(config).cycle(recover=True)
    finally:
        structlog.reset_defaults()
    return Pruned(built, [json.loads(line) for line in stream.getvalue().splitlines()])


def test_the_prune_removes_the_old_bento_then_its_model_and_no_needed_model(
    pruned: Pruned,
) -> None:
    models, bentos = pruned.built.models, pruned.built.bentos

    # iris_2 is needed by no bento; svc_explicit's model can go once it has gone.
    assert removed(pruned.events) == [models["iris_2"], bentos["explicit"], models["iris_0"]]


def test_the_models_that_remaining_bentos_need_are_kept_as_referenced(pruned: Pruned) -> None:
    models, bentos = pruned.built.models, pruned.built.bentos
    home = pruned.built.home

    for role in ("iris_1", "iris_3", "mnist_0"):
        name, _, version = models[role].partition(":")
        assert (home / "models" / name / version / "model.yaml").is_file(), role
    assert bentos["latest"] != bentos["two"]


def test_bentoml_loads_every_model_each_remaining_bento_needs(pruned: Pruned) -> None:
    models, bentos = pruned.built.models, pruned.built.bentos

    loaded = run_python(pruned.built.home, LOAD_NEEDED)

    assert {bento: sorted(tags) for bento, tags in loaded.items()} == {
        bentos["two"]: sorted([models["iris_1"], models["mnist_0"]]),
        bentos["latest"]: [models["iris_3"]],
    }


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def post(url: str, body: dict[str, Any]) -> Any:
    """POST JSON and return the decoded answer."""
    request = urllib.request.Request(  # noqa: S310 - a loopback URL the test built
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return json.loads(answer.read())


def test_bentoml_serves_a_remaining_bento_whose_models_are_old(
    pruned: Pruned, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        serving = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                pruned.built.bentos["two"],
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=bentoml_environment(pruned.built.home),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        answer = None
        while time.monotonic() < deadline and serving.poll() is None:
            try:
                answer = post(f"http://127.0.0.1:{port}/predict", {"x": 1})
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert answer == 1 + 64 * 1024, log.read_text(errors="replace")[-2000:]
    finally:
        if serving.poll() is None:
            os.killpg(serving.pid, signal.SIGTERM)
            try:
                serving.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serving.pid, signal.SIGKILL)
                serving.wait(timeout=30)


def test_storewarden_delete_refuses_a_needed_model_with_exit_4_as_bentoml_does(
    pruned: Pruned, tmp_path: Path
) -> None:
    home = pruned.built.home
    model = pruned.built.models["iris_1"]
    name, _, version = model.partition(":")

    ours = subprocess.run(
        [sys.executable, "-m", "storewarden", "delete", model, "--kind", "models"],
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    theirs = subprocess.run(
        [sys.executable, "-m", "bentoml", "models", "delete", model, "--yes"],
        env=bentoml_environment(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )

    assert ours.returncode == 4, ours.stderr
    assert pruned.built.bentos["two"] in ours.stderr
    assert "referenced" in ours.stderr
    assert "is being used by the following bentos" in theirs.stdout + theirs.stderr
    assert (home / "models" / name / version / "model.yaml").is_file()

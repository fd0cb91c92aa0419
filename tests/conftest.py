"""Fixtures shared by every test: strict audit log, thread-leak guard, stores, tmpfs."""

from __future__ import annotations

import compileall
import contextlib
import io
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import storewarden
from storewarden import logs


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package to bytecode once, before the tests start hundreds of commands.

    An editable install leaves storewarden uncompiled, and with
    PYTHONDONTWRITEBYTECODE set (CI images set it) each command the tests run
    would compile every module again: 0.2 s a command. A wheel install is
    compiled by pip; this makes the tests run what a user runs.
    """
    del config
    compileall.compile_dir(Path(storewarden.__file__).parent, quiet=1)


class Audit:
    """The audit lines the code under test emitted, parsed, each held to the schema."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    @property
    def events(self) -> list[dict[str, Any]]:
        """Return every event emitted so far, parsed from its JSON line."""
        return [json.loads(line) for line in self._stream.getvalue().splitlines() if line]

    def named(self, name: str) -> list[dict[str, Any]]:
        """Return the events called ``name``."""
        return [event for event in self.events if event["event"] == name]


@pytest.fixture(autouse=True)
def audit(tmp_path: Path) -> Iterator[Audit]:
    """Route the audit log to a buffer in strict mode: an off-schema event raises."""
    stream = io.StringIO()
    logs.configure(store=tmp_path, stream=stream, strict=True, level="debug")
    yield Audit(stream)
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (observer, scheduler, timers)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    leaked: set[threading.Thread] = set()
    while time.monotonic() < deadline:
        leaked = {thread for thread in threading.enumerate() if thread not in before}
        leaked = {thread for thread in leaked if thread.is_alive()}
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"test leaked threads: {sorted(thread.name for thread in leaked)}")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty store root with models/ and bentos/."""
    root = tmp_path / "bentoml"
    (root / "models").mkdir(parents=True)
    (root / "bentos").mkdir()
    return root


def _mount_tmpfs(directory: Path, size: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Return a function that mounts a size-limited tmpfs and returns its path.

    Skipped (with the reason) where mounting is not permitted: the tests need
    a real filesystem of a fixed size, which only a real mount gives.
    """
    mounted: list[Path] = []

    def mount(size: str = "64m") -> Path:
        directory = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        try:
            _mount_tmpfs(directory, size)
        except (subprocess.CalledProcessError, FileNotFoundError) as error:
            detail = getattr(error, "stderr", b"") or b""
            pytest.skip(
                "cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                + detail.decode(errors="replace").strip()
            )
        mounted.append(directory)
        return directory

    yield mount
    for directory in mounted:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(directory)], check=True, capture_output=True)

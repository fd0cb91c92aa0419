"""Build small BentoML stores, version by version, for tests.

The format is BentoML 1.4's (see ../shared/BENTOML_STORE.md); the
compatibility tests check the same stores with the real package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

MODEL_YAML = """name: {name}
version: {version}
module: ''
labels:{labels}
options: {{}}
metadata: {{}}
context:
  framework_name: ''
  framework_versions: {{}}
  bentoml_version: 1.4.40
  python_version: 3.11.7
signatures: {{}}
api_version: v1
creation_time: '{creation_time}'
"""

BENTO_YAML = """service: service:Svc
name: {name}
version: {version}
bentoml_version: 1.4.40
creation_time: '{creation_time}'
labels:{labels}
models: []
"""


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return " {}"
    return "".join(f"\n  {key}: {value}" for key, value in labels.items())


def make_version(
    root: Path,
    name: str,
    version: str,
    *,
    kind: str = "models",
    created: datetime | None = None,
    size: int = 4096,
    labels: Mapping[str, str] | None = None,
    descriptor: bool = True,
    descriptor_text: str | bytes | None = None,
    changed: datetime | None = None,
    set_latest: bool = False,
) -> Path:
    """Create one version directory and return its path.

    ``created`` is its creation_time (default: 30 days before NOW);
    ``changed`` sets the mtime of everything inside (ctime cannot be set, so
    settle tests inject the clock instead). ``descriptor=False`` makes a
    half-written version; ``descriptor_text`` writes a descriptor verbatim.
    """
    created = created or NOW - timedelta(days=30)
    path = root / kind / name / version
    path.mkdir(parents=True, mode=0o700)
    (path / "weights.bin").write_bytes(b"w" * size)
    if descriptor_text is not None:
        data = descriptor_text.encode() if isinstance(descriptor_text, str) else descriptor_text
        (path / ("model.yaml" if kind == "models" else "bento.yaml")).write_bytes(data)
    elif descriptor:
        template = MODEL_YAML if kind == "models" else BENTO_YAML
        text = template.format(
            name=name,
            version=version,
            labels=_labels(labels or {}),
            creation_time=created.isoformat(),
        )
        (path / ("model.yaml" if kind == "models" else "bento.yaml")).write_text(text)
    if changed is not None:
        stamp = changed.timestamp()
        for item in [path, *path.rglob("*")]:
            os.utime(item, (stamp, stamp), follow_symlinks=False)
    if set_latest:
        point_latest(root, name, version, kind=kind)
    return path


def point_latest(root: Path, name: str, version: str, *, kind: str = "models") -> Path:
    """Write ``latest`` as BentoML does: a plain file holding the version, no newline."""
    pointer = root / kind / name / "latest"
    pointer.write_text(version)
    pointer.chmod(0o644)
    return pointer


def read_latest(root: Path, name: str, *, kind: str = "models") -> str | None:
    """Return the version ``latest`` names (file or symlink), or None if there is none."""
    pointer = root / kind / name / "latest"
    if pointer.is_symlink():
        return os.readlink(pointer)
    if pointer.exists():
        return pointer.read_text().strip()
    return None


def make_series(
    root: Path,
    name: str,
    count: int,
    *,
    kind: str = "models",
    size: int = 4096,
    start: datetime | None = None,
    step: timedelta = timedelta(days=1),
) -> list[str]:
    """Create ``count`` versions of a name, one ``step`` apart, oldest first; point latest."""
    start = start or NOW - timedelta(days=100)
    versions = []
    for index in range(count):
        version = f"{name[:4]}v{index:04d}x"
        make_version(root, name, version, kind=kind, created=start + step * index, size=size)
        versions.append(version)
    point_latest(root, name, versions[-1], kind=kind)
    return versions


def bento_yaml(
    name: str,
    version: str,
    *,
    created: datetime,
    needs: tuple[str, ...] = (),
    top_level: tuple[str, ...] = (),
    labels: Mapping[str, str] | None = None,
) -> str:
    """Return a bento.yaml as `bentoml build` 1.4 writes it: models under ``services``.

    ``needs`` go in the service's ``models`` list (BentoML 1.2+ services),
    ``top_level`` in the top-level ``models`` list (older bentos).
    """

    def entries(tags: tuple[str, ...], indent: str) -> str:
        if not tags:
            return " []\n"
        return "\n" + "".join(
            f"{indent}- tag: {tag}\n{indent}  module: ''\n"
            f"{indent}  creation_time: '{created.isoformat()}'\n"
            for tag in tags
        )

    return (
        f"service: service:Svc\nname: {name}\nversion: {version}\nbentoml_version: 1.4.40\n"
        f"creation_time: '{created.isoformat()}'\nlabels:{_labels(labels or {})}\n"
        f"models:{entries(top_level, '')}entry_service: Svc\nservices:\n- name: Svc\n"
        f"  service: ''\n  models:{entries(needs, '  ')}  dependencies: []\n  config: {{}}\n"
        "envs: []\nargs: {}\n"
    )


def make_bento(
    root: Path,
    name: str,
    version: str,
    *,
    needs: tuple[str, ...] = (),
    created: datetime | None = None,
    size: int = 4096,
    set_latest: bool = False,
) -> Path:
    """Create a bento version that needs the model tags ``needs``; return its path."""
    created = created or NOW - timedelta(days=30)
    return make_version(
        root,
        name,
        version,
        kind="bentos",
        created=created,
        size=size,
        descriptor_text=bento_yaml(name, version, created=created, needs=needs),
        set_latest=set_latest,
    )


def backdate_arrivals(root: Path, arrivals: Mapping[tuple[str, str, str], datetime]) -> None:
    """Record, as a warden that has long watched the store would have, when versions arrived.

    A version's time in the store is when the warden first saw it (its
    directory's ctime then), which a test cannot set on a directory it has
    just made; this writes it into the census cache of the store's default
    state directory (``kind/name/version`` -> the directory's stamp now and
    the seconds), which the census reads while the directory keeps that stamp.
    """
    from storewarden.cache import FILE_NAME, FORMAT  # noqa: PLC0415 - tests only
    from storewarden.prune import STATE_MARKER  # noqa: PLC0415

    state = root / ".storewarden"
    state.mkdir(exist_ok=True)
    (state / STATE_MARKER).touch()
    data = {
        "format": FORMAT,
        "root": os.path.realpath(root),
        "entries": {},
        "arrivals": {
            f"{kind}/{name}/{version}": [*_stamp(root / kind / name / version), moment.timestamp()]
            for (kind, name, version), moment in arrivals.items()
        },
    }
    (state / FILE_NAME).write_text(json.dumps(data))


def _stamp(path: Path) -> list[int]:
    info = os.stat(path)
    return [info.st_ino, info.st_mtime_ns, info.st_ctime_ns]

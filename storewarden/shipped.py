"""The files storewarden ships beside its code: the systemd units, the metrics
drop-in, the sample config and the Prometheus rules.

``systemd/`` and ``config/`` in the repository are their single source. A
wheel carries them as ``storewarden/data/`` (pyproject.toml maps the two
directories into the package when it is built); a checkout or an editable
install reads them where they are. :func:`render` fills in the operator's
user, group, store and executable; with the files' own defaults it returns
each file byte for byte. ``storewarden print`` and ``storewarden
install-files`` are its commands.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from storewarden import durable

# Each shipped file by the name the commands take, and its path under systemd/ or config/.
FILES = {
    "unit": PurePosixPath("systemd/storewarden.service"),
    "template-unit": PurePosixPath("systemd/storewarden@.service"),
    "metrics-drop-in": PurePosixPath("systemd/storewarden.service.d/metrics-port.conf"),
    "config": PurePosixPath("config/storewarden.yaml"),
    "rules": PurePosixPath("config/prometheus/storewarden.rules.yml"),
    "rules-test": PurePosixPath("config/prometheus/storewarden.rules.test.yml"),
}
UNITS = ("unit", "template-unit")
# Where install-files puts each file under its destination root.
SYSTEM_UNITS = PurePosixPath("etc/systemd/system")
INSTALLED = {
    "unit": (SYSTEM_UNITS / "storewarden.service",),
    "template-unit": (SYSTEM_UNITS / "storewarden@.service",),
    "config": (PurePosixPath("etc/storewarden/storewarden.yaml"),),
    "metrics-drop-in": (
        SYSTEM_UNITS / "storewarden.service.d/metrics-port.conf",
        SYSTEM_UNITS / "storewarden@.service.d/metrics-port.conf",
    ),
}

# What the shipped files say, and render replaces.
DEFAULT_USER = "bentoml"
DEFAULT_STORE = PurePosixPath("/home/bentoml/bentoml")
DEFAULT_EXECUTABLE = PurePosixPath("/usr/local/bin/storewarden")

# A name useradd accepts (Debian's default NAME_REGEX, with a trailing $ for machine accounts).
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?")
# Paths are written into unit files unquoted: no spaces, no % (specifiers), no $ (variables).
UNIT_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")
# ProtectHome=tmpfs hides these from the service: an executable there cannot start.
HIDDEN_BY_SANDBOX = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))


class ShippedFilesError(Exception):
    """A shipped file cannot be found, rendered or installed as asked."""


@dataclass(frozen=True)
class Placement:
    """Who runs the warden, on which store, with which executable."""

    user: str = DEFAULT_USER
    group: str = DEFAULT_USER
    store: PurePosixPath = DEFAULT_STORE
    executable: PurePosixPath = DEFAULT_EXECUTABLE

    def __post_init__(self) -> None:
        for what, name in (("user", self.user), ("group", self.group)):
            if not USER_NAME.fullmatch(name):
                raise ShippedFilesError(f"{what} {name!r} is not a valid user or group name")
        for what, path in (("store", self.store), ("executable", self.executable)):
            if not UNIT_PATH.fullmatch(str(path)) or ".." in path.parts:
                raise ShippedFilesError(
                    f"{what} {str(path)!r} must be an absolute path of letters, digits and ._/@+-"
                )
        if self.store == PurePosixPath("/"):
            raise ShippedFilesError("the store cannot be /")
        if any(self.executable.is_relative_to(hidden) for hidden in HIDDEN_BY_SANDBOX):
            raise ShippedFilesError(
                f"executable {self.executable} is under /home, /root or /run/user, which the "
                "unit's sandbox hides (ProtectHome=tmpfs): install storewarden elsewhere, "
                "e.g. in /opt/storewarden"
            )


def this_executable() -> PurePosixPath:
    """Return this installation's ``storewarden`` command (next to its Python), or
    /usr/local/bin/storewarden when there is none (running from a checkout)."""
    beside = Path(sys.executable).parent / "storewarden"
    return PurePosixPath(beside) if beside.is_file() else DEFAULT_EXECUTABLE


def data_directory() -> Path:
    """Return the directory holding ``systemd/`` and ``config/``: the package's data
    when installed from a wheel, else the checkout the package is imported from.

    Raise ShippedFilesError if neither has them.
    """
    package = Path(__file__).resolve().parent
    for directory in (package / "data", package.parent):
        if (directory / FILES["unit"]).is_file():
            return directory
    raise ShippedFilesError(
        f"the shipped files are missing: neither {package / 'data'} nor a checkout "
        f"around {package} holds {FILES['unit']}"
    )


def source(name: str) -> Path:
    """Return the path of the shipped file called ``name`` (a key of FILES)."""
    return data_directory() / FILES[name]


def _replace(text: str, old: str, new: str, name: str) -> str:
    """Return ``text`` with every ``old`` made ``new``; raise ShippedFilesError if it has none,
    since the file has changed under the renderer and would silently keep a default."""
    if old not in text:
        raise ShippedFilesError(f"the shipped {name} no longer contains {old!r}")
    return text.replace(old, new)


def render(name: str, placement: Placement) -> str:
    """Given a shipped file's name and a placement, return its text with the placement's
    user, group, store and executable in place of the defaults."""
    text = source(name).read_text(encoding="utf-8")
    store = str(placement.store)
    if name in UNITS:
        for old, new in (
            (f"={DEFAULT_EXECUTABLE} ", f"={placement.executable} "),
            (
                f"-o {DEFAULT_USER} -g {DEFAULT_USER} ",
                f"-o {placement.user} -g {placement.group} ",
            ),
            (f"\nUser={DEFAULT_USER}\n", f"\nUser={placement.user}\n"),
            (f"\nGroup={DEFAULT_USER}\n", f"\nGroup={placement.group}\n"),
        ):
            text = _replace(text, old, new, name)
    if name in ("unit", "config"):
        text = _replace(text, str(DEFAULT_STORE), store, name)
    if name == "template-unit":
        # Each instance's store is a sibling of the given one, named by the instance.
        text = _replace(text, f"{DEFAULT_STORE.parent}/%i", f"{placement.store.parent}/%i", name)
    return text


@dataclass(frozen=True)
class Written:
    """One file install-files handled: where, and whether it was new, replaced or the same."""

    path: Path
    outcome: str  # "wrote", "replaced" or "unchanged"


def install(
    destination: Path, placement: Placement, names: Iterable[str], *, force: bool = False
) -> list[Written]:
    """Write the named files (keys of INSTALLED), rendered for ``placement``, at their
    system paths under ``destination``; return what happened to each.

    A file already there with other content is replaced only with ``force``;
    otherwise raise ShippedFilesError naming every such file, before writing
    anything. Each file is replaced atomically, mode 0644.
    """
    planned = [
        (destination / relative, render(name, placement).encode())
        for name in names
        for relative in INSTALLED[name]
    ]
    differing = [path for path, data in planned if path.exists() and path.read_bytes() != data]
    if differing and not force:
        listed = ", ".join(str(path) for path in differing)
        raise ShippedFilesError(f"{listed}: already there with other content (--force replaces)")
    written = []
    for path, data in planned:
        if path.exists() and path.read_bytes() == data:
            written.append(Written(path, "unchanged"))
            continue
        outcome = "replaced" if path.exists() else "wrote"
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        durable.replace_file(path, data, 0o644)
        written.append(Written(path, outcome))
    return written

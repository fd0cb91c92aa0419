"""Pins made from the command line: ``storewarden pin``, ``unpin``, ``pins``.

They live in one small JSON file in the warden's state directory
(``<state>/pins.json``, never under ``models/`` or ``bentos/``). Every change
re-reads the file and replaces it atomically (a temporary file in the same
directory, fsync, rename, fsync of the directory) under an ``flock`` on
``<state>/pins.lock``, so two pin commands at once never lose each other's
pin. Readers (a prune, the daemon's next check) take no lock: a rename is
seen whole or not at all.

A file that cannot be read or parsed raises :class:`PinsError`. The pin
commands report it and exit 1; a prune must not go on without knowing its
pins, so :func:`pin_reader` fails safe and reports every version pinned.
The pin commands therefore never write a file the warden would refuse to
read: a reason is at most :data:`MAX_REASON_LENGTH` characters, and a pin
that would take the file past :data:`MAX_PINS_BYTES` is refused. A file
over that limit (written by hand, or by a release before these bounds) can
still be shrunk by ``unpin``, which reads up to :data:`MAX_REPAIR_BYTES`.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storewarden import durable
from storewarden.logs import get_logger
from storewarden.store import Kind
from storewarden.tags import check_pin_glob

PINS_FILE = "pins.json"
LOCK_FILE = "pins.lock"
FORMAT_VERSION = 1
# Pins are a handful of lines; a file far larger is not one the warden wrote.
MAX_PINS_BYTES = 4 * 1024 * 1024
# What ``unpin`` still reads, so a file over MAX_PINS_BYTES can be shrunk below it.
MAX_REPAIR_BYTES = 64 * 1024 * 1024
# A pin's reason is a line for whoever reads `storewarden pins`, not a document.
MAX_REASON_LENGTH = 1000
# Who pinned: a login name, or "caller (sudo as user)"; SUDO_USER may say anything.
MAX_WHO_LENGTH = 200
# Every version matches this glob: what a prune assumes while the pins are unknown.
EVERYTHING = "*:*"


class PinsError(Exception):
    """The pins file cannot be read or is not one the warden wrote."""


class InvalidPinError(Exception):
    """One entry of the pins file is not a valid pin."""


def check_tag(tag: str) -> str:
    """Return ``tag`` if it is a pin glob (``name:version``, ``name:*``, ``name:latest``).

    Raise ValueError otherwise. ``name:latest`` is resolved by the ``pin``
    command to the version ``latest`` names now.
    """
    name, _colon, version = tag.partition(":")
    if version == "latest":
        check_pin_glob(f"{name}:*")
        return tag
    return check_pin_glob(tag)


def check_reason(reason: str) -> str:
    """Return ``reason`` if it is at most :data:`MAX_REASON_LENGTH` characters; raise ValueError."""
    if len(reason) > MAX_REASON_LENGTH:
        raise ValueError(
            f"--reason is {len(reason)} characters; at most {MAX_REASON_LENGTH} characters"
            " (a line for whoever reads `storewarden pins`)"
        )
    return reason


def current_user() -> str:
    """Return who runs this command: the login name, and the sudo caller when there is one.

    At most :data:`MAX_WHO_LENGTH` characters: the names come from the
    environment (``USER``, ``SUDO_USER``), which may hold anything.
    """
    try:
        user = getpass.getuser()
    except OSError:  # no USER/LOGNAME and no passwd entry (a container's arbitrary uid)
        user = str(os.getuid())
    caller = os.environ.get("SUDO_USER")
    who = f"{caller} (sudo as {user})" if caller and caller != user else user
    return who if len(who) <= MAX_WHO_LENGTH else who[: MAX_WHO_LENGTH - 1] + "…"


@dataclass(frozen=True)
class Pin:
    """One pin: a tag glob, optionally of one kind, who made it when, until when, and why."""

    tag: str
    kind: Kind | None
    who: str
    when: datetime
    until: datetime | None = None
    reason: str = ""

    def expired(self, now: datetime) -> bool:
        """Return whether the pin has stopped protecting at ``now``."""
        return self.until is not None and now >= self.until

    def glob(self) -> str:
        """Return the glob the planner matches: ``name:version``, or ``kind/name:version``."""
        return f"{self.kind}/{self.tag}" if self.kind else self.tag

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """Return the pin as plain data; with ``now``, also whether it has expired."""
        data: dict[str, Any] = {
            "tag": self.tag,
            "kind": self.kind,
            "who": self.who,
            "when": self.when.isoformat(),
            "until": self.until.isoformat() if self.until else None,
            "reason": self.reason,
        }
        if now is not None:
            data["expired"] = self.expired(now)
        return data

    @classmethod
    def from_dict(cls, data: object) -> Pin:
        """Return the pin ``data`` describes; raise InvalidPinError if it is not a valid one."""
        if not isinstance(data, dict):
            raise InvalidPinError(f"a pin must be an object, got {type(data).__name__}")
        tag, kind, who = data.get("tag"), data.get("kind"), data.get("who")
        reason = data.get("reason", "")
        if not isinstance(tag, str):
            raise InvalidPinError("a pin lacks its tag")
        try:
            check_tag(tag)
        except ValueError as error:
            raise InvalidPinError(str(error)) from None
        if kind not in (None, "models", "bentos"):
            raise InvalidPinError(f"pin {tag}: kind must be models, bentos or null, got {kind!r}")
        if not isinstance(who, str) or not isinstance(reason, str):
            raise InvalidPinError(f"pin {tag}: who and reason must be text")
        return cls(
            tag=tag,
            kind="models" if kind == "models" else "bentos" if kind == "bentos" else None,
            who=who,
            when=_moment(data.get("when"), tag, "when"),
            until=None if data.get("until") is None else _moment(data["until"], tag, "until"),
            reason=reason,
        )


def _moment(value: object, tag: str, field: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidPinError(f"pin {tag}: {field} must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidPinError(f"pin {tag}: {field} is not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise InvalidPinError(f"pin {tag}: {field} has no time zone: {value!r}")
    return moment.astimezone(UTC)


class PinBoard:
    """The pins file of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / PINS_FILE
        self.lock_path = state_dir / LOCK_FILE

    def load(self, limit: int = MAX_PINS_BYTES) -> tuple[Pin, ...]:
        """Return every pin, expired ones included; none when there is no file.

        Raise PinsError if the file cannot be read, is larger than ``limit``
        bytes or is not a pins file; the message says how to get out of it.
        """
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(limit + 1)
        except FileNotFoundError:
            return ()
        except OSError as error:
            raise PinsError(f"cannot read {self.path}: {error.strerror or error}") from None
        start_over = f"`rm {self.path}` drops every pin"
        if len(raw) > limit:
            remedy = (
                f"`storewarden unpin TAG` or `unpin --expired` still removes pins from it"
                f" (up to {MAX_REPAIR_BYTES} bytes), or {start_over}"
                if limit < MAX_REPAIR_BYTES
                else start_over
            )
            raise PinsError(f"{self.path} is larger than {limit} bytes; {remedy}")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PinsError(f"{self.path} is corrupt: not JSON ({error}); {start_over}") from None
        if not isinstance(data, dict) or not isinstance(data.get("pins"), list):
            raise PinsError(
                f"{self.path} is corrupt: expected an object with a 'pins' list; {start_over}"
            )
        if data.get("version") != FORMAT_VERSION:
            raise PinsError(
                f"{self.path} has format version {data.get('version')!r}; "
                f"this storewarden reads version {FORMAT_VERSION}"
            )
        try:
            return tuple(Pin.from_dict(item) for item in data["pins"])
        except InvalidPinError as error:
            raise PinsError(f"{self.path} is corrupt: {error}; {start_over}") from None

    def globs(self, now: datetime) -> tuple[str, ...]:
        """Return the globs of the pins still in force at ``now``; raise PinsError."""
        return tuple(pin.glob() for pin in self.load() if not pin.expired(now))

    def add(self, pin: Pin) -> Pin | None:
        """Add ``pin``, replacing one of the same tag and kind; return the one replaced.

        Raise PinsError (nothing written) if the file would then be larger
        than :data:`MAX_PINS_BYTES`: every prune would treat every version
        as pinned.
        """
        with self._locked():
            pins = list(self.load())
            replaced = next(
                (old for old in pins if (old.tag, old.kind) == (pin.tag, pin.kind)), None
            )
            pins = [old for old in pins if old is not replaced]
            pins.append(pin)
            data = _document(pins)
            if len(data) > MAX_PINS_BYTES:
                raise PinsError(
                    f"pinning {pin.glob()} would make {self.path} {len(data)} bytes, more than"
                    f" the {MAX_PINS_BYTES} the warden reads; nothing was written. Remove pins"
                    " first (`storewarden unpin --expired`, `storewarden unpin TAG`)"
                )
            durable.replace_file(self.path, data, 0o644)
        return replaced

    def remove(
        self, tag: str | None, kind: Kind | None = None, *, expired_at: datetime | None = None
    ) -> list[Pin]:
        """Remove the pins of ``tag`` (of ``kind`` only, if given) and return them.

        With ``expired_at`` (and no tag), remove every pin expired at that time.
        A file over :data:`MAX_PINS_BYTES` is read too, up to
        :data:`MAX_REPAIR_BYTES`, so that removing pins can bring it back
        under the limit (:meth:`size_problem` says whether it is).
        """
        with self._locked():
            pins = list(self.load(limit=MAX_REPAIR_BYTES))
            gone = [
                pin
                for pin in pins
                if (tag is not None and pin.tag == tag and kind in (None, pin.kind))
                or (tag is None and expired_at is not None and pin.expired(expired_at))
            ]
            if gone:
                self._write([pin for pin in pins if pin not in gone])
        return gone

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def _write(self, pins: Sequence[Pin]) -> None:
        """Replace the file atomically: a crash leaves the old file or the new, never half."""
        durable.replace_file(self.path, _document(pins), 0o644)

    def size_problem(self) -> str | None:
        """Return why the file is still too large for a prune to read, or None if it is not."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return None
        if size <= MAX_PINS_BYTES:
            return None
        return (
            f"{self.path} is still larger than {MAX_PINS_BYTES} bytes ({size}): every version"
            " counts as pinned until more pins are removed"
        )


def _document(pins: Sequence[Pin]) -> bytes:
    """Return the pins file holding ``pins``."""
    document = {"version": FORMAT_VERSION, "pins": [pin.as_dict() for pin in pins]}
    return (json.dumps(document, indent=2) + "\n").encode()


class PinReader:
    """The pin globs in force, read afresh on every call (``storewarden pin`` holds
    from the daemon's next check), and whether the last read failed.

    A pins file that cannot be read logs ``pins_unreadable`` and pins
    everything: never prune while the pins are unknown. ``unreadable`` says
    so until a read succeeds again (the ``storewarden_pins_unreadable``
    metric).
    """

    def __init__(self, state_dir: Path, clock: Callable[[], datetime]) -> None:
        self.board = PinBoard(state_dir)
        self.clock = clock
        self.unreadable = False

    def __call__(self) -> tuple[str, ...]:
        """Return the globs of the pins in force now, or every version if they are unknown."""
        try:
            globs = self.board.globs(self.clock())
        except PinsError as error:
            self.unreadable = True
            get_logger().error(
                "pins_unreadable", path=str(self.board.path), error=str(error), assumed=EVERYTHING
            )
            return (EVERYTHING,)
        self.unreadable = False
        return globs


def pin_reader(state_dir: Path, clock: Callable[[], datetime]) -> PinReader:
    """Return a reader of the pins of ``state_dir`` (see :class:`PinReader`)."""
    return PinReader(state_dir, clock)

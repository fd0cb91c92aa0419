"""Structured audit log: structlog configured once, JSON lines by default.

Every line carries ``event``, ``timestamp`` (ISO 8601 UTC), ``level`` and
``store``. :data:`EVENTS` is the schema (each event's required fields); it is
documented in docs/audit-log.md and, with ``strict=True`` (the tests), every
emitted event is held to it.

``log.file`` is appended to only where that is safe (:func:`check_log_file`):
never through a symlink at its path (the warden often runs as root: it
would append to whatever the link names), only to a regular file, and
never inside the store's ``models/`` or ``bentos/`` or the state
directory's ``trash/`` or ``tmp/``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import sys
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import IO, Any, TextIO

from storewarden.paths import Danger, forbidden_place, state_directory

if "rich" in sys.modules:
    import structlog
else:
    # structlog.dev and structlog.tracebacks import rich when it is installed,
    # for pretty tracebacks the audit log never prints (JSON lines, or plain
    # console lines): a third of every command's start-up. A None entry in
    # sys.modules makes their ``import rich`` fail as if it were absent, for
    # this import only; rich still loads normally later, on a terminal.
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        del sys.modules["rich"]

_VERSION = frozenset({"kind", "name", "version", "path", "bytes", "creation_time", "reason"})
_REMOVAL = _VERSION | {"run_id", "used_percent_before", "used_percent_after"}

EVENTS: Mapping[str, frozenset[str]] = {
    # one prune cycle
    "prune_started": frozenset({"run_id", "triggers", "usage", "target", "dry_run", "planned"}),
    "version_removed": _REMOVAL,
    "would_remove": _REMOVAL,
    "removal_skipped": frozenset({"run_id", "kind", "name", "version", "reasons"}),
    "removal_failed": frozenset({"run_id", "kind", "name", "version", "error"}),
    "version_quarantined": frozenset({"run_id", "kind", "name", "version", "until", "error"}),
    "prune_finished": frozenset(
        {
            "run_id",
            "removed",
            "bytes_freed",
            "used_percent_after",
            "shortfall_bytes",
            "target_reached",
            "seconds",
            "dry_run",
        }
    ),
    "prune_skipped": frozenset({"reason"}),
    # pointers
    "latest_changed": frozenset({"kind", "name", "old", "new", "reason"}),
    "latest_removed": frozenset({"kind", "name", "old", "reason"}),
    "pointer_repaired": frozenset({"kind", "name", "old", "new", "problem"}),
    "pointer_repair_failed": frozenset({"kind", "name", "error"}),
    "pointer_repair_deferred": frozenset({"kind", "name", "problem", "reason"}),
    # recovery of interrupted work
    "trash_emptied": frozenset({"entries", "bytes"}),
    "tmp_emptied": frozenset({"entries", "bytes"}),
    "trash_not_emptied": frozenset({"path", "error"}),
    "removal_rolled_back": frozenset({"kind", "name", "version"}),
    "name_removed": frozenset({"kind", "name"}),
    # pins made from the command line (storewarden pin / unpin)
    "pin_added": frozenset({"tag", "kind", "who", "until", "reason"}),
    "pin_removed": frozenset({"tag", "kind", "who"}),
    "pins_unreadable": frozenset({"path", "error"}),
    # archive before delete, and restore
    "archive_written": frozenset({"kind", "name", "version", "path", "bytes"}),
    "archive_removed": frozenset({"path", "bytes", "reason"}),
    "archive_dir_created": frozenset({"path"}),
    "archive_failed": frozenset({"run_id", "kind", "name", "version", "error"}),
    "version_restored": frozenset({"kind", "name", "version", "path", "bytes", "archive"}),
    # bentos and the models they need (protect.bento_references)
    "references_unknown": frozenset(
        {"run_id", "bento", "path", "reason", "blocked_versions", "blocked_bytes"}
    ),
    "bento_reference_invalid": frozenset({"bento", "path", "problem"}),
    "bento_reference_missing": frozenset({"bento", "path", "models", "missing"}),
    "bentos_broken": frozenset({"run_id", "model", "bentos", "message"}),
    # the census
    "store_problem": frozenset({"path", "problem"}),
    "in_use_scan": frozenset({"processes", "uninspectable", "versions_in_use"}),
    # the daemon
    "daemon_started": frozenset({"pid", "config", "version"}),
    "daemon_ready": frozenset({"versions", "store_bytes", "seconds"}),
    "daemon_stopped": frozenset({"signal"}),
    "store_missing": frozenset({"path"}),
    "store_appeared": frozenset({"path"}),
    "version_added": frozenset({"kind", "name", "version", "bytes"}),
    "version_gone": frozenset({"kind", "name", "version"}),
    "check": frozenset({"usage", "triggers"}),
    "check_failed": frozenset({"error"}),
    "reconcile_finished": frozenset({"added", "gone", "changed", "seconds"}),
    "config_reloaded": frozenset({"config"}),
    "config_rejected": frozenset({"config", "problems"}),
    "observer_degraded": frozenset({"observer", "error"}),
    # the usage history and the fill forecast
    "history_unreadable": frozenset({"path", "error", "moved_to"}),
    "history_failed": frozenset({"path", "error"}),
    "forecast_warning": frozenset({"eta", "seconds", "horizon_seconds", "rate_bytes_per_day"}),
    "watch_failed": frozenset({"path", "error", "failures"}),
    # metrics (metrics.port, metrics.textfile)
    "metrics_listening": frozenset({"address", "port"}),
    "metrics_failed": frozenset({"target", "error"}),
}
COMMON = frozenset({"event", "timestamp", "level", "store"})

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


class SchemaError(Exception):
    """An event that is not in :data:`EVENTS` or lacks a required field."""


def check_event(event: Mapping[str, Any]) -> None:
    """Raise SchemaError unless ``event`` is a known event with every required field."""
    name = event.get("event")
    if name not in EVENTS:
        raise SchemaError(f"unknown event {name!r}")
    missing = (EVENTS[str(name)] | COMMON) - set(event)
    if missing:
        raise SchemaError(f"event {name!r} lacks {sorted(missing)}")


class LineWriter:
    """A structlog logger that writes each rendered line to several streams, whole."""

    def __init__(self, streams: list[IO[str]]) -> None:
        self._streams = streams
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        """Write one line to every stream and flush (a crash must not lose it)."""
        with self._lock:
            for stream in self._streams:
                try:
                    stream.write(message + "\n")
                    stream.flush()
                except (OSError, ValueError):
                    continue  # a closed pipe must not stop a prune half-way

    debug = info = warning = warn = error = critical = exception = msg


_state: dict[str, Any] = {"file": None}
# A new log file: the warden's user writes, its group (a log shipper) reads; umask narrows.
LOG_FILE_MODE = 0o640


class LogFileError(Exception):
    """``log.file`` cannot be used: where the warden must not write, a symlink, not a file."""


def check_log_file(path: Path, *, store: Path, state_dir: Path | None = None) -> None:
    """Raise LogFileError unless ``path`` may be the audit log; create nothing.

    It may not lie (links resolved) in the store's ``models/`` or
    ``bentos/`` (BentoML rejects the whole store for an entry there that is
    not a tag), nor in the trash or tmp of the state directory (``state_dir``
    as configured, default ``<store>/.storewarden``), which the warden
    empties. If it exists it must be a regular file, not a symlink.
    """
    forbidden = forbidden_place(path, store, state_directory(store, state_dir))
    if forbidden is not None:
        if forbidden.danger is Danger.KIND_DIRECTORY:
            raise LogFileError(
                f"log.file {path} is inside {forbidden.directory}; BentoML would break (it"
                " rejects a store with anything there that is not a tag). Put the log"
                " outside models/ and bentos/"
            )
        where = (
            "the state directory"
            if forbidden.danger is Danger.STATE_DIRECTORY
            else f"inside {forbidden.directory}"
        )
        raise LogFileError(
            f"log.file {path} is {where}; the warden empties its trash and tmp there."
            " Put the log elsewhere"
        )
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as error:
        raise LogFileError(f"log.file {path}: {error.strerror or error}") from None
    _check_log_mode(path, info.st_mode)


def _check_log_mode(path: Path, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise LogFileError(
            f"log.file {path} is a symlink; the warden never appends through one (it would"
            " write wherever the link points). Name the file itself"
        )
    if not stat.S_ISREG(mode):
        raise LogFileError(f"log.file {path} is not a regular file")


def open_log_file(path: Path) -> IO[str]:
    """Open ``path`` to append to, creating it (mode 0640) and its missing parents.

    The last component is never followed (``O_NOFOLLOW``) and must turn out
    a regular file (a FIFO is not waited on). Raise LogFileError with one
    clear line if it cannot be opened so.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(
            path,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            LOG_FILE_MODE,
        )
    except OSError as error:
        if error.errno == errno.ELOOP:
            _check_log_mode(path, stat.S_IFLNK)
        raise LogFileError(f"log.file {path}: cannot open it: {error.strerror or error}") from None
    try:
        _check_log_mode(path, os.fstat(descriptor).st_mode)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "a", encoding="utf-8")


def _json_default(value: object) -> str:
    return str(value)


def configure(
    *,
    store: Path | str,
    level: str = "info",
    log_format: str = "json",
    file: Path | None = None,
    state_dir: Path | None = None,
    stream: TextIO | None = None,
    strict: bool = False,
) -> None:
    """Configure structlog for the process; call again to reconfigure (SIGHUP).

    Lines go to ``stream`` (stdout by default) and, when ``file`` is set,
    are appended to that file too (``state_dir``: the configured one, for
    :func:`check_log_file`). ``strict`` holds every event to the schema and
    raises SchemaError on a violation (for tests). Raise LogFileError, with
    the configuration as it was (the previous file still open), if ``file``
    cannot be used; nothing is created then.
    """
    store_text = str(store)

    def add_store(
        _logger: object, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event.setdefault("store", store_text)
        return event

    def validate(
        _logger: object, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        check_event(event)
        return event

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_store,
    ]
    if strict:
        processors.append(validate)
    if log_format == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    else:
        processors.append(
            structlog.processors.JSONRenderer(serializer=json.dumps, default=_json_default)
        )
    handle: IO[str] | None = None
    if file is not None:
        check_log_file(file, store=Path(store), state_dir=state_dir)
        handle = open_log_file(file)
    previous = _state["file"]
    if previous is not None:
        previous.close()
    _state["file"] = handle
    streams: list[IO[str]] = [stream if stream is not None else sys.stdout]
    if handle is not None:
        streams.append(handle)
    writer = LineWriter(streams)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=False,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    """Return the process's structlog logger."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
    return logger

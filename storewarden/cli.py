"""Command line: thin wrappers that turn errors into one clear line and an exit code.

Exit codes: 0 done; 1 the store or a tag is wrong, a removal failed, the
pins file is unreadable, or an archive cannot be restored; 2 invalid
configuration or usage; 3 another warden holds the store; 4 a delete was
refused (pinned, in use, or still being written).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar, cast

import click

from storewarden import __version__

if TYPE_CHECKING:
    from storewarden.config import Config
    from storewarden.engine import CycleResult, Engine
    from storewarden.pins import Pin, PinBoard
    from storewarden.shipped import Placement
    from storewarden.store import Kind, Snapshot
    from storewarden.terminal import ProgressBar

# Start-up is paid by every command a person types, so this module imports
# only click at the top: each command imports what it uses when it runs, and
# rich only when its output is a terminal (tests/unit/test_startup.py keeps
# --version, --help and status off the heavy modules).

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BUSY = 3
EXIT_REFUSED = 4

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    """Print one line to stderr and exit with ``code``."""
    click.echo(f"storewarden: {message}", err=True)
    sys.exit(code)


def common_options(function: F) -> F:
    """Add ``--config`` and ``--store`` to a command."""
    function = click.option(
        "--store",
        "store",
        type=click.Path(path_type=Path, file_okay=False),
        help="Store root (overrides the config; default $BENTOML_HOME or ~/bentoml).",
    )(function)
    function = click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        help="YAML config file (default: the embedded defaults).",
    )(function)
    return function


def json_option(function: F) -> F:
    """Add ``--json`` (print the command's data for machines)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(
        function
    )


def wait_option(function: F) -> F:
    """Add ``--wait`` (seconds to wait for another warden's lock)."""
    return click.option(
        "--wait",
        type=float,
        default=30.0,
        show_default=True,
        help="Seconds to wait for another warden's lock.",
    )(function)


def kind_option(help_text: str = "Only this kind.") -> Callable[[F], F]:
    """Add ``--kind models|bentos``."""

    def decorate(function: F) -> F:
        return click.option("--kind", type=click.Choice(["models", "bentos"]), help=help_text)(
            function
        )

    return decorate


def quiet_when_stdout_closes(function: F) -> F:
    """Let a closed stdout (``storewarden plan | head -1``) end the command as ``cat`` ends.

    The default SIGPIPE action kills the process quietly, and the shell sees
    the status a Unix tool gives (141). For read-only commands only: a prune
    killed half-way through would leave work for recovery, so those keep
    Python's default and their audit lines are dropped instead.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        return function(*args, **kwargs)

    return cast(F, wrapper)


def is_terminal(stream: TextIO) -> bool:
    """Return whether ``stream`` is a terminal (False for a closed or detached stream)."""
    try:
        return stream.isatty()
    except (ValueError, AttributeError):
        return False


def progress_bar() -> ProgressBar | None:
    """Return a progress bar on stderr when stderr is a terminal, else None (rich unloaded)."""
    if not is_terminal(sys.stderr):
        return None
    from rich.console import Console

    from storewarden.terminal import ProgressBar

    return ProgressBar(Console(stderr=True), audit_on_terminal=is_terminal(sys.stdout))


def load(config_path: Path | None, store: Path | None) -> Config:
    """Return the config or exit 2 listing every problem."""
    from storewarden.config import ConfigError, load_config

    try:
        return load_config(config_path, store=store)
    except ConfigError as error:
        click.echo(f"storewarden: {error}", err=True)
        sys.exit(EXIT_CONFIG)


def configure_logging(config: Config, *, to_stderr: bool, stream: TextIO | None = None) -> None:
    """Configure the audit log: stdout for commands whose output is the trail, else stderr.

    Raise LogFileError (the logging as it was) if log.file cannot be used.
    """
    from storewarden import logs

    logs.configure(
        store=config.store,
        level=config.log.level,
        log_format=config.log.format,
        file=config.log.file,
        state_dir=config.state_dir,
        stream=stream or (sys.stderr if to_stderr else sys.stdout),
    )


def setup_logging(config: Config, *, to_stderr: bool, stream: TextIO | None = None) -> None:
    """Configure the audit log as :func:`configure_logging`; exit 2 if log.file cannot be used."""
    from storewarden.logs import LogFileError

    try:
        configure_logging(config, to_stderr=to_stderr, stream=stream)
    except LogFileError as error:
        fail(str(error), EXIT_CONFIG)


def _exit_code(error: Exception) -> int | None:
    """Return the documented exit code of an error the engine raises, or None to let it rise.

    The error classes are imported here, when one is being handled: their
    modules are loaded already by then, and a command that fails on nothing
    pays nothing.
    """
    from storewarden.archive import RestoreError, UnsafeArchiveDirError
    from storewarden.engine import (
        AmbiguousTagError,
        PreflightError,
        RefusedError,
        UnknownTagError,
    )
    from storewarden.layout import LayoutError
    from storewarden.logs import LogFileError
    from storewarden.pins import PinsError
    from storewarden.prune import StoreBusyError, UnsafeStateDirError

    codes: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int], ...] = (
        (StoreBusyError, EXIT_BUSY),
        (RefusedError, EXIT_REFUSED),
        (UnknownTagError, EXIT_ERROR),
        (
            (
                UnsafeStateDirError,
                UnsafeArchiveDirError,
                AmbiguousTagError,
                PreflightError,
                LayoutError,
                LogFileError,
            ),
            EXIT_CONFIG,
        ),
        ((PinsError, RestoreError, OSError), EXIT_ERROR),
    )
    for kinds, code in codes:
        if isinstance(error, kinds):
            return code
    return None


def handle_errors(function: F) -> F:
    """Turn the engine's errors into one line and the documented exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:
            code = _exit_code(error)
            if code is None:
                raise
            if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
                fail(f"{error.filename or ''}: {error.strerror or error}", code)
            fail(str(error), code)
        return None

    return cast(F, wrapper)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="storewarden")
def main() -> None:
    """Keep a BentoML model store from filling the disk.

    \b
    Examples:
      storewarden status                 # what is in the store, what is protected
      storewarden plan                   # what a prune would remove now, and why
      storewarden why iris:abc123        # why it is still here (or how it went)
      storewarden prune --dry-run        # log the plan as would_remove events
      storewarden prune                  # one prune cycle now
      storewarden delete iris:abc123     # delete one version, pointer kept valid
      storewarden pin iris:abc123 --until 7d --reason "release candidate"
      storewarden pins                   # who pinned what, until when
      storewarden restore /var/lib/storewarden/archive/iris+abc123.bentomodel.tar
      storewarden run                    # the daemon
      storewarden install-files --user ci --store /srv/bentoml   # units and config
    """
    # The config models want no pydantic plugin, and looking for one reads the
    # metadata of every installed distribution when the first model is built
    # (15 ms of each command's start-up beside BentoML's 92). Set before any
    # command imports the config; a value the user set is kept.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


@main.command()
@common_options
def check(config_path: Path | None, store: Path | None) -> None:
    """Validate the config and run every check the daemon makes at start and reload.

    Exit 2 if the daemon would refuse the config: invalid keys, a state
    directory that is not the warden's own, an archive.dir that cannot be
    made, a log file or textfile that cannot be written. Nothing is written.
    Warns about pins, label pairs and rules that match nothing in the store
    now. A missing store is reported but not an error: on a fresh build
    agent the daemon waits for it to appear.

    \b
    Example: storewarden check --config /etc/storewarden/storewarden.yaml
    """
    from storewarden.archive import UnsafeArchiveDirError
    from storewarden.engine import Engine, PreflightError
    from storewarden.layout import LayoutError
    from storewarden.logs import LogFileError
    from storewarden.prune import UnsafeStateDirError

    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    try:
        engine = Engine(config, read_only=True)
        warnings = engine.preflight(create=False, warn=True)
    except (
        UnsafeStateDirError,
        UnsafeArchiveDirError,
        PreflightError,
        LayoutError,
        LogFileError,
    ) as error:
        fail(str(error), EXIT_CONFIG)
    click.echo(f"config ok ({config_path or 'embedded defaults'})")
    for warning in warnings:
        click.echo(f"warning: {warning}")
    root = config.store
    if not root.exists():
        click.echo(f"store {root} does not exist yet; the daemon will wait for it")
        return
    if not root.is_dir():
        fail(f"store {root} is not a directory", EXIT_ERROR)
    click.echo(f"store {root} exists")


def _require_store(engine: Engine) -> Snapshot:
    return engine.census()


def _since_option(
    _context: click.Context, _parameter: click.Parameter, value: str | None
) -> datetime | None:
    if value is None:
        return None
    from storewarden import audit as trail

    try:
        return trail.parse_since(value, datetime.now(tz=UTC))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@main.command()
@common_options
@json_option
@click.option(
    "--history",
    "show_history",
    is_flag=True,
    help="The usage history instead: a chart on a terminal (use, store size, marks, prunes),"
    " a plain table piped, the samples with --json.",
)
@click.option(
    "--since",
    callback=_since_option,
    metavar="AGE|TIME",
    help="With --history: only samples from the last AGE (24h, 7d) or since TIME.",
)
@handle_errors
@quiet_when_stdout_closes
def status(
    config_path: Path | None,
    store: Path | None,
    as_json: bool,
    show_history: bool,
    since: datetime | None,
) -> None:
    """Show each name's versions, size, latest, what is protected and why, and the pins.

    On a terminal a usage bar comes first (protected, store, other used, free,
    the low and high marks), then the names as a table sorted by size;
    piped, plain columns with no escape codes.

    With --history, the usage history from the state directory: on a
    terminal a chart of filesystem use and store size over time, the high
    and low marks as lines and each prune marked; piped, a plain table
    (neighbouring samples merged past 40 rows); with --json, every sample.

    \b
    Example: storewarden status --json | jq '.names[] | {name, bytes}'
    Example: storewarden status --history --since 7d
    """
    from storewarden.engine import Engine

    if since is not None and not show_history:
        raise click.UsageError("--since goes with --history")
    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    engine = Engine(config, read_only=True)
    if show_history:
        _status_history(engine, as_json=as_json, start=since)
        return
    from storewarden import views

    view = engine.make_plan(_require_store(engine))
    data = views.status_data(engine, view)
    if as_json:
        click.echo(json.dumps(data))  # compact: the C encoder; pipe to jq to read
    elif is_terminal(sys.stdout):
        from rich.console import Console

        from storewarden import terminal

        console = Console()
        terminal.usage_bar(data, console)
        terminal.status_table(data, console)
    else:
        for line in views.status_lines(data):
            click.echo(line)


def _status_history(engine: Engine, *, as_json: bool, start: datetime | None) -> None:
    """Print the usage history: JSON, a chart on a terminal (plotext), or a plain table."""
    from storewarden import pictures
    from storewarden.history import HistoryError

    try:
        samples = engine.history.read()
    except (HistoryError, OSError) as error:
        fail(f"cannot read the usage history {engine.history.path}: {error}", EXIT_ERROR)
    trigger = engine.config.trigger
    high, low = trigger.high_percent, trigger.low_percent
    if as_json:
        click.echo(json.dumps(pictures.history_data(samples, high=high, low=low, start=start)))
        return
    shown = pictures.since(samples, start)
    if not shown or not is_terminal(sys.stdout):
        for line in pictures.history_lines(shown, high=high, low=low):
            click.echo(line)
        return
    import shutil

    from storewarden import chart

    columns, lines = shutil.get_terminal_size()
    click.echo(
        chart.history_chart(
            shown,
            high=high,
            low=low,
            now=engine.clock().timestamp(),
            width=columns,
            height=max(12, min(lines - 2, 30)),
            color="NO_COLOR" not in os.environ,
        )
    )


@main.command("plan")
@common_options
@json_option
@click.option("--high-percent", type=float, help="What if trigger.high_percent were this.")
@click.option("--low-percent", type=float, help="What if trigger.low_percent were this.")
@click.option("--min-free", metavar="SIZE", help="What if trigger.min_free were this (20GiB).")
@click.option(
    "--max-store-size", metavar="SIZE", help="What if trigger.max_store_size were this (500GB)."
)
@click.option("--keep-last", type=int, help="What if protect.keep_last were this.")
@handle_errors
@quiet_when_stdout_closes
def plan_command(
    config_path: Path | None,
    store: Path | None,
    as_json: bool,
    high_percent: float | None,
    low_percent: float | None,
    min_free: str | None,
    max_store_size: str | None,
    keep_last: int | None,
) -> None:
    """Show what a prune would remove now, why, and the projected usage.

    The what-if options plan with other thresholds, without touching the
    config: an operator tunes them by looking, not by guessing.

    \b
    Examples:
      storewarden plan --json | jq '.remove[] | "\\(.name):\\(.version) \\(.reason)"'
      storewarden plan --high-percent 70 --low-percent 60
    """
    from storewarden import views
    from storewarden.config import ConfigError, override
    from storewarden.engine import Engine

    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    trigger = {
        key: value
        for key, value in (
            ("high_percent", high_percent),
            ("low_percent", low_percent),
            ("min_free", min_free),
            ("max_store_size", max_store_size),
        )
        if value is not None
    }
    protect = {"keep_last": keep_last} if keep_last is not None else {}
    what_if: dict[str, object] = {**trigger, **protect}
    if what_if:
        try:
            config = override(config, "(what-if options)", trigger=trigger, protect=protect)
        except ConfigError as error:
            fail(str(error), EXIT_CONFIG)
    engine = Engine(config, read_only=True)
    view = engine.make_plan(_require_store(engine))
    data = views.plan_data(view)
    if what_if:
        data["what_if"] = {
            **{key: getattr(config.trigger, key) for key in trigger},
            **{key: getattr(config.protect, key) for key in protect},
        }
    if as_json:
        click.echo(json.dumps(data))  # compact: the C encoder; pipe to jq to read
        return
    for line in views.plan_lines(data):
        click.echo(line)


@main.command()
@common_options
@click.argument("tag")
@kind_option("The kind, when a name is both a model and a bento.")
@click.option(
    "--log",
    "logs_read",
    multiple=True,
    metavar="FILE|-",
    help="Audit trail to look in for a version no longer in the store (default: log.file).",
)
@json_option
@handle_errors
@quiet_when_stdout_closes
def why(
    config_path: Path | None,
    store: Path | None,
    tag: str,
    kind: str | None,
    logs_read: tuple[str, ...],
    as_json: bool,
) -> None:
    """Explain why a version is still in the store, or how it left it.

    For a version in the store (name:version or name:latest): every rule's
    verdict, its place in the oldest-first removal order, and the usage at
    which a prune would remove it. For one no longer there: when it went,
    why, by which run, and where latest moved, from the audit trail. Exit 1
    if the tag names nothing in the store or the trail. Read-only.

    \b
    Examples:
      storewarden why iris:dr4qngxj3c754ax4
      journalctl -u storewarden -o cat | storewarden why iris:v1 --log -
    """
    from storewarden import audit as trail
    from storewarden import views
    from storewarden.engine import Engine

    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    if ":" not in tag or not tag.partition(":")[2]:
        fail(f"give a tag as name:version or name:latest, got {tag!r}", EXIT_CONFIG)
    engine = Engine(config, read_only=True)
    found = engine.why(tag, _kind(kind))
    if found is not None:
        data = views.why_data(engine, found)
    else:
        sources = logs_read or ((str(config.log.file),) if config.log.file is not None else ())
        if not sources:
            fail(
                f"{tag} is not in the store, and there is no audit trail to look in: give"
                " --log FILE, or --log - (journalctl -u storewarden -o cat | storewarden why"
                f" {tag} --log -), or set log.file",
                EXIT_ERROR,
            )
        report = trail.summarize(_trail_lines(sources))
        name, _, version = tag.lower().partition(":")
        if version == "latest":
            version = trail.last_latest(report, kind, name) or version
        departures = trail.departures(report, kind, name, version)
        if not departures:
            fail(
                f"{tag} is not in the store and the audit trail ({', '.join(sources)}) never"
                " saw it leave",
                EXIT_ERROR,
            )
        data = views.gone_data(tag, kind, name, version, departures)
    if as_json:
        click.echo(json.dumps(data))
        return
    for line in views.why_lines(data):
        click.echo(line)


@main.command()
@common_options
@click.option("--dry-run", is_flag=True, help="Log would_remove events; delete nothing.")
@wait_option
@handle_errors
def prune(config_path: Path | None, store: Path | None, dry_run: bool, wait: float) -> None:
    """Run one prune cycle now (the daemon's cycle, once).

    Audit lines go to stdout; on a terminal, stderr shows a progress bar.

    \b
    Example (a CI clean-up step): storewarden prune --config ci.yaml
    """
    from storewarden import views
    from storewarden.engine import Engine

    config = load(config_path, store)
    bar = progress_bar()
    setup_logging(config, to_stderr=False, stream=bar.audit_stream() if bar else None)
    # A dry run writes nothing into the store, not even the census cache.
    engine = Engine(config, progress=bar, read_only=dry_run or config.dry_run)
    with bar or contextlib.nullcontext():
        result = engine.cycle(dry_run=dry_run or None, recover=True, lock_wait=wait)
    click.echo(views.summary(result), err=True)
    after_batch(engine, result, protected=sum(kept.version.bytes for kept in result.plan.kept))
    if result.failed:
        sys.exit(EXIT_ERROR)


def after_batch(engine: Engine, result: CycleResult, *, protected: int | None) -> None:
    """After a one-shot prune or delete: append a usage sample, write the metrics textfile.

    node_exporter's textfile collector is made for such batch jobs (a CI
    clean-up step, a cron prune): the same series as the daemon's.
    """
    snapshot = engine.census()
    usage = engine.usage(snapshot.store_bytes)
    if not result.dry_run:  # a dry run changes nothing, its history included
        engine.record_history(snapshot.versions, usage, protected=protected)
    textfile = engine.config.metrics.textfile
    if textfile is None:
        return
    from storewarden.metrics import Metrics, totals

    metrics = Metrics()
    metrics.configure(engine.config)
    bytes_by_kind, versions_by_kind = totals(snapshot.versions)
    quarantined = len(engine.quarantined())
    metrics.observe(
        bytes_by_kind,
        versions_by_kind,
        usage,
        result,
        quarantined=quarantined,
        pins_unreadable=engine.pins_unreadable,
    )
    metrics.publish(textfile)


@main.command()
@common_options
@click.argument("tags", nargs=-1, required=True)
@kind_option()
@click.option("--force", is_flag=True, help="Delete even if pinned, in use or being written.")
@click.option("--dry-run", is_flag=True, help="Log would_remove events; delete nothing.")
@wait_option
@handle_errors
def delete(
    config_path: Path | None,
    store: Path | None,
    tags: tuple[str, ...],
    kind: str | None,
    force: bool,
    dry_run: bool,
    wait: float,
) -> None:
    """Delete versions by tag (name:version or name:latest), keeping latest valid.

    \b
    Example: storewarden delete iris:dr4qngxj3c754ax4 iris:u27g4nhj3gkawax4
    """
    from storewarden import views
    from storewarden.engine import Engine

    config = load(config_path, store)
    bar = progress_bar()
    setup_logging(config, to_stderr=False, stream=bar.audit_stream() if bar else None)
    # A dry run writes nothing into the store, not even the census cache.
    engine = Engine(config, progress=bar, read_only=dry_run)
    with bar or contextlib.nullcontext():
        result = engine.delete(
            tags,
            kind=_kind(kind),
            force=force,
            dry_run=dry_run,
            lock_wait=wait,
        )
    click.echo(views.summary(result), err=True)
    after_batch(engine, result, protected=None)
    if result.failed:
        sys.exit(EXIT_ERROR)
    if result.skipped:
        fail(
            "refused at the last look before removal (use --force to override): "
            + "; ".join(
                f"{record.kind}/{record.tag}: {', '.join(reasons)}"
                for record, reasons in result.skipped
            ),
            EXIT_REFUSED,
        )


def _trail_lines(sources: tuple[str, ...]) -> Iterator[str]:
    """Yield the lines of each source in turn (``-``: stdin); exit 1 on an unreadable one."""
    from storewarden import audit as trail

    for source in sources:
        if source == "-":
            yield from trail.read_lines(sys.stdin.buffer)
            continue
        try:
            with trail.open_trail(Path(source)) as stream:
                yield from trail.read_lines(stream)
        except (OSError, EOFError) as error:  # EOFError: a truncated .gz
            detail = error.strerror if isinstance(error, OSError) and error.strerror else error
            fail(f"cannot read the audit log {source}: {detail}", EXIT_ERROR)


@main.command("audit")
@common_options
@click.argument("sources", nargs=-1, metavar="[FILE|-]...")
@click.option(
    "--since",
    callback=_since_option,
    metavar="AGE|TIME",
    help="Only events from the last AGE (24h, 7d) or since TIME (ISO 8601, UTC if no zone).",
)
@json_option
@quiet_when_stdout_closes
def audit_command(
    config_path: Path | None,
    store: Path | None,
    sources: tuple[str, ...],
    since: datetime | None,
    as_json: bool,
) -> None:
    """Report on the audit trail: removals per name, pointer changes, missed targets, errors.

    Reads JSON-lines audit events from FILE (default: the config's
    log.file; several files in turn, gzip-compressed ones too) or from
    standard input with '-'. Lines that are not audit events are counted
    and skipped.

    \b
    Examples:
      storewarden audit --config /etc/storewarden/storewarden.yaml --since 24h
      journalctl -u storewarden -o cat | storewarden audit - --since 7d
      storewarden audit /var/log/storewarden/audit.log* --json | jq '.removals[]'
    """
    from storewarden import audit as trail

    if not sources:
        config = load(config_path, store)
        if config.log.file is None:
            fail(
                "no audit log to read: give FILE, or '-' for standard input"
                " (journalctl -u storewarden -o cat | storewarden audit -),"
                " or set log.file in the config",
                EXIT_CONFIG,
            )
        sources = (str(config.log.file),)
    report = trail.summarize(_trail_lines(sources), since=since)
    if as_json:
        click.echo(json.dumps(trail.report_data(report), indent=2))
        return
    for line in trail.render_text(report):
        click.echo(line)


@main.command()
@quiet_when_stdout_closes
def schema() -> None:
    """Print the JSON Schema of the config file.

    \b
    Example: storewarden schema > storewarden.schema.json
    """
    from storewarden.config import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


# The shipped files by name (storewarden/shipped.py's FILES, repeated here so that
# --help and completion need no import; a test keeps the two equal).
SHIPPED_FILES = ("unit", "template-unit", "metrics-drop-in", "config", "rules", "rules-test")


def placement_options(function: F) -> F:
    """Add ``--user``, ``--group``, ``--store`` and ``--executable`` for the shipped files."""
    for option in reversed(
        [
            click.option(
                "--user",
                default="bentoml",
                show_default=True,
                help="The user that owns the store and runs the daemon.",
            ),
            click.option("--group", help="Its group (default: the same name as --user)."),
            click.option(
                "--store",
                default="/home/bentoml/bentoml",
                show_default=True,
                help="The store root; the template unit's stores are its siblings, by instance.",
            ),
            click.option(
                "--executable",
                help="The storewarden command the units run "
                "(default: this installation's, next to its Python).",
            ),
        ]
    ):
        function = option(function)
    return function


def _placement(user: str, group: str | None, store: str, executable: str | None) -> Placement:
    """Return the shipped files' Placement for these options; exit 2 if one is unusable."""
    from pathlib import PurePosixPath

    from storewarden.shipped import Placement, ShippedFilesError, this_executable

    try:
        return Placement(
            user=user,
            group=group or user,
            store=PurePosixPath(store),
            executable=PurePosixPath(executable) if executable else this_executable(),
        )
    except ShippedFilesError as error:
        fail(str(error), EXIT_CONFIG)


@main.command("print")
@click.argument("name", type=click.Choice(SHIPPED_FILES))
@placement_options
@quiet_when_stdout_closes
def print_command(
    name: str, user: str, group: str | None, store: str, executable: str | None
) -> None:
    """Print a file that ships with storewarden, filled in for this machine.

    NAME is unit (storewarden.service), template-unit (storewarden@.service),
    metrics-drop-in (opens loopback for metrics.port), config (every option,
    commented), rules (Prometheus recording and alert rules) or rules-test
    (their promtool unit tests). The units get --user, --group, --store and
    --executable; the config gets --store in its comments.

    \b
    Examples:
      storewarden print rules > /etc/prometheus/storewarden.rules.yml
      storewarden print unit --user ci --store /srv/bentoml
    """
    from storewarden.shipped import ShippedFilesError, render

    placement = _placement(user, group, store, executable)
    try:
        click.echo(render(name, placement), nl=False)
    except ShippedFilesError as error:
        fail(str(error), EXIT_ERROR)


@main.command("install-files")
@click.option(
    "--dest",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Root to install under (a package or image build directory, or /).",
)
@click.option(
    "--metrics-port",
    is_flag=True,
    help="Also install the drop-in that opens loopback for metrics.port.",
)
@click.option("--force", is_flag=True, help="Replace files that are there with other content.")
@placement_options
def install_files(
    dest: Path,
    metrics_port: bool,
    force: bool,
    user: str,
    group: str | None,
    store: str,
    executable: str | None,
) -> None:
    """Install the units and the config under --dest, filled in for this machine.

    Writes etc/systemd/system/storewarden.service and storewarden@.service,
    etc/storewarden/storewarden.yaml and, with --metrics-port, the drop-in
    in both units' .d directories; prints one line per file. A file already
    there with other content is left alone, and nothing is written, unless
    --force. Then: systemctl daemon-reload && systemctl enable --now storewarden

    \b
    Example:
      storewarden install-files --user ci --store /srv/bentoml
    """
    from storewarden.shipped import ShippedFilesError, install

    placement = _placement(user, group, store, executable)
    names = ["unit", "template-unit", "config", *(["metrics-drop-in"] if metrics_port else [])]
    try:
        written = install(dest, placement, names, force=force)
    except ShippedFilesError as error:
        fail(str(error), EXIT_ERROR)
    except OSError as error:
        fail(f"{error.filename or dest}: {error.strerror or error}", EXIT_ERROR)
    for item in written:
        click.echo(f"{item.outcome} {item.path}")


@main.command()
@common_options
@handle_errors
def run(config_path: Path | None, store: Path | None) -> None:
    """Run the daemon: watch the store, check usage on a schedule, prune under pressure.

    SIGTERM/SIGINT stop it after the removal in progress; SIGHUP reloads the
    config (an invalid one is logged as config_rejected and the old one kept).

    \b
    Example: storewarden run --config /etc/storewarden/storewarden.yaml
    """
    from storewarden.daemon import run_daemon

    config = load(config_path, store)
    setup_logging(config, to_stderr=False)
    sys.exit(
        run_daemon(
            config,
            config_path=config_path,
            store_override=store,
            # Raises LogFileError: the daemon rejects that reload, its log as it was.
            on_reload=lambda new: configure_logging(new, to_stderr=False),
        )
    )


def _kind(kind: str | None) -> Kind | None:
    return "bentos" if kind == "bentos" else "models" if kind == "models" else None


def _pin_board(config: Config) -> tuple[Engine, PinBoard]:
    """Return the engine and the pins of the configured store; exit 1 if the store is missing."""
    from storewarden.engine import Engine
    from storewarden.pins import PinBoard

    engine = Engine(config)
    if not engine.root.is_dir():
        fail(f"store {engine.root} does not exist", EXIT_ERROR)
    engine.pruner.prepare()  # the state directory, checked to lie outside models/ and bentos/
    return engine, PinBoard(engine.state_dir)


def _resolve_latest(engine: Engine, tag: str, kind: Kind | None) -> list[tuple[str, Kind | None]]:
    """Return ``(tag, kind)`` pairs to pin: ``name:latest`` becomes each kind's current version.

    The engine resolves it, as for ``delete``: the version latest names in
    the store now, lower-cased as BentoML reads tags.
    """
    name, _, version = tag.partition(":")
    if version.lower() != "latest":
        return [(tag, kind)]
    found: list[tuple[str, Kind | None]] = [
        (record.tag, record.kind) for record in engine.resolve(engine.census(), tag, kind)
    ]
    if not found:
        fail(f"{name} has no latest version to pin", EXIT_ERROR)
    return found


def _matches_nothing(engine: Engine, pin: Pin) -> bool:
    from storewarden import policy

    try:
        snapshot = engine.census()
    except OSError:
        return False
    probe = pin.glob()
    return not any(policy.is_pinned(record, (probe,)) for record in snapshot.versions)


@main.command()
@common_options
@click.argument("tag")
@kind_option()
@click.option(
    "--until",
    "until_text",
    metavar="DURATION",
    help="Stop protecting after this long (7d, 12h); default: until unpinned.",
)
@click.option(
    "--reason",
    default="",
    help="Why, for whoever reads `storewarden pins` later (at most 1000 characters).",
)
@handle_errors
def pin(
    config_path: Path | None,
    store: Path | None,
    tag: str,
    kind: str | None,
    until_text: str | None,
    reason: str,
) -> None:
    """Pin versions (name:version, name:*, name:latest) so no prune removes them.

    The pin is kept in the warden's state directory and holds from the
    daemon's next check, without a restart. `delete` refuses a pinned
    version unless --force. Pinning a tag again replaces its pin.

    \b
    Example: storewarden pin iris:dr4qngxj3c754ax4 --until 7d --reason "canary in prod"
    """
    from storewarden import logs
    from storewarden.config import parse_duration
    from storewarden.pins import Pin, check_reason, check_tag, current_user

    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    try:
        check_tag(tag)
        check_reason(reason)
        duration = parse_duration(until_text) if until_text is not None else None
    except ValueError as error:
        fail(str(error), EXIT_CONFIG)
    engine, board = _pin_board(config)
    now = datetime.now(tz=UTC).replace(microsecond=0)
    until = now + timedelta(seconds=duration) if duration is not None else None
    who = current_user()
    for resolved, resolved_kind in _resolve_latest(engine, tag, _kind(kind)):
        made = Pin(resolved, resolved_kind, who, now, until, reason)
        replaced = board.add(made)
        logs.get_logger().info(
            "pin_added",
            tag=made.tag,
            kind=made.kind,
            who=made.who,
            until=made.until.isoformat() if made.until else None,
            reason=made.reason,
            replaced=replaced is not None,
        )
        text = f"{'re-pinned' if replaced else 'pinned'} {made.glob()}"
        text += f" until {made.until.isoformat(timespec='seconds')}" if made.until else ""
        click.echo(text + (f" ({reason})" if reason else ""))
        if _matches_nothing(engine, made):
            click.echo(f"note: {made.glob()} matches no version in the store now", err=True)


@main.command()
@common_options
@click.argument("tag", required=False)
@kind_option("Only this kind's pin.")
@click.option("--expired", is_flag=True, help="Remove every expired pin instead of one tag.")
@handle_errors
def unpin(
    config_path: Path | None, store: Path | None, tag: str | None, kind: str | None, expired: bool
) -> None:
    """Remove the pin of TAG (as `storewarden pins` lists it); exit 1 if it has none.

    \b
    Example: storewarden unpin iris:dr4qngxj3c754ax4
    """
    from storewarden import logs
    from storewarden.pins import current_user

    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    if (tag is None) == (not expired):
        fail("give a TAG or --expired (not both)", EXIT_CONFIG)
    _engine, board = _pin_board(config)
    now = datetime.now(tz=UTC)
    gone = board.remove(tag, _kind(kind), expired_at=now if expired else None)
    if not gone and tag is not None:
        fail(f"{tag} is not pinned (`storewarden pins` lists the pins)", EXIT_ERROR)
    who = current_user()
    for old in gone:
        logs.get_logger().info("pin_removed", tag=old.tag, kind=old.kind, who=who)
        click.echo(f"unpinned {old.glob()}" + (" (expired)" if old.expired(now) else ""))
    problem = board.size_problem()
    if problem is not None:
        click.echo(f"note: {problem}", err=True)


@main.command("pins")
@common_options
@json_option
@handle_errors
@quiet_when_stdout_closes
def pins_command(config_path: Path | None, store: Path | None, as_json: bool) -> None:
    """List the pins: tag, kind, who pinned it when, until when, why; expired ones marked.

    \b
    Example: storewarden pins --json | jq '.[] | select(.expired | not) | .tag'
    """
    from storewarden import views
    from storewarden.engine import Engine
    from storewarden.pins import PinBoard

    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    now = datetime.now(tz=UTC)
    pins = [pin.as_dict(now) for pin in PinBoard(Engine(config).state_dir).load()]
    if as_json:
        click.echo(json.dumps(pins))
    elif pins:
        for line in views.pin_lines(pins):
            click.echo(line)
    else:
        click.echo("no pins", err=True)


@main.command("restore")
@common_options
@click.argument("archive_path", metavar="ARCHIVE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--pin", "pin_it", is_flag=True, help="Also pin it, so no prune removes it again.")
@wait_option
@handle_errors
def restore_command(
    config_path: Path | None, store: Path | None, archive_path: Path, pin_it: bool, wait: float
) -> None:
    """Put an archived version (archive.dir, or `bentoml models export`) back into the store.

    The version appears in one rename, and latest points at it if it is now
    the newest of its name. Exit 1 if the version is already in the store.
    Oldest first goes by time in this store, so a restored version counts
    as new: protect.min_age covers it for a while, --pin for good.

    \b
    Example: storewarden restore /var/lib/storewarden/archive/iris+dr4qngxj3c754ax4.bentomodel.tar
    """
    from storewarden import logs
    from storewarden.config import human_bytes
    from storewarden.engine import Engine
    from storewarden.pins import Pin, PinBoard, current_user

    config = load(config_path, store)
    setup_logging(config, to_stderr=False)
    engine = Engine(config)
    if not engine.root.is_dir():
        fail(f"store {engine.root} does not exist", EXIT_ERROR)
    restored = engine.restore(archive_path, lock_wait=wait)
    held = restored.version
    text = f"restored {held.kind}/{held.name}:{held.version} ({human_bytes(restored.bytes)})"
    if restored.pointer_new is not None:
        text += f"; {held.name}:latest is now {restored.pointer_new}"
    if pin_it:
        pinned = Pin(
            f"{held.name}:{held.version}",
            held.kind,
            current_user(),
            datetime.now(tz=UTC).replace(microsecond=0),
            reason=f"restored from {archive_path.name}",
        )
        PinBoard(engine.state_dir).add(pinned)
        logs.get_logger().info(
            "pin_added",
            tag=pinned.tag,
            kind=pinned.kind,
            who=pinned.who,
            until=None,
            reason=pinned.reason,
        )
        text += "; pinned"
    click.echo(text, err=True)

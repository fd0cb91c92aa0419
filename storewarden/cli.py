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
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

import click
from rich.console import Console

from storewarden import __version__, logs, policy, terminal
from storewarden import audit as trail
from storewarden.archive import RestoreError, UnsafeArchiveDirError, restore
from storewarden.config import (
    Config,
    ConfigError,
    human_bytes,
    json_schema,
    load_config,
    parse_duration,
)
from storewarden.engine import (
    AmbiguousTagError,
    CycleResult,
    Engine,
    PlanView,
    PreflightError,
    RefusedError,
    UnknownTagError,
)
from storewarden.layout import LayoutError
from storewarden.pins import Pin, PinBoard, PinsError, check_tag, current_user
from storewarden.prune import StoreBusyError, UnsafeStateDirError
from storewarden.store import Kind, Snapshot

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BUSY = 3
EXIT_REFUSED = 4

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> None:
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


def load(config_path: Path | None, store: Path | None) -> Config:
    """Return the config or exit 2 listing every problem."""
    try:
        return load_config(config_path, store=store)
    except ConfigError as error:
        click.echo(f"storewarden: {error}", err=True)
        sys.exit(EXIT_CONFIG)


def setup_logging(config: Config, *, to_stderr: bool, stream: TextIO | None = None) -> None:
    """Configure the audit log: stdout for commands whose output is the trail, else stderr."""
    logs.configure(
        store=config.store,
        level=config.log.level,
        log_format=config.log.format,
        file=config.log.file,
        stream=stream or (sys.stderr if to_stderr else sys.stdout),
    )


def handle_errors(function: F) -> F:
    """Turn the engine's errors into one line and the documented exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except StoreBusyError as error:
            fail(str(error), EXIT_BUSY)
        except RefusedError as error:
            fail(str(error), EXIT_REFUSED)
        except UnknownTagError as error:
            fail(str(error), EXIT_ERROR)
        except (
            UnsafeStateDirError,
            UnsafeArchiveDirError,
            AmbiguousTagError,
            PreflightError,
            LayoutError,
        ) as error:
            fail(str(error), EXIT_CONFIG)
        except (PinsError, RestoreError) as error:
            fail(str(error), EXIT_ERROR)
        except FileNotFoundError as error:
            fail(str(error), EXIT_ERROR)
        except OSError as error:
            fail(f"{error.filename or ''}: {error.strerror or error}", EXIT_ERROR)
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
      storewarden prune --dry-run        # log the plan as would_remove events
      storewarden prune                  # one prune cycle now
      storewarden delete iris:abc123     # delete one version, pointer kept valid
      storewarden pin iris:abc123 --until 7d --reason "release candidate"
      storewarden pins                   # who pinned what, until when
      storewarden restore /var/lib/storewarden/archive/iris+abc123.bentomodel.tar
      storewarden run                    # the daemon
    """


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
    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    try:
        engine = Engine(config, read_only=True)
        warnings = engine.preflight(create=False, warn=True)
    except (UnsafeStateDirError, UnsafeArchiveDirError, PreflightError, LayoutError) as error:
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


def _status_data(engine: Engine, view: PlanView) -> dict[str, Any]:
    snapshot = view.snapshot
    protected = {kept.version.path: list(kept.reasons) for kept in view.plan.kept}
    referenced = {
        kept.version.path: list(kept.referenced_by) for kept in view.plan.kept if kept.referenced_by
    }
    planned = {removal.version.path: removal.reason for removal in view.plan.removals}
    names = []
    for kind, name in snapshot.names():
        records = snapshot.versions_of(kind, name)
        pointer = snapshot.pointers.get((kind, name))
        names.append(
            {
                "kind": kind,
                "name": name,
                "latest": pointer.target if pointer else None,
                "latest_problem": pointer.problem if pointer else None,
                "bytes": sum(record.bytes for record in records),
                "versions": [
                    {
                        "version": record.version,
                        "bytes": record.bytes,
                        "creation_time": record.creation_time.isoformat(),
                        "creation_time_estimated": record.creation_time_estimated,
                        "arrived": record.arrived.isoformat() if record.arrived else None,
                        "in_store_since": record.age_basis.isoformat(),
                        "complete": record.complete,
                        "labels": dict(record.labels),
                        "protected": protected.get(record.path, []),
                        "referenced_by": referenced.get(record.path, []),
                        "would_remove": planned.get(record.path),
                        "problem": record.problem,
                    }
                    for record in reversed(records)
                ],
            }
        )
    return {
        "store": str(engine.root),
        "usage": view.plan.usage.as_dict(),
        "triggers": list(view.plan.triggers),
        "versions": len(snapshot.versions),
        "store_bytes": snapshot.store_bytes,
        "names": names,
        "problems": [
            {"path": str(problem.path), "problem": problem.reason} for problem in snapshot.problems
        ],
        "processes_uninspectable": view.in_use.uninspectable,
        "references_unknown": _unknown_data(view.plan),
        **_pins_data(engine, view.now),
    }


def _unknown_data(plan: policy.Plan) -> list[dict[str, Any]]:
    """Return the bentos whose needs are unknown (each blocks every model removal)."""
    return [
        {
            "bento": bento.tag,
            "path": str(bento.path),
            "reason": bento.problem or "being written",
            "until": "it settles" if bento.readable else "it can be read",
        }
        for bento in plan.references.unknown
    ]


def _pins_data(engine: Engine, now: datetime) -> dict[str, Any]:
    try:
        pins = PinBoard(engine.state_dir).load()
    except PinsError as error:
        return {"pins": [], "pins_problem": str(error)}
    return {"pins": [pin.as_dict(now) for pin in pins], "pins_problem": None}


def _pin_lines(pins: list[dict[str, Any]]) -> list[str]:
    rows = [("TAG", "KIND", "WHO", "WHEN", "UNTIL", "REASON")]
    for pin in pins:
        until = pin["until"] or "-"
        rows.append(
            (
                pin["tag"],
                pin["kind"] or "any",
                pin["who"],
                pin["when"],
                f"{until} (expired)" if pin["expired"] else until,
                pin["reason"] or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _print_status(data: dict[str, Any]) -> None:
    usage = data["usage"]
    click.echo(
        f"store {data['store']}: {data['versions']} versions, {human_bytes(data['store_bytes'])};"
        f" filesystem {usage['used_percent']:.1f}% used, {human_bytes(usage['free_bytes'])} free"
    )
    if data["triggers"]:
        click.echo(f"triggers holding: {', '.join(data['triggers'])}")
    rows = [("KIND", "NAME", "VERSIONS", "SIZE", "LATEST", "PROTECTED")]
    for entry in sorted(data["names"], key=lambda item: -int(item["bytes"])):
        reasons = terminal.protection_counts(entry)
        rows.append(
            (
                entry["kind"],
                entry["name"],
                str(len(entry["versions"])),
                human_bytes(entry["bytes"]),
                entry["latest"] or "-",
                ", ".join(f"{reason}:{count}" for reason, count in reasons.items()) or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if data["pins"]:
        click.echo("pins:")
        for line in _pin_lines(data["pins"]):
            click.echo(f"  {line}")
    if data["pins_problem"]:
        click.echo(f"pins: {data['pins_problem']} (every version is kept)")
    for problem in data["problems"]:
        click.echo(f"problem: {problem['path']}: {problem['problem']}")
    for unknown in data["references_unknown"]:
        click.echo(
            f"needs unknown: {unknown['bento']} ({unknown['reason']}): no model version is"
            f" removed until {unknown['until']}"
        )


def _require_store(engine: Engine) -> Snapshot:
    return engine.census()


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@handle_errors
def status(config_path: Path | None, store: Path | None, as_json: bool) -> None:
    """Show each name's versions, size, latest, what is protected and why, and the pins.

    On a terminal the names are a table sorted by size; piped, plain columns.

    \b
    Example: storewarden status --json | jq '.names[] | {name, bytes}'
    """
    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    engine = Engine(config, read_only=True)
    view = engine.make_plan(_require_store(engine))
    data = _status_data(engine, view)
    if as_json:
        click.echo(json.dumps(data))  # compact: the C encoder; pipe to jq to read
    elif terminal.is_terminal(sys.stdout):
        terminal.status_table(data, Console())
    else:
        _print_status(data)


def _plan_data(view: PlanView) -> dict[str, Any]:
    plan = view.plan

    def removal(item: Any) -> dict[str, Any]:
        record = item.version
        return {
            "kind": record.kind,
            "name": record.name,
            "version": record.version,
            "bytes": record.bytes,
            "reason": item.reason,
            "creation_time": record.creation_time.isoformat(),
            "path": str(record.path),
        }

    return {
        "triggers": list(plan.triggers),
        "usage": plan.usage.as_dict(),
        "target": plan.target.as_dict(),
        "remove": [removal(item) for item in plan.removals],
        "bytes_to_free": plan.bytes_to_free,
        "projected": plan.projected.as_dict(),
        "shortfall_bytes": plan.shortfall_bytes,
        "kept": [
            {
                "kind": kept.version.kind,
                "name": kept.version.name,
                "version": kept.version.version,
                "bytes": kept.version.bytes,
                "reasons": list(kept.reasons),
                "referenced_by": list(kept.referenced_by),
            }
            for kept in plan.kept
        ],
        "references_unknown": _unknown_data(plan),
    }


@main.command("plan")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@handle_errors
def plan_command(config_path: Path | None, store: Path | None, as_json: bool) -> None:
    """Show what a prune would remove now, why, and the projected usage.

    \b
    Example: storewarden plan --json | jq '.remove[] | "\\(.name):\\(.version) \\(.reason)"'
    """
    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    engine = Engine(config, read_only=True)
    view = engine.make_plan(_require_store(engine))
    data = _plan_data(view)
    if as_json:
        click.echo(json.dumps(data))  # compact: the C encoder; pipe to jq to read
        return
    usage, projected = data["usage"], data["projected"]
    click.echo(
        f"triggers: {', '.join(data['triggers']) or 'none'}; used {usage['used_percent']:.1f}%"
        f" -> {projected['used_percent']:.1f}% after {len(data['remove'])} removals"
        f" ({human_bytes(data['bytes_to_free'])})"
    )
    for item in data["remove"]:
        click.echo(
            f"  remove {item['kind']}/{item['name']}:{item['version']}"
            f"  {human_bytes(item['bytes'])}  {item['reason']}  (created {item['creation_time']})"
        )
    if data["shortfall_bytes"]:
        click.echo(
            f"target out of reach: {human_bytes(data['shortfall_bytes'])} more would be needed,"
            " but everything else is protected"
        )


def _summary(result: CycleResult) -> str:
    count = len(result.would_remove) if result.dry_run else len(result.removed)
    freed = (
        sum(removal.bytes for removal in result.would_remove)
        if result.dry_run
        else result.bytes_freed
    )
    verb = "would remove" if result.dry_run else "removed"
    text = f"{verb} {count} versions, {human_bytes(freed)}"
    if result.usage_after is not None:
        text += f"; used {result.usage_after.used_percent:.1f}%"
    if result.skipped:
        text += f"; {len(result.skipped)} skipped at re-check"
    if result.failed:
        text += f"; {len(result.failed)} failed"
    if not result.target_reached:
        text += f"; target not reached, {human_bytes(result.shortfall_bytes)} short"
    return text


@main.command()
@common_options
@click.option("--dry-run", is_flag=True, help="Log would_remove events; delete nothing.")
@click.option(
    "--wait",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for another warden's lock.",
)
@handle_errors
def prune(config_path: Path | None, store: Path | None, dry_run: bool, wait: float) -> None:
    """Run one prune cycle now (the daemon's cycle, once).

    Audit lines go to stdout; on a terminal, stderr shows a progress bar.

    \b
    Example (a CI clean-up step): storewarden prune --config ci.yaml
    """
    config = load(config_path, store)
    bar = terminal.progress_bar()
    setup_logging(config, to_stderr=False, stream=bar.audit_stream() if bar else None)
    engine = Engine(config, progress=bar)
    with bar or contextlib.nullcontext():
        result = engine.cycle(dry_run=dry_run or None, recover=True, lock_wait=wait)
    click.echo(_summary(result), err=True)
    if result.failed:
        sys.exit(EXIT_ERROR)


@main.command()
@common_options
@click.argument("tags", nargs=-1, required=True)
@click.option("--kind", type=click.Choice(["models", "bentos"]), help="Only this kind.")
@click.option("--force", is_flag=True, help="Delete even if pinned, in use or being written.")
@click.option("--dry-run", is_flag=True, help="Log would_remove events; delete nothing.")
@click.option(
    "--wait",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for another warden's lock.",
)
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
    config = load(config_path, store)
    bar = terminal.progress_bar()
    setup_logging(config, to_stderr=False, stream=bar.audit_stream() if bar else None)
    engine = Engine(config, progress=bar)
    with bar or contextlib.nullcontext():
        result = engine.delete(
            tags,
            kind=_kind(kind),
            force=force,
            dry_run=dry_run,
            lock_wait=wait,
        )
    click.echo(_summary(result), err=True)
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


def _since_option(
    _context: click.Context, _parameter: click.Parameter, value: str | None
) -> datetime | None:
    if value is None:
        return None
    try:
        return trail.parse_since(value, datetime.now(tz=UTC))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _trail_lines(sources: tuple[str, ...]) -> Iterator[str]:
    """Yield the lines of each source in turn (``-``: stdin); exit 1 on an unreadable one."""
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
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
def schema() -> None:
    """Print the JSON Schema of the config file.

    \b
    Example: storewarden schema > storewarden.schema.json
    """
    click.echo(json.dumps(json_schema(), indent=2))


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
    from storewarden.daemon import run_daemon  # noqa: PLC0415 - keeps one-shot commands light

    config = load(config_path, store)
    setup_logging(config, to_stderr=False)
    sys.exit(
        run_daemon(
            config,
            config_path=config_path,
            store_override=store,
            on_reload=lambda new: setup_logging(new, to_stderr=False),
        )
    )


def _kind(kind: str | None) -> Kind | None:
    return "bentos" if kind == "bentos" else "models" if kind == "models" else None


def _pin_board(config: Config) -> tuple[Engine, PinBoard]:
    """Return the engine and the pins of the configured store; exit 1 if the store is missing."""
    engine = Engine(config)
    if not engine.root.is_dir():
        fail(f"store {engine.root} does not exist", EXIT_ERROR)
    engine.pruner.prepare()  # the state directory, checked to lie outside models/ and bentos/
    return engine, PinBoard(engine.state_dir)


def _resolve_latest(engine: Engine, tag: str, kind: Kind | None) -> list[tuple[str, Kind | None]]:
    """Return ``(tag, kind)`` pairs to pin: ``name:latest`` becomes each kind's current version."""
    name, _, version = tag.partition(":")
    if version != "latest":
        return [(tag, kind)]
    found: list[tuple[str, Kind | None]] = []
    for each in (kind,) if kind is not None else engine.config.kinds:
        _form, target = engine.pruner.read_pointer(each, name)
        if target is not None:
            found.append((f"{name}:{target}", each))
    if not found:
        fail(f"{name} has no latest version to pin", EXIT_ERROR)
    return found


def _matches_nothing(engine: Engine, pin: Pin) -> bool:
    try:
        snapshot = engine.census()
    except OSError:
        return False
    probe = pin.glob()
    return not any(policy.is_pinned(record, (probe,)) for record in snapshot.versions)


@main.command()
@common_options
@click.argument("tag")
@click.option("--kind", type=click.Choice(["models", "bentos"]), help="Only this kind.")
@click.option(
    "--until",
    "until_text",
    metavar="DURATION",
    help="Stop protecting after this long (7d, 12h); default: until unpinned.",
)
@click.option("--reason", default="", help="Why, for whoever reads `storewarden pins` later.")
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
    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    try:
        check_tag(tag)
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
@click.option("--kind", type=click.Choice(["models", "bentos"]), help="Only this kind's pin.")
@click.option("--expired", is_flag=True, help="Remove every expired pin instead of one tag.")
@handle_errors
def unpin(
    config_path: Path | None, store: Path | None, tag: str | None, kind: str | None, expired: bool
) -> None:
    """Remove the pin of TAG (as `storewarden pins` lists it); exit 1 if it has none.

    \b
    Example: storewarden unpin iris:dr4qngxj3c754ax4
    """
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


@main.command("pins")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@handle_errors
def pins_command(config_path: Path | None, store: Path | None, as_json: bool) -> None:
    """List the pins: tag, kind, who pinned it when, until when, why; expired ones marked.

    \b
    Example: storewarden pins --json | jq '.[] | select(.expired | not) | .tag'
    """
    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    now = datetime.now(tz=UTC)
    pins = [pin.as_dict(now) for pin in PinBoard(Engine(config).state_dir).load()]
    if as_json:
        click.echo(json.dumps(pins))
    elif pins:
        for line in _pin_lines(pins):
            click.echo(line)
    else:
        click.echo("no pins", err=True)


@main.command("restore")
@common_options
@click.argument("archive_path", metavar="ARCHIVE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--pin", "pin_it", is_flag=True, help="Also pin it, so no prune removes it again.")
@click.option(
    "--wait",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for another warden's lock.",
)
@handle_errors
def restore_command(
    config_path: Path | None, store: Path | None, archive_path: Path, pin_it: bool, wait: float
) -> None:
    """Put an archived version (archive.dir, or `bentoml models export`) back into the store.

    The version appears in one rename, and latest points at it if it is now
    the newest of its name. Exit 1 if the version is already in the store.
    A restored old version is the first a prune under pressure removes
    again: --pin keeps it.

    \b
    Example: storewarden restore /var/lib/storewarden/archive/iris+dr4qngxj3c754ax4.bentomodel.tar
    """
    config = load(config_path, store)
    setup_logging(config, to_stderr=False)
    engine = Engine(config)
    if not engine.root.is_dir():
        fail(f"store {engine.root} does not exist", EXIT_ERROR)
    engine.pruner.prepare()
    with engine.lock.held(wait):
        engine.recover()
        restored = restore(archive_path, engine.pruner, config.kinds)
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

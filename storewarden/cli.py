"""Command line: thin wrappers that turn errors into one clear line and an exit code.

Exit codes: 0 done; 1 the store or a tag is wrong, or a removal failed;
2 invalid configuration or usage; 3 another warden holds the store;
4 a delete was refused (pinned, in use, or still being written).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from storewarden import __version__, logs
from storewarden.config import Config, ConfigError, json_schema, load_config
from storewarden.engine import CycleResult, Engine, PlanView, RefusedError, UnknownTagError
from storewarden.prune import StoreBusyError, UnsafeStateDirError
from storewarden.store import Snapshot

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BUSY = 3
EXIT_REFUSED = 4

F = TypeVar("F", bound=Callable[..., Any])


def human_bytes(count: float) -> str:
    """Return a byte count in binary units, e.g. ``1.5 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop always returns


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


def setup_logging(config: Config, *, to_stderr: bool) -> None:
    """Configure the audit log: stdout for commands whose output is the trail, else stderr."""
    logs.configure(
        store=config.store,
        level=config.log.level,
        log_format=config.log.format,
        file=config.log.file,
        stream=sys.stderr if to_stderr else sys.stdout,
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
        except UnsafeStateDirError as error:
            fail(str(error), EXIT_CONFIG)
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
      storewarden run                    # the daemon
    """


@main.command()
@common_options
def check(config_path: Path | None, store: Path | None) -> None:
    """Validate the config and look at the store; exit 2 on an invalid config.

    A missing store is reported but not an error: on a fresh build agent the
    daemon waits for it to appear.

    \b
    Example: storewarden check --config /etc/storewarden/storewarden.yaml
    """
    config = load(config_path, store)
    click.echo(f"config ok ({config_path or 'embedded defaults'})")
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
                        "complete": record.complete,
                        "labels": dict(record.labels),
                        "protected": protected.get(record.path, []),
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
    }


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
        reasons: dict[str, int] = {}
        for version in entry["versions"]:
            for reason in version["protected"]:
                reasons[reason] = reasons.get(reason, 0) + 1
        rows.append(
            (
                entry["kind"],
                entry["name"],
                str(len(entry["versions"])),
                human_bytes(entry["bytes"]),
                entry["latest"] or "-",
                ", ".join(f"{reason}:{count}" for reason, count in sorted(reasons.items())) or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for problem in data["problems"]:
        click.echo(f"problem: {problem['path']}: {problem['problem']}")


def _require_store(engine: Engine) -> Snapshot:
    return engine.census()


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@handle_errors
def status(config_path: Path | None, store: Path | None, as_json: bool) -> None:
    """Show each name's versions, size, latest, and what is protected and why.

    \b
    Example: storewarden status --json | jq '.names[] | {name, bytes}'
    """
    config = load(config_path, store)
    setup_logging(config, to_stderr=True)
    engine = Engine(config)
    view = engine.make_plan(_require_store(engine))
    data = _status_data(engine, view)
    if as_json:
        click.echo(json.dumps(data))  # compact: the C encoder; pipe to jq to read
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
            }
            for kept in plan.kept
        ],
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
    engine = Engine(config)
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

    \b
    Example (a CI clean-up step): storewarden prune --config ci.yaml
    """
    config = load(config_path, store)
    setup_logging(config, to_stderr=False)
    engine = Engine(config)
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
    setup_logging(config, to_stderr=False)
    engine = Engine(config)
    result = engine.delete(
        tags,
        kind="bentos" if kind == "bentos" else "models" if kind == "models" else None,
        force=force,
        dry_run=dry_run,
        lock_wait=wait,
    )
    click.echo(_summary(result), err=True)
    if result.failed:
        sys.exit(EXIT_ERROR)


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

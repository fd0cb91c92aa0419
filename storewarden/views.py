"""What the commands show, as data: JSON-ready, and rendered as plain text from that same data.

``--json`` prints the data; a pipe gets the plain lines made from it here;
a terminal gets :mod:`storewarden.terminal`'s rich tables, made from the same
data with the same columns (:data:`STATUS_COLUMNS`). Commands never shape
output themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from storewarden import policy
from storewarden.audit import printable
from storewarden.config import human_bytes
from storewarden.engine import CycleResult, Engine, PlanView, WhyView
from storewarden.forecast import MIN_INTERVALS
from storewarden.pins import PinBoard, PinsError

# The status table, plain or rich: (header, what each name row shows).
STATUS_COLUMNS = ("NAME", "KIND", "VERSIONS", "SIZE", "LATEST", "PROTECTED")


def status_rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    """Return the status table's rows (largest names first), one cell per STATUS_COLUMNS."""
    rows: list[tuple[str, ...]] = []
    for entry in sorted(
        data["names"], key=lambda item: (-int(item["bytes"]), item["kind"], item["name"])
    ):
        reasons = protection_counts(entry)
        rows.append(
            (
                entry["name"],
                entry["kind"],
                str(len(entry["versions"])),
                human_bytes(entry["bytes"]),
                entry["latest"] or "-",
                ", ".join(f"{reason} {count}" for reason, count in reasons.items()) or "-",
            )
        )
    return rows


def protection_counts(entry: dict[str, Any]) -> dict[str, int]:
    """Given one name of ``status`` data, return how many of its versions each reason protects."""
    counts: dict[str, int] = {}
    for version in entry["versions"]:
        for reason in version["protected"]:
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def status_data(engine: Engine, view: PlanView) -> dict[str, Any]:
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
        "protected_bytes": sum(kept.version.bytes for kept in view.plan.kept),
        "marks": marks_data(engine),
        "names": names,
        "problems": [
            {"path": str(problem.path), "problem": problem.reason} for problem in snapshot.problems
        ],
        "processes_uninspectable": view.in_use.uninspectable,
        "references_unknown": unknown_data(view.plan),
        "quarantined": [
            {"version": key, "until": until.isoformat()}
            for key, until in sorted(engine.quarantined().items())
        ],
        **pins_data(engine, view.now),
        "forecast": forecast_data(engine, view.plan),
    }


def marks_data(engine: Engine) -> dict[str, float]:
    """Return the high and low marks (trigger.high_percent and low_percent)."""
    trigger = engine.config.trigger
    return {"high_percent": trigger.high_percent, "low_percent": trigger.low_percent}


def forecast_data(engine: Engine, plan: policy.Plan) -> dict[str, Any]:
    """Return the fill forecast as data, with what is wrong with the history if it is unreadable."""
    found, problem = engine.forecast(plan)
    if found is None:
        return {
            "rate_bytes_per_day": None,
            "protected_rate_bytes_per_day": None,
            "high_mark_seconds": None,
            "disk_full_seconds": None,
            "protected_high_mark_seconds": None,
            "history_seconds": 0.0,
            "history_needed_seconds": MIN_INTERVALS * engine.config.schedule.check_interval,
            "samples": 0,
            "problem": problem,
        }
    return {**found.as_dict(), "problem": None}


def human_seconds(seconds: float) -> str:
    """Return a duration for people: ``3d 4h``, ``5h 10m``, ``42m``, ``30s``."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def forecast_line(data: dict[str, Any]) -> str:
    """Return the forecast in one line for ``status``."""
    if data["problem"]:
        return f"forecast: none, the usage history is unreadable ({data['problem']})"
    if data["history_seconds"] < data["history_needed_seconds"]:
        return (
            f"forecast: not yet (the history spans {human_seconds(data['history_seconds'])}"
            f" of the {human_seconds(data['history_needed_seconds'])} it needs)"
        )
    rate = data["rate_bytes_per_day"] or 0.0
    if rate <= 0:
        return "forecast: nothing written to the store lately"

    def when(key: str) -> str:
        value = data[key]
        return "never at this rate" if value is None else f"in {human_seconds(value)}"

    return (
        f"forecast: {human_bytes(rate)}/day written; high mark {when('high_mark_seconds')},"
        f" disk full (if nothing were removed) {when('disk_full_seconds')}; protected versions"
        f" alone reach the high mark {when('protected_high_mark_seconds')}"
    )


def unknown_data(plan: policy.Plan) -> list[dict[str, Any]]:
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


def pins_data(engine: Engine, now: datetime) -> dict[str, Any]:
    """Return the pins of the engine's store as data (and what is wrong with the file, if any)."""
    try:
        pins = PinBoard(engine.state_dir).load()
    except PinsError as error:
        return {"pins": [], "pins_problem": str(error)}
    return {"pins": [pin.as_dict(now) for pin in pins], "pins_problem": None}


def columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Return ``rows`` as lines of left-aligned columns two spaces apart."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def pin_lines(pins: list[dict[str, Any]]) -> list[str]:
    """Return the pins as a plain table."""
    rows: list[tuple[str, ...]] = [("TAG", "KIND", "WHO", "WHEN", "UNTIL", "REASON")]
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
    return columns(rows)


def status_lines(data: dict[str, Any]) -> list[str]:
    """Return ``status`` data as plain text."""
    usage = data["usage"]
    lines = [
        f"store {data['store']}: {data['versions']} versions, {human_bytes(data['store_bytes'])};"
        f" filesystem {usage['used_percent']:.1f}% used, {human_bytes(usage['free_bytes'])} free"
    ]
    if data["triggers"]:
        lines.append(f"triggers holding: {', '.join(data['triggers'])}")
    lines.extend(columns([STATUS_COLUMNS, *status_rows(data)]))
    if "forecast" in data:
        lines.append(forecast_line(data["forecast"]))
    lines.extend(status_notes(data))
    return lines


def status_notes(data: dict[str, Any]) -> list[str]:
    """Return what follows the status table: pins, problems, quarantine, bentos being written."""
    lines = []
    if data["pins"]:
        lines.append("pins:")
        lines.extend(f"  {line}" for line in pin_lines(data["pins"]))
    if data["pins_problem"]:
        lines.append(f"pins: {data['pins_problem']} (every version is kept)")
    for problem in data["problems"]:
        lines.append(f"problem: {problem['path']}: {problem['problem']}")
    for unknown in data["references_unknown"]:
        lines.append(
            f"needs unknown: {unknown['bento']} ({unknown['reason']}): no model version is"
            f" removed until {unknown['until']}"
        )
    for item in data.get("quarantined", []):
        lines.append(
            f"quarantined: {item['version']} (its removal kept failing) until {item['until']}"
        )
    return lines


def plan_data(view: PlanView) -> dict[str, Any]:
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
        "references_unknown": unknown_data(plan),
    }


def plan_lines(data: dict[str, Any]) -> list[str]:
    """Return ``plan`` data as plain text."""
    usage, projected = data["usage"], data["projected"]
    lines = []
    if data.get("what_if"):
        lines.append(
            "what if "
            + ", ".join(f"{key} {value}" for key, value in data["what_if"].items())
            + " (the config is unchanged):"
        )
    lines += [
        f"triggers: {', '.join(data['triggers']) or 'none'}; used {usage['used_percent']:.1f}%"
        f" -> {projected['used_percent']:.1f}% after {len(data['remove'])} removals"
        f" ({human_bytes(data['bytes_to_free'])})"
    ]
    for item in data["remove"]:
        lines.append(
            f"  remove {item['kind']}/{item['name']}:{item['version']}"
            f"  {human_bytes(item['bytes'])}  {item['reason']}  (created {item['creation_time']})"
        )
    if data["shortfall_bytes"]:
        lines.append(
            f"target out of reach: {human_bytes(data['shortfall_bytes'])} more would be needed,"
            " but everything else is protected"
        )
    return lines


def summary(result: CycleResult) -> str:
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


# -- why -----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Return ``value`` as JSON-ready data (times as ISO 8601)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def why_data(engine: Engine, why: WhyView) -> dict[str, Any]:
    """Return ``storewarden why`` for a version in the store, as data (docs/operations.md)."""
    record, found = why.record, why.explanation
    rules = []
    board = pins_data(engine, why.view.now)
    for verdict in found.verdicts:
        detail = _plain(dict(verdict.detail))
        if verdict.rule == policy.PINNED:
            globs = set(detail["globs"])
            detail["pins"] = [
                pin for pin in board["pins"] if _pin_glob(pin) in globs and not pin["expired"]
            ]
            detail["config"] = [
                glob for glob in detail["globs"] if glob in engine.config.protect.pins
            ]
        rules.append({"rule": verdict.rule, "holds": verdict.holds, "detail": detail})
    going = found.going
    data: dict[str, Any] = {
        "tag": record.tag,
        "kind": record.kind,
        "name": record.name,
        "version": record.version,
        "in_store": True,
        "path": str(record.path),
        "bytes": record.bytes,
        "creation_time": record.creation_time.isoformat(),
        "in_store_since": record.age_basis.isoformat(),
        "last_change": record.last_change.isoformat(),
        "complete": record.complete,
        "labels": dict(record.labels),
        "usage": why.view.plan.usage.as_dict(),
        "outcome": found.outcome,
        "reason": found.reason,
        "protected_by": list(found.protected_by),
        "rules": rules,
        "order": (
            {
                "position": found.place.position,
                "of": found.place.of,
                "bytes_before": found.place.bytes_before,
                "mandatory_bytes": found.place.mandatory_bytes,
            }
            if found.place is not None
            else None
        ),
        "goes_at": (
            {
                "used_bytes": going.used_bytes,
                "used_percent": round(going.used_percent, 2),
                "capacity_bytes": going.capacity_bytes,
                "more_bytes": going.more_bytes,
                "not_before": going.after.isoformat() if going.after else None,
                "beyond_full_disk": found.beyond,
            }
            if going is not None
            else None
        ),
        "removed_without_pressure_at": (
            found.mandatory_at.isoformat() if found.mandatory_at is not None else None
        ),
        "never_while": list(found.never),
        "protected_until": found.protected_until.isoformat() if found.protected_until else None,
    }
    data["summary"] = why_summary(data)
    return data


def _pin_glob(pin: dict[str, Any]) -> str:
    return f"{pin['kind']}/{pin['tag']}" if pin["kind"] else str(pin["tag"])


def why_summary(data: dict[str, Any]) -> str:  # noqa: PLR0911 - one answer per case
    """Return the one line that answers "will it go, and when?" from ``why`` data."""
    going = data["goes_at"]
    if data["outcome"] == "removed_now":
        return f"the next prune removes it now ({data['reason']})"
    if data["removed_without_pressure_at"] is not None:
        rule = next(
            (
                rule["rule"]
                for rule in data["rules"]
                if rule["holds"]
                and rule["rule"] in (policy.MAX_AGE, policy.MAX_VERSIONS, policy.INCOMPLETE)
            ),
            "abandoned",
        )
        reason = policy.ABANDONED if rule == policy.INCOMPLETE else rule
        return (
            f"goes without pressure ({reason}) at the first check after"
            f" {data['removed_without_pressure_at']}"
        )
    if data["never_while"]:
        return "never removed automatically while: " + ", ".join(data["never_while"])
    if going is None:
        return "not in the removal order"
    prefix = f"protected until {going['not_before']}; then " if going["not_before"] else ""
    if going["beyond_full_disk"]:
        order = data["order"]
        return (
            f"{prefix}not in one prune even from a full disk:"
            f" {human_bytes(order['bytes_before'] + order['mandatory_bytes'])} of older removable"
            " versions go first"
        )
    if going["more_bytes"] == 0:
        return (
            f"{prefix}goes once usage reaches {going['used_percent']:.1f}% (reached now),"
            " unless protected before then"
        )
    return (
        f"{prefix}goes once usage reaches {going['used_percent']:.1f}%"
        f" (another {human_bytes(going['more_bytes'])}), unless protected before then"
    )


def why_lines(data: dict[str, Any]) -> list[str]:
    """Return ``why`` data as plain text for people."""
    if not data["in_store"]:
        return gone_lines(data)
    lines = [
        f"{data['kind']}/{data['tag']}: {human_bytes(data['bytes'])}, in the store since"
        f" {data['in_store_since']}",
        data["summary"],
    ]
    order = data["order"]
    if order is not None:
        lines.append(
            f"removal order: {order['position']} of {order['of']} (oldest first);"
            f" {human_bytes(order['bytes_before'])} of older versions go before it"
        )
    lines.append("rules:")
    for rule in data["rules"]:
        mark = "HOLDS" if rule["holds"] else "-"
        lines.append(f"  {rule['rule']:<18} {mark:<5}  {_rule_text(rule)}")
    # A process's name or a pin's reason reaches the terminal: no escape sequence does.
    return [printable(line) for line in lines]


def _rule_text(rule: dict[str, Any]) -> str:  # noqa: PLR0911 - one short line per rule
    detail = rule["detail"]
    name = rule["rule"]
    if name == policy.LATEST:
        return f"latest names {detail['latest'] or '-'} (keep_latest {detail['keep_latest']})"
    if name == policy.KEEP_LAST:
        return (
            f"keep_last {detail['keep_last']}; it is number {detail['position'] or '-'} of"
            f" {detail['complete_versions']} complete versions, newest first"
        )
    if name in (policy.MIN_AGE, policy.SETTLE):
        return f"until {detail['until']}"
    if name == policy.INCOMPLETE:
        return "complete" if detail["complete"] else f"abandoned at {detail['abandoned_at']}"
    if name == policy.PINNED:
        pins = [
            f"{pin['tag']} by {pin['who']} until {pin['until'] or 'unpinned'}"
            + (f" ({pin['reason']})" if pin["reason"] else "")
            for pin in detail["pins"]
        ]
        return "; ".join([*pins, *(f"{glob} (config)" for glob in detail["config"])]) or "-"
    if name == policy.LABEL:
        return ", ".join(f"{k}: {v}" for k, v in detail["matching"].items()) or "-"
    if name == policy.IN_USE:
        return detail["holder"] or "-"
    if name in (policy.REFERENCED, policy.REFERENCES_UNKNOWN):
        return ", ".join(detail["bentos"]) or "-"
    if name == policy.MAX_AGE:
        return f"max_age {detail['max_age_seconds']}"
    if name == policy.MAX_VERSIONS:
        return f"max_versions {detail['max_versions']}"
    return detail.get("problem") or "-"


def gone_data(
    tag: str, kind: str | None, name: str, version: str, departures: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return ``storewarden why`` for a version no longer in the store, from the audit trail."""
    data: dict[str, Any] = {
        "tag": tag,
        "kind": kind,
        "name": name,
        "version": version,
        "in_store": False,
        "departures": departures,
    }
    data["summary"] = gone_summary(departures[-1]) if departures else None
    return data


def gone_summary(item: dict[str, Any]) -> str:
    """Return one line: when the version went, why, by which run, its bytes, where latest went."""
    if item["event"] == "version_gone":
        return (
            f"gone at {item['timestamp']} without the warden (version_gone: bentoml models"
            " delete, rm, another tool)"
        )
    run = item["run"]
    started = (
        f", started by {', '.join(run['triggers'])} at {run['used_percent']}% used"
        if run is not None and run["triggers"]
        else ""
    )
    text = (
        f"removed at {item['timestamp']} ({item['reason']}) by run {item['run_id']}{started},"
        f" {human_bytes(item['bytes'])}"
    )
    pointer = item["pointer"]
    if pointer is not None:
        text += f"; latest moved to {pointer['new'] or '- (removed)'}"
    return text


def gone_lines(data: dict[str, Any]) -> list[str]:
    """Return ``why`` of a departed version as plain text."""
    where = f"{data['kind']}/" if data["kind"] else ""
    lines = [f"{where}{data['name']}:{data['version']}: not in the store"]
    lines.extend(f"  {gone_summary(item)}" for item in data["departures"])
    return [printable(line) for line in lines]

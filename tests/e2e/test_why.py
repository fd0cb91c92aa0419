"""`storewarden why` run as a user runs it: a subprocess on a real store and a real trail.

A version in the store is explained against the plan the same store gives
(`storewarden plan --json`), without anything in the store or the state
directory changing; a version a real prune or delete removed is explained
from the ``log.file`` those runs wrote, and from the same lines piped in as
a journal export.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_audit import storewarden, write_config
from tests.e2e.test_cli import store_tree, tree
from tests.storebuilder import make_version, point_latest

MIB = 1024 * 1024


def build(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Return a store of iris (6 versions) and bert (2), its config and its log file."""
    store = tmp_path / "bentoml"
    now = datetime.now(tz=UTC)
    for index in range(6):
        make_version(store, "iris", f"v{index}", created=now - timedelta(days=20 - index), size=MIB)
    point_latest(store, "iris", "v5")
    for index in range(2):
        make_version(store, "bert", f"b{index}", created=now - timedelta(days=9 - index), size=MIB)
    point_latest(store, "bert", "b1")
    log = tmp_path / "audit.log"
    config = write_config(
        tmp_path / "storewarden.yaml",
        store,
        log,
        trigger={"max_store_size": int(5.5 * MIB)},
    )
    return store, config, log


def why(config: Path, *arguments: str, stdin: str = "") -> dict[str, Any]:
    """Run ``why --json`` and return its document; fail on a non-zero exit."""
    done = storewarden("why", *arguments, "--config", str(config), "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def rule(data: dict[str, Any], name: str) -> dict[str, Any]:
    """Return one rule's verdict from ``why`` data."""
    found: dict[str, Any] = next(item for item in data["rules"] if item["rule"] == name)
    return found


def test_why_agrees_with_plan_on_every_version_and_writes_nothing(tmp_path: Path) -> None:
    store, config, _log = build(tmp_path)
    before = (store_tree(store), tree(store))
    planned = json.loads(storewarden("plan", "--config", str(config), "--json").stdout)
    removed = {f"{item['name']}:{item['version']}": item["reason"] for item in planned["remove"]}
    kept = {f"{item['name']}:{item['version']}": item["reasons"] for item in planned["kept"]}

    answers = {
        tag: why(config, tag) for tag in [*(f"iris:v{i}" for i in range(6)), "bert:b0", "bert:b1"]
    }

    assert removed  # the store is over max_store_size: the plan removes the oldest
    for tag, data in answers.items():
        if tag in removed:
            assert (data["outcome"], data["reason"]) == ("removed_now", removed[tag]), tag
        elif tag in kept:
            assert data["outcome"] == "kept", tag
            assert data["protected_by"] == kept[tag], tag
        else:
            assert data["outcome"] in ("reserve", "candidate"), tag
    assert answers["iris:v5"]["never_while"] == ["latest", "keep_last"]
    assert rule(answers["iris:v5"], "keep_last")["detail"]["position"] == 1
    assert answers["iris:v0"]["order"]["position"] == 1
    assert (store_tree(store), tree(store)) == before
    assert not (store / ".storewarden").exists()


def test_why_names_who_pinned_a_version_and_why(tmp_path: Path) -> None:
    _store, config, _log = build(tmp_path)
    pinned = storewarden(
        "pin", "iris:v2", "--until", "7d", "--reason", "release candidate", "--config", str(config)
    )
    assert pinned.returncode == 0, pinned.stderr

    data = why(config, "iris:v2")

    verdict = rule(data, "pinned")
    assert verdict["holds"]
    assert verdict["detail"]["globs"] == ["iris:v2"]
    [pin] = verdict["detail"]["pins"]
    assert pin["reason"] == "release candidate"
    assert pin["until"] is not None
    assert data["never_while"] == ["pinned"]
    assert data["summary"] == "never removed automatically while: pinned"


def test_a_version_a_prune_removed_is_explained_from_the_trail(tmp_path: Path) -> None:
    store, config, log = build(tmp_path)
    pruned = storewarden("prune", "--config", str(config))
    assert pruned.returncode == 0, pruned.stderr
    removals = [
        event
        for event in map(json.loads, log.read_text().splitlines())
        if event["event"] == "version_removed"
    ]
    first = removals[0]
    assert not (store / "models" / first["name"] / first["version"]).exists()

    data = why(config, f"{first['name']}:{first['version']}")

    assert data["in_store"] is False
    [departure] = data["departures"]
    assert departure["event"] == "version_removed"
    assert departure["reason"] == "max_store_size"
    assert departure["run_id"] == first["run_id"]
    assert departure["bytes"] == first["bytes"]
    assert departure["run"]["triggers"] == ["max_store_size"]
    assert departure["pointer"] is None  # latest never named it
    assert data["summary"].startswith(f"removed at {departure['timestamp']} (max_store_size)")


def test_a_deleted_latest_says_where_the_pointer_moved_also_from_a_journal_on_stdin(
    tmp_path: Path,
) -> None:
    store, config, log = build(tmp_path)
    deleted = storewarden("delete", "iris:latest", "--config", str(config))
    assert deleted.returncode == 0, deleted.stderr
    # journalctl without -o cat: a prefix before each JSON object, and other lines between.
    journal = "".join(
        f"Nov 26 12:00:00 agent storewarden[42]: {line}\nNov 26 12:00:00 agent systemd[1]: x\n"
        for line in log.read_text().splitlines()
    )
    no_log = write_config(tmp_path / "nolog.yaml", store, tmp_path / "unused.log")
    no_log.write_text(json.dumps({"store": str(store)}))

    from_file = why(config, "iris:v5")
    from_stdin = why(no_log, "iris:v5", "--log", "-", stdin=journal)

    for data in (from_file, from_stdin):
        [departure] = data["departures"]
        assert departure["reason"] == "explicit"
        assert departure["run"] is None  # a delete has no prune_started
        assert departure["pointer"]["new"] == "v4"
        assert data["summary"].endswith("latest moved to v4")
    assert from_file["departures"] == from_stdin["departures"]


def test_a_tag_never_seen_exits_1_with_one_clear_line(tmp_path: Path) -> None:
    _store, config, log = build(tmp_path)
    log.write_text("")

    done = storewarden("why", "iris:ghost", "--config", str(config))

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"storewarden: iris:ghost is not in the store and the audit trail ({log}) never saw it"
        " leave"
    ]


def test_a_name_that_is_a_model_and_a_bento_needs_kind(tmp_path: Path) -> None:
    store, config, _log = build(tmp_path)
    make_version(store, "iris", "v0", kind="bentos")

    ambiguous = storewarden("why", "iris:v0", "--config", str(config))
    chosen = why(config, "iris:v0", "--kind", "bentos")

    assert ambiguous.returncode == 2
    assert "give --kind models or --kind bentos" in ambiguous.stderr
    assert chosen["kind"] == "bentos"


@pytest.mark.parametrize("tag", ["iris", "iris:"])
def test_a_tag_without_a_version_is_a_usage_error(tmp_path: Path, tag: str) -> None:
    _store, config, _log = build(tmp_path)

    done = storewarden("why", tag, "--config", str(config))

    assert done.returncode == 2
    assert "name:version" in done.stderr
    assert os.path.exists(config)


# -- what-if plans -------------------------------------------------------------------------


def test_plan_with_what_if_thresholds_shows_their_removals_and_leaves_the_config(
    tmp_path: Path,
) -> None:
    store, config, _log = build(tmp_path)
    config.write_text(json.dumps({"store": str(store), "protect": {"min_age": 0, "settle": 0}}))
    written = config.read_text()

    plain = json.loads(storewarden("plan", "--config", str(config), "--json").stdout)
    what_if = storewarden(
        "plan", "--config", str(config), "--json", "--max-store-size", "4MiB", "--keep-last", "2"
    )
    text = storewarden("plan", "--config", str(config), "--max-store-size", "4MiB")

    assert plain["remove"] == []
    assert what_if.returncode == 0, what_if.stderr
    data = json.loads(what_if.stdout)
    assert data["what_if"] == {"max_store_size": 4 * MIB, "keep_last": 2}
    assert data["triggers"] == ["max_store_size"]
    removed = [f"{item['name']}:{item['version']}" for item in data["remove"]]
    assert removed[:2] == ["iris:v0", "iris:v1"]
    assert "iris:v4" not in removed  # keep_last 2 keeps v4 and v5
    assert text.stdout.splitlines()[0] == (
        f"what if max_store_size {4 * MIB} (the config is unchanged):"
    )
    assert config.read_text() == written


def test_what_if_thresholds_are_checked_as_the_config_is(tmp_path: Path) -> None:
    _store, config, _log = build(tmp_path)

    done = storewarden(
        "plan", "--config", str(config), "--high-percent", "70", "--low-percent", "80"
    )

    assert done.returncode == 2
    assert "low_percent (80) must be below high_percent (70)" in done.stderr

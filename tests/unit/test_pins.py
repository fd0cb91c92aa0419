"""Pins as data: tag globs, kinds, expiry, and what the planner makes of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storewarden import policy
from storewarden.pins import (
    MAX_REASON_LENGTH,
    MAX_WHO_LENGTH,
    InvalidPinError,
    Pin,
    check_reason,
    check_tag,
    current_user,
)
from storewarden.store import Kind, VersionRecord

WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def record(name: str, version: str, kind: Kind = "models") -> VersionRecord:
    """Return a complete version record for the planner's pin matching."""
    return VersionRecord(
        kind=kind,
        name=name,
        version=version,
        path=Path("/store") / kind / name / version,
        creation_time=WHEN,
        creation_time_estimated=False,
        labels={},
        bytes=4096,
        last_change=WHEN,
        complete=True,
    )


@pytest.mark.parametrize("tag", ["iris:v1", "iris:*", "llm-base:dr4qngxj3c754ax4", "*:golden"])
def test_a_pin_tag_is_a_name_version_glob(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["iris", "iris:", ":v1", "Iris:v1", "iris:v 1", "iris:v1/x", ""])
def test_a_pin_tag_without_name_and_version_is_rejected(tag: str) -> None:
    with pytest.raises(ValueError, match="must look like 'name:version'"):
        check_tag(tag)


def test_a_pin_without_until_never_expires() -> None:
    pin = Pin("iris:v1", None, "alice", WHEN)

    assert not pin.expired(WHEN + timedelta(days=3650))


def test_a_pin_stops_protecting_at_its_until() -> None:
    pin = Pin("iris:v1", None, "alice", WHEN, until=WHEN + timedelta(days=7))

    assert not pin.expired(WHEN + timedelta(days=7) - timedelta(seconds=1))
    assert pin.expired(WHEN + timedelta(days=7))


def test_a_pin_of_one_kind_protects_that_kind_only() -> None:
    pin = Pin("svc:*", "bentos", "alice", WHEN)

    assert pin.glob() == "bentos/svc:*"
    assert policy.is_pinned(record("svc", "b1", "bentos"), [pin.glob()])
    assert not policy.is_pinned(record("svc", "b1", "models"), [pin.glob()])


def test_a_pin_of_any_kind_protects_both_kinds() -> None:
    glob = Pin("svc:*", None, "alice", WHEN).glob()

    assert policy.is_pinned(record("svc", "b1", "bentos"), [glob])
    assert policy.is_pinned(record("svc", "m1", "models"), [glob])
    assert not policy.is_pinned(record("svcx", "m1", "models"), [glob])


def test_a_pin_survives_its_round_trip_through_plain_data() -> None:
    pin = Pin("iris:v1", "models", "alice (sudo as bentoml)", WHEN, WHEN + timedelta(1), "canary")

    assert Pin.from_dict(pin.as_dict()) == pin
    assert pin.as_dict(WHEN + timedelta(days=2))["expired"] is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("iris:v1", "must be an object"),
        ({"kind": None, "who": "a", "when": "2026-11-26T12:00:00+00:00"}, "lacks its tag"),
        ({"tag": "iris", "who": "a", "when": "2026-11-26T12:00:00+00:00"}, "name:version"),
        ({"tag": "iris:v1", "kind": "model", "who": "a", "when": WHEN.isoformat()}, "kind"),
        ({"tag": "iris:v1", "who": 3, "when": WHEN.isoformat()}, "who and reason"),
        ({"tag": "iris:v1", "who": "a", "when": "yesterday"}, "not an ISO 8601 time"),
        ({"tag": "iris:v1", "who": "a", "when": "2026-11-26T12:00:00"}, "no time zone"),
        ({"tag": "iris:v1", "who": "a", "when": WHEN.isoformat(), "until": 7}, "until"),
    ],
)
def test_an_invalid_pin_entry_is_rejected_with_what_is_wrong(data: Any, message: str) -> None:
    with pytest.raises(InvalidPinError, match=message):
        Pin.from_dict(data)


def test_who_pinned_is_bounded_whatever_sudo_user_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "x" * 100_000)

    who = current_user()

    assert len(who) == MAX_WHO_LENGTH
    assert who.startswith("xxx")


@pytest.mark.parametrize("length", [0, MAX_REASON_LENGTH])
def test_a_reason_up_to_its_limit_is_taken(length: int) -> None:
    assert check_reason("r" * length) == "r" * length


def test_a_longer_reason_is_refused_saying_the_limit() -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_REASON_LENGTH} characters"):
        check_reason("r" * (MAX_REASON_LENGTH + 1))

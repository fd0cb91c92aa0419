"""The one way the tests wait for something to happen: poll, with a deadline, and say what."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

WAIT = 120.0  # generous: CI machines are slower than a developer's, never a timing assertion

T = TypeVar("T")


def wait_until(
    read: Callable[[], T],
    holds: Callable[[T], bool],
    what: str,
    *,
    timeout: float = WAIT,
    interval: float = 0.05,
    gave_up: Callable[[T], bool] = lambda _value: False,
) -> T:
    """Call ``read`` until ``holds`` is true of what it returns, and return that.

    Fail the test naming ``what`` (and the last value read) after
    ``timeout`` seconds, or at once when ``gave_up`` says waiting is useless
    (the process being waited on has exited, say).
    """
    deadline = time.monotonic() + timeout
    value = read()
    while not holds(value):
        if time.monotonic() > deadline or gave_up(value):
            pytest.fail(f"never happened: {what}; last seen: {str(value)[-4000:]}")
        time.sleep(interval)
        value = read()
    return value

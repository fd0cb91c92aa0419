"""The systemd notify protocol, checked against real unix datagram sockets.

Each test binds the socket systemd would own and reads back exactly what the
notifier sent, so the bytes on the wire are what is asserted.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storewarden.notify import SystemdNotifier

RECEIVE_TIMEOUT_SECONDS = 2.0


@dataclass
class Listener:
    """A bound socket standing in for systemd's notify socket."""

    receiver: socket.socket
    notify_socket: str

    def receive(self) -> bytes:
        """Return the next datagram; raise TimeoutError if none arrives."""
        self.receiver.settimeout(RECEIVE_TIMEOUT_SECONDS)
        return self.receiver.recv(4096)

    def assert_nothing_more(self) -> None:
        """Fail if another datagram is waiting."""
        self.receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            self.receiver.recv(4096)


@pytest.fixture
def socket_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a fresh directory with a short path: a unix socket path must fit
    in 108 bytes, and tmp_path embeds the (long, sentence-like) test name."""
    return tmp_path_factory.mktemp("notify")


@pytest.fixture
def listener(socket_directory: Path) -> Iterator[Listener]:
    """Yield a datagram socket bound to a file, like systemd's own."""
    path = socket_directory / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        yield Listener(receiver, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    """Yield a datagram socket bound in the Linux abstract namespace, which
    systemd uses for user managers and containers ('@name' in the variable)."""
    name = f"storewarden-test-{os.getpid()}-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        yield Listener(receiver, "@" + name)


def notifier_for(listener: Listener, **extra: str) -> SystemdNotifier:
    """Return a notifier built from an environment naming the listener."""
    return SystemdNotifier.from_environment({"NOTIFY_SOCKET": listener.notify_socket, **extra})


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (SystemdNotifier.ready, b"READY=1"),
        (SystemdNotifier.watchdog, b"WATCHDOG=1"),
        (SystemdNotifier.stopping, b"STOPPING=1"),
        (lambda notifier: notifier.status("pruning 3 versions"), b"STATUS=pruning 3 versions"),
    ],
    ids=["ready", "watchdog", "stopping", "status"],
)
def test_each_state_change_sends_exactly_its_datagram(
    listener: Listener, call: Callable[[SystemdNotifier], bool], expected: bytes
) -> None:
    notifier = notifier_for(listener)

    assert call(notifier) is True
    assert listener.receive() == expected
    listener.assert_nothing_more()


def test_reloading_sends_the_monotonic_clock_in_microseconds(listener: Listener) -> None:
    notifier = notifier_for(listener)

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    first_line, second_line = listener.receive().decode().split("\n")
    assert first_line == "RELOADING=1"
    name, value = second_line.split("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_turns_line_breaks_into_spaces_so_the_message_stays_one_field(
    listener: Listener,
) -> None:
    notifier = notifier_for(listener)

    assert notifier.status("removed 2 versions\nfreed 4 GiB\r\n") is True
    assert listener.receive() == b"STATUS=removed 2 versions freed 4 GiB"


def test_send_writes_one_line_per_field_in_the_order_given(listener: Listener) -> None:
    notifier = notifier_for(listener)

    assert notifier.send(READY=1, STATUS="watching /srv/bentoml", MAINPID=4242) is True
    assert listener.receive() == b"READY=1\nSTATUS=watching /srv/bentoml\nMAINPID=4242"


@pytest.mark.parametrize(
    "fields",
    [{}, {"STATUS": "two\nlines"}, {"STATUS": "nul\0byte"}],
    ids=["no-fields", "newline-in-value", "nul-in-value"],
)
def test_send_rejects_fields_that_would_break_the_line_protocol(
    listener: Listener, fields: dict[str, str]
) -> None:
    notifier = notifier_for(listener)

    with pytest.raises(ValueError, match="field"):
        notifier.send(**fields)
    listener.assert_nothing_more()


def test_abstract_namespace_socket_receives_messages_when_the_address_starts_with_at(
    abstract_listener: Listener,
) -> None:
    notifier = notifier_for(abstract_listener)

    assert notifier.enabled is True
    assert notifier.ready() is True
    assert notifier.status("idle") is True
    assert abstract_listener.receive() == b"READY=1"
    assert abstract_listener.receive() == b"STATUS=idle"


@pytest.mark.parametrize(
    "environment",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "@"}, {"NOTIFY_SOCKET": "vsock:2:1234"}],
    ids=["unset", "empty", "bare-at", "unsupported-vsock"],
)
def test_notifier_without_a_usable_socket_is_disabled_and_every_call_returns_false(
    environment: dict[str, str],
) -> None:
    notifier = SystemdNotifier.from_environment(environment)

    assert notifier.enabled is False
    assert notifier.ready() is False
    assert notifier.status("idle") is False
    assert notifier.watchdog() is False
    assert notifier.reloading() is False
    assert notifier.stopping() is False
    assert notifier.send(X_CUSTOM="1") is False


def test_from_environment_reads_the_process_environment_when_given_none(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.notify_socket)

    notifier = SystemdNotifier.from_environment()

    assert notifier.ready() is True
    assert listener.receive() == b"READY=1"


def test_send_after_the_socket_file_is_removed_returns_false_without_raising(
    listener: Listener,
) -> None:
    notifier = notifier_for(listener)
    Path(listener.notify_socket).unlink()

    assert notifier.watchdog() is False
    assert notifier.stopping() is False


def test_send_when_nobody_listens_on_the_socket_file_returns_false_without_raising(
    socket_directory: Path,
) -> None:
    path = socket_directory / "closed.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
    # The file is left behind with no socket bound to it: sends are refused.
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(path)})

    assert notifier.enabled is True
    assert notifier.ready() is False


def test_concurrent_senders_each_deliver_whole_datagrams(listener: Listener) -> None:
    notifier = notifier_for(listener)
    sender_count = 8
    messages_per_sender = 25
    results: list[bool] = []
    results_lock = threading.Lock()

    def send_many(sender_index: int) -> None:
        for message_index in range(messages_per_sender):
            sent = notifier.status(f"sender {sender_index} message {message_index}")
            with results_lock:
                results.append(sent)

    senders = [threading.Thread(target=send_many, args=(index,)) for index in range(sender_count)]
    for sender in senders:
        sender.start()
    # Read while they send: the kernel queue for a datagram socket is short,
    # so the senders block until this drains it.
    received = {listener.receive() for _ in range(sender_count * messages_per_sender)}
    for sender in senders:
        sender.join()

    assert results == [True] * (sender_count * messages_per_sender)
    assert received == {
        f"STATUS=sender {sender_index} message {message_index}".encode()
        for sender_index in range(sender_count)
        for message_index in range(messages_per_sender)
    }


@pytest.mark.parametrize(
    ("watchdog_environment", "expected_seconds"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "3000000"}, 1.5),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
    ],
    ids=[
        "no-watchdog",
        "usec-only",
        "pid-is-this-process",
        "pid-is-another-process",
        "fractional-seconds",
        "malformed-pid",
        "malformed-usec",
        "zero-usec",
        "pid-without-usec",
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process_only(
    listener: Listener,
    watchdog_environment: dict[str, str],
    expected_seconds: float | None,
) -> None:
    notifier = notifier_for(listener, **watchdog_environment)

    assert notifier.watchdog_interval_seconds() == expected_seconds


def test_watchdog_interval_is_none_when_there_is_no_socket_to_ping() -> None:
    notifier = SystemdNotifier.from_environment({"WATCHDOG_USEC": "120000000"})

    assert notifier.watchdog_interval_seconds() is None

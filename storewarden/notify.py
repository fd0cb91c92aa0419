"""The systemd notify protocol, spoken directly on $NOTIFY_SOCKET.

systemd hands a ``Type=notify`` service the address of a unix datagram socket
in ``NOTIFY_SOCKET``; the service reports its state by sending newline
separated ``KEY=VALUE`` assignments to it (sd_notify(3)). That is a few lines
of ``socket`` code, so storewarden speaks it itself rather than depend on
python-systemd, which needs libsystemd headers to install.

Sending never raises into the caller: a daemon must not die because the
manager went away (systemd re-executing itself, or the daemon run by hand
with a stale variable). Each send reports success as a bool and is otherwise
silent; nothing is logged, because a missing socket is normal outside
systemd and would only add noise to the audit trail.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

_MICROSECONDS_PER_SECOND = 1_000_000


def _socket_address(notify_socket: str) -> str | None:
    """Given the value of $NOTIFY_SOCKET, return the address to pass to
    ``sendto``, or None if it names nothing storewarden can send to.

    A leading '@' means the Linux abstract namespace, spelled with a leading
    NUL byte in the socket API. Anything other than an absolute path or '@'
    (such as the ``vsock:`` addresses of newer systemd) is not supported and
    turns notification off rather than failing at every send.
    """
    if notify_socket.startswith("@") and len(notify_socket) > 1:
        return "\0" + notify_socket[1:]
    if notify_socket.startswith("/"):
        return notify_socket
    return None


def _positive_integer(text: str | None) -> int | None:
    """Given an environment value, return it as a positive int, or None if it
    is absent, not a decimal integer, or not positive."""
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value > 0 else None


class SystemdNotifier:
    """Sends state changes to the service manager that started this process.

    Thread-safe: it holds no mutable state, and every send opens, uses and
    closes its own socket, so the scheduler thread can ping the watchdog
    while the main thread reports a reload. Datagrams are delivered whole, so
    concurrent messages never interleave.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_microseconds: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        """Given the socket address to send to (None for a notifier that
        does nothing), the watchdog timeout in microseconds and the process
        id the watchdog is meant for (both None if unset), build a notifier.

        Most callers want ``from_environment``; this exists so the parts can
        be given directly.
        """
        self._address = address
        self._watchdog_microseconds = watchdog_microseconds
        self._watchdog_pid = watchdog_pid

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Given an environment (``os.environ`` if None), return a notifier
        for the socket in NOTIFY_SOCKET, or one that does nothing when the
        variable is unset, empty or not a unix socket address.

        WATCHDOG_USEC and WATCHDOG_PID are read here too; a malformed value
        in either turns the watchdog off, as sd_watchdog_enabled(3) does.
        """
        environment = os.environ if environ is None else environ
        notify_socket = environment.get("NOTIFY_SOCKET", "")
        watchdog_microseconds = _positive_integer(environment.get("WATCHDOG_USEC"))
        watchdog_pid_text = environment.get("WATCHDOG_PID")
        watchdog_pid = _positive_integer(watchdog_pid_text)
        if watchdog_pid_text is not None and watchdog_pid is None:
            # A PID that cannot be read cannot be shown to be ours.
            watchdog_microseconds = None
        return cls(
            _socket_address(notify_socket) if notify_socket else None,
            watchdog_microseconds=watchdog_microseconds,
            watchdog_pid=watchdog_pid,
        )

    @property
    def enabled(self) -> bool:
        """Return True if there is a socket to send to."""
        return self._address is not None

    def watchdog_interval_seconds(self) -> float | None:
        """Return how often to call ``watchdog()``, in seconds: half of
        WATCHDOG_USEC, the margin sd_watchdog_enabled(3) recommends. Return
        None if notification is off, WATCHDOG_USEC is unset, or WATCHDOG_PID
        is set and names another process (the variables were inherited from a
        parent that the watchdog is really for).
        """
        if not self.enabled or self._watchdog_microseconds is None:
            return None
        # Compared at call time, not construction time, so a notifier built
        # before a fork does not make the child ping for its parent.
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_microseconds / 2 / _MICROSECONDS_PER_SECOND

    def send(self, **fields: str | int) -> bool:
        """Given assignments such as ``READY=1``, send them as one datagram
        and return True if it was handed to the socket; return False if
        notification is off or the send failed for any OS reason (socket
        removed, nobody listening, buffer full). Raise ValueError if no field
        is given, or a name or value would break the line-based protocol
        (a name empty or containing '=', or either containing a newline or a NUL
        byte, which systemd rejects): that is a bug in the caller,
        not a runtime condition.
        """
        message = _encode(fields)
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
                sender.sendto(message, self._address)
        except OSError:
            return False
        return True

    def ready(self) -> bool:
        """Tell the manager start-up (or a reload) has finished; return
        whether the message was sent."""
        return self.send(READY=1)

    def status(self, text: str) -> bool:
        """Given a one-line human description of what the daemon is doing,
        show it in ``systemctl status``; return whether it was sent. Line
        breaks in the text are turned into spaces and NUL bytes dropped, so
        that any text is safe.
        """
        return self.send(STATUS=" ".join(text.replace("\0", "").splitlines()))

    def watchdog(self) -> bool:
        """Tell the manager the daemon is alive, resetting the WatchdogSec=
        timer; return whether the message was sent."""
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        """Tell the manager a configuration reload has begun; return whether
        the message was sent. Call ``ready()`` when the reload is done.

        The CLOCK_MONOTONIC timestamp in microseconds is what systemd's
        ``Type=notify-reload`` requires to match the message to the reload
        request; plain ``Type=notify`` accepts and ignores it.
        """
        monotonic_microseconds = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_microseconds)

    def stopping(self) -> bool:
        """Tell the manager the daemon has begun shutting down; return
        whether the message was sent."""
        return self.send(STOPPING=1)


def _encode(fields: Mapping[str, str | int]) -> bytes:
    """Given notification fields, return the datagram: one ``NAME=value``
    line each, in the order given; raise ValueError if there are none or one
    cannot be written as a single line."""
    if not fields:
        raise ValueError("a notification needs at least one field")
    lines = []
    for name, value in fields.items():
        text = str(value)
        if (
            not name
            or "=" in name
            or any(forbidden in part for forbidden in ("\n", "\0") for part in (name, text))
        ):
            raise ValueError(
                f"notification field {name!r}={text!r} is not a single NAME=value line"
            )
        lines.append(f"{name}={text}")
    return "\n".join(lines).encode()

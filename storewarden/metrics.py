"""Prometheus metrics of one daemon: an HTTP endpoint and a node_exporter textfile.

Each :class:`Metrics` holds its own ``CollectorRegistry``, never the
process-global one: several daemons may run in one process (the tests do),
and each store's series must stay its own. Every sample carries a ``store``
label, so several wardens' textfiles can share node_exporter's directory. The daemon calls
:meth:`Metrics.observe` after every check (with the cycle's result when a
cycle ran) and :meth:`Metrics.publish` to write the textfile; the series are
listed in docs/operations.md.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from storewarden import __version__, durable, policy
from storewarden.logs import get_logger
from storewarden.store import VersionRecord
from storewarden.usage import Usage

if TYPE_CHECKING:
    from storewarden.config import Config
    from storewarden.engine import CycleResult
    from storewarden.forecast import Forecast

# Label values exported from the start (at 0), so rate() and alerts see them before
# the first removal or error rather than only after it.
REMOVAL_REASONS = (
    *policy.TRIGGERS,
    policy.MAX_VERSIONS,
    policy.MAX_AGE,
    policy.ABANDONED,
    policy.EXPLICIT,
)
PROTECTION_REASONS = policy.PROTECTIONS
# The error-level audit events the daemon counts, by name.
ERROR_EVENTS = ("removal_failed", "check_failed", "config_rejected", "metrics_failed")
# A prune takes milliseconds on a small store and minutes when it deletes many GiB.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
TEXTFILE_MODE = 0o644  # node_exporter runs as another user; the daemon's umask may be 0077


def totals(records: Iterable[VersionRecord]) -> tuple[dict[str, int], dict[str, int]]:
    """Return bytes and versions per kind of ``records`` (the index keeps these running)."""
    total_bytes: Tally[str] = Tally()
    total_versions: Tally[str] = Tally()
    for record in records:
        total_bytes[record.kind] += record.bytes
        total_versions[record.kind] += 1
    return dict(total_bytes), dict(total_versions)


class StoreLabelled(Collector):
    """The series of a registry, each sample labelled with the store it describes.

    node_exporter merges every ``*.prom`` file of its directory into one
    scrape: two wardens (``storewarden@NAME``) writing the same series
    without a distinguishing label would make it fail.
    """

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source
        self.store = ""

    def collect(self) -> Iterator[Metric]:
        """Yield each family of the source with ``store`` added to every sample's labels."""
        for family in self.source.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [
                sample._replace(labels={"store": self.store, **sample.labels})
                for sample in family.samples
            ]
            yield labelled


class Metrics:
    """The series of one daemon, in a registry of its own, exposed with a ``store`` label."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self._labelled = StoreLabelled(self.registry)
        self.exposed = CollectorRegistry(auto_describe=False)
        self.exposed.register(self._labelled)
        self.log = get_logger()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._textfile_error: str | None = None
        self._kinds: tuple[str, ...] = ()
        self._target: policy.Target | None = None
        registry = self.registry
        self.info = Info("storewarden", "The daemon and its version.", registry=registry)
        self.store_bytes = Gauge(
            "storewarden_store_bytes",
            "Bytes on disk of the store's versions, by kind (from the daemon's index).",
            ["kind"],
            registry=registry,
        )
        self.store_versions = Gauge(
            "storewarden_store_versions",
            "Version directories in the store, complete or not, by kind.",
            ["kind"],
            registry=registry,
        )
        self.used_ratio = Gauge(
            "storewarden_filesystem_used_ratio",
            "Used fraction (0-1) of the store's filesystem, used / (used + free) as df shows it.",
            registry=registry,
        )
        self.free_bytes = Gauge(
            "storewarden_filesystem_free_bytes",
            "Bytes free for unprivileged users on the store's filesystem.",
            registry=registry,
        )
        self.size_bytes = Gauge(
            "storewarden_filesystem_size_bytes",
            "Total size of the store's filesystem.",
            registry=registry,
        )
        self.removals = Counter(
            "storewarden_removals",
            "Versions the daemon's prune cycles removed, by reason.",
            ["reason"],
            registry=registry,
        )
        self.bytes_freed = Counter(
            "storewarden_bytes_freed",
            "Bytes freed by the daemon's removals, by reason.",
            ["reason"],
            registry=registry,
        )
        self.protected = Gauge(
            "storewarden_protected_versions",
            "Versions the last plan kept, by reason (a version with two reasons counts in both).",
            ["reason"],
            registry=registry,
        )
        self.errors = Counter(
            "storewarden_errors",
            "Error events the daemon logged, by event name.",
            ["event"],
            registry=registry,
        )
        self.last_check = Gauge(
            "storewarden_last_check_timestamp_seconds",
            "When the last check finished (seconds since the epoch).",
            registry=registry,
        )
        self.last_prune = Gauge(
            "storewarden_last_prune_timestamp_seconds",
            "When the last prune cycle finished (seconds since the epoch; 0: none yet).",
            registry=registry,
        )
        self.target_reached = Gauge(
            "storewarden_last_prune_target_reached",
            "0 if the last prune fell short of its target and usage is still above it, else 1.",
            registry=registry,
        )
        self.shortfall = Gauge(
            "storewarden_last_prune_shortfall_bytes",
            "Bytes the last prune cycle still had to free to reach its target.",
            registry=registry,
        )
        self.protected_bytes = Gauge(
            "storewarden_protected_bytes",
            "Bytes on disk of the versions the last plan kept (each version once).",
            registry=registry,
        )
        self.high_mark = Gauge(
            "storewarden_high_mark_ratio",
            "trigger.high_percent as a fraction (0-1): the used ratio at which a prune starts.",
            registry=registry,
        )
        self.pins_unreadable = Gauge(
            "storewarden_pins_unreadable",
            "1 if the last plan could not read the pins file and so kept every version, else 0.",
            registry=registry,
        )
        self.quarantined = Gauge(
            "storewarden_quarantined_versions",
            "Versions whose removal kept failing, set aside for a while (storewarden status).",
            registry=registry,
        )
        self.watches = Gauge(
            "storewarden_watches",
            "Inotify watches the daemon holds: root, kinds, names and settling versions.",
            registry=registry,
        )
        self.watch_failures = Counter(
            "storewarden_watch_failures",
            "Directories the watcher could not watch (watch limit, permissions): left to polling"
            " at each check and to reconcile.",
            registry=registry,
        )
        self._watch_failures = 0
        self._watch_failures_lock = threading.Lock()
        self.duration = Histogram(
            "storewarden_prune_duration_seconds",
            "How long prune cycles took.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.high_mark_eta = Gauge(
            "storewarden_high_mark_eta_seconds",
            "Seconds until the store's gross writes reach the high mark (NaN: no forecast).",
            registry=registry,
        )
        self.disk_full_eta = Gauge(
            "storewarden_disk_full_eta_seconds",
            "Seconds until the disk is full if nothing were removed (NaN: no forecast).",
            registry=registry,
        )
        self.protected_eta = Gauge(
            "storewarden_protected_high_mark_eta_seconds",
            "Seconds until protected versions alone reach the high mark (NaN: none foreseen).",
            registry=registry,
        )
        self.write_rate = Gauge(
            "storewarden_gross_write_rate_bytes_per_day",
            "Bytes written to the store per day, gross (Theil-Sen over the history; NaN: unknown).",
            registry=registry,
        )
        self.observe_forecast(None)
        self.target_reached.set(1)
        for reason in REMOVAL_REASONS:
            self.removals.labels(reason=reason)
            self.bytes_freed.labels(reason=reason)
        for reason in PROTECTION_REASONS:
            self.protected.labels(reason=reason)
        for event in ERROR_EVENTS:
            self.errors.labels(event=event)

    # -- observing ----------------------------------------------------------------------

    def configure(self, config: Config) -> None:
        """Set the daemon's info and the store's kinds (at start and after a reload)."""
        self.info.info({"version": __version__})
        self._labelled.store = str(config.store)
        self.store_bytes.clear()
        self.store_versions.clear()
        self._kinds = config.kinds
        self._target = policy.target_of(config)
        self.high_mark.set(config.trigger.high_percent / 100)
        for kind in config.kinds:
            self.store_bytes.labels(kind=kind)
            self.store_versions.labels(kind=kind)

    def observe(
        self,
        bytes_by_kind: Mapping[str, int],
        versions_by_kind: Mapping[str, int],
        usage: Usage,
        result: CycleResult | None = None,
        quarantined: int | None = None,
        pins_unreadable: bool | None = None,
    ) -> None:
        """Given the store's totals per kind, the usage and the check's cycle, update series.

        ``quarantined`` and ``pins_unreadable`` are left as they were when None
        (a check that made no plan learnt nothing new about them).

        The totals are the index's running sums: a check reads them in O(1)
        however many versions the store holds.
        """
        for kind in {*bytes_by_kind, *versions_by_kind, *self._kinds}:
            self.store_bytes.labels(kind=kind).set(bytes_by_kind.get(kind, 0))
            self.store_versions.labels(kind=kind).set(versions_by_kind.get(kind, 0))
        capacity = usage.used + usage.free
        self.used_ratio.set(usage.used / capacity if capacity else 0.0)
        self.free_bytes.set(usage.free)
        self.size_bytes.set(usage.total)
        if result is not None:
            self._observe_cycle(result)
        if quarantined is not None:
            self.quarantined.set(quarantined)
        if pins_unreadable is not None:
            self.pins_unreadable.set(1 if pins_unreadable else 0)
        if self._target is not None and self._target.holds(usage):
            # Back under the target, by a prune or by anyone freeing space: a missed
            # target is no longer a problem, and an alert on it must clear.
            self.target_reached.set(1)
            self.shortfall.set(0)
        self.last_check.set(self.clock())

    def _observe_cycle(self, result: CycleResult) -> None:
        plan = result.plan
        protected: Tally[str] = Tally(
            reason for kept in plan.kept for reason in dict.fromkeys(kept.reasons)
        )
        for reason in {*PROTECTION_REASONS, *protected}:
            self.protected.labels(reason=reason).set(protected[reason])
        self.protected_bytes.set(sum(kept.version.bytes for kept in plan.kept))
        if not plan.removals and not plan.triggers:
            return  # nothing to do: the engine logged no prune either
        if not result.dry_run:
            reasons = {
                removal.version.path: removal.reason for removal in (*plan.removals, *plan.reserve)
            }
            for outcome in result.removed:
                reason = reasons.get(outcome.record.path, "unknown")
                self.removals.labels(reason=reason).inc()
                self.bytes_freed.labels(reason=reason).inc(outcome.bytes_freed)
        if result.failed:
            self.errors.labels(event="removal_failed").inc(len(result.failed))
        self.duration.observe(result.seconds)
        self.last_prune.set(self.clock())
        self.target_reached.set(1 if result.target_reached else 0)
        self.shortfall.set(result.shortfall_bytes)

    def observe_forecast(self, forecast: Forecast | None) -> None:
        """Set the forecast's series; an unknown value is NaN, which no alert threshold matches."""
        nan = float("nan")

        def value(number: float | None) -> float:
            return nan if number is None else number

        self.high_mark_eta.set(value(forecast.high_mark_seconds if forecast else None))
        self.disk_full_eta.set(value(forecast.disk_full_seconds if forecast else None))
        self.protected_eta.set(value(forecast.protected_high_mark_seconds if forecast else None))
        self.write_rate.set(value(forecast.rate_bytes_per_day if forecast else None))

    def count_error(self, event: str) -> None:
        """Count one error-level audit event (``check_failed``, ``config_rejected``, ...)."""
        self.errors.labels(event=event).inc()

    def count_watch_failure(self) -> int:
        """Count one directory the watcher could not watch; return how many so far."""
        with self._watch_failures_lock:
            self._watch_failures += 1
            self.watch_failures.inc()
            return self._watch_failures

    def observe_watches(self, count: int) -> None:
        """Record how many inotify watches the daemon holds."""
        self.watches.set(count)

    def exposition(self) -> bytes:
        """Return the series in Prometheus's text format, as the endpoint serves them."""
        return generate_latest(self.exposed)

    # -- the endpoint -------------------------------------------------------------------

    def start(self, config: Config) -> None:
        """Apply ``config`` and serve ``metrics.port`` if set; log and carry on if it cannot.

        A warden that cannot serve its metrics still protects the disk: the
        failure is logged as ``metrics_failed`` and the scrape target goes down.
        """
        self.configure(config)
        settings = config.metrics
        if settings.port is None:
            return
        try:
            server, thread = start_http_server(
                settings.port, addr=settings.address, registry=self.exposed
            )
        except OSError as error:
            self.count_error("metrics_failed")
            self.log.error(
                "metrics_failed",
                target=f"http://{settings.address}:{settings.port}/metrics",
                error=f"{type(error).__name__}: {error}",
            )
            return
        self._server, self._thread = server, thread
        self.log.info("metrics_listening", address=settings.address, port=self.port)

    @property
    def port(self) -> int | None:
        """Return the port the endpoint listens on (None when it is not served)."""
        return self._server.server_port if self._server is not None else None

    def stop(self) -> None:
        """Stop serving (closing the socket) and wait for the server thread."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # -- the textfile -------------------------------------------------------------------

    def publish(self, textfile: Path | None) -> None:
        """Write the textfile if one is configured; log a failure once, count every one."""
        if textfile is None:
            return
        try:
            write_textfile(textfile, self.exposition())
        except OSError as error:
            self.count_error("metrics_failed")
            message = f"{type(error).__name__}: {error.strerror or error}"
            if message != self._textfile_error:  # once per cause, not once a minute
                self.log.error("metrics_failed", target=str(textfile), error=message)
            self._textfile_error = message
        else:
            self._textfile_error = None


def write_textfile(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` atomically, readable by node_exporter's user.

    The content goes to a hidden temporary file in the same directory (not
    ``*.prom``, so the collector never reads it), is flushed to disk and
    renamed over ``path``: a reader sees the old file or the new one, never
    half of one. Unlike prometheus_client's ``write_to_textfile`` (atomic
    too), the file is made world-readable whatever the umask: under systemd
    the daemon's ``UMask=0077`` would hide it from node_exporter.
    Raise OSError (the temporary file removed) if it cannot be written.
    """
    durable.replace_file(path, content, TEXTFILE_MODE)

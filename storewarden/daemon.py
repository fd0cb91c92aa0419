"""The daemon: watcher + scheduler around the engine's one prune cycle.

Wiring only. Watcher events (inotify, or a watchdog observer) mark what
changed and bring the next check forward; the APScheduler check job
refreshes the index from those marks, measures usage and, when a trigger
holds (or retention is due), runs
:meth:`Engine.cycle` -- the same function ``storewarden prune`` calls.
A reconcile job rescans the store and corrects the index.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import gc
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from storewarden import __version__, policy
from storewarden import forecast as forecasting
from storewarden.archive import UnsafeArchiveDirError
from storewarden.config import Config, ConfigError, human_bytes, load_config
from storewarden.engine import CycleResult, Engine, PreflightError
from storewarden.index import Change, Index
from storewarden.layout import LayoutError
from storewarden.logs import LogFileError, get_logger
from storewarden.metrics import Metrics
from storewarden.notify import SystemdNotifier
from storewarden.prune import StoreBusyError, UnsafeStateDirError
from storewarden.usage import Usage
from storewarden.watcher import (
    ChangeRecorder,
    InotifyWatcher,
    NoWatcher,
    ObserverWatcher,
    PollingWatcher,
    Watcher,
    make_observer,
)

EXIT_OK = 0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(
            ctypes.util.find_library("c") or "libc.so.6"
        ).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: nothing to trim with
    return trim


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Return the memory a full census freed to the system.

    A census of 50,000 versions allocates tens of MB of short-lived objects
    (the cache file, directory listings); glibc keeps those pages unless asked.
    """
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


class Daemon:
    """One store's warden process. ``run()`` blocks until ``stop()`` (SIGTERM/SIGINT)."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        store_override: Path | None = None,
        notifier: SystemdNotifier | None = None,
        engine_factory: Callable[[Config], Engine] = Engine,
        on_reload: Callable[[Config], None] = lambda _config: None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.store_override = store_override
        self.notifier = notifier or SystemdNotifier.from_environment()
        self.engine_factory = engine_factory
        self.on_reload = on_reload
        self.log = get_logger()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.ready = threading.Event()
        self._mutex = threading.RLock()
        self._early_check_pending = threading.Event()
        self._plan_due = True
        self._engine: Engine | None = None
        self._index: Index | None = None
        self._recorder: ChangeRecorder | None = None
        self._watcher: Watcher | None = None
        self._scheduler: BackgroundScheduler | None = None
        self.last_result: CycleResult | None = None
        self.last_status = ""
        self.protected_bytes: int | None = None
        self.forecast: forecasting.Forecast | None = None
        self._warned: set[str] = set()
        self._flows_at: tuple[int, int] | None = None
        self.metrics = Metrics()

    # -- public ---------------------------------------------------------------------

    def stop(self, signal_name: str = "stop") -> None:
        """Ask the daemon to stop after the removal in progress."""
        self._stop_signal = signal_name
        self.stop_requested.set()

    def request_reload(self) -> None:
        """Ask the daemon to reload its config (SIGHUP)."""
        self.reload_requested.set()

    @property
    def index(self) -> Index | None:
        """Return the live index (for tests and status)."""
        return self._index

    @property
    def watcher(self) -> Watcher | None:
        """Return the running watcher (for tests and benchmarks)."""
        return self._watcher

    def run(self) -> int:
        """Run until stopped; return the process exit code."""
        self._stop_signal = "stop"
        self.log.info(
            "daemon_started",
            pid=os.getpid(),
            config=str(self.config_path) if self.config_path else None,
            version=__version__,
        )
        try:
            while not self.stop_requested.is_set():
                if not self._wait_for_store():
                    break
                self._start()
                while not self.stop_requested.wait(1.0):  # signals wake it; reload waits <= 1 s
                    if self.reload_requested.is_set():
                        self.reload_requested.clear()
                        self._reload()
                break
        finally:
            self._shutdown()
            self.notifier.stopping()
            self.log.info("daemon_stopped", signal=self._stop_signal)
        return EXIT_OK

    # -- lifecycle ------------------------------------------------------------------

    def _wait_for_store(self) -> bool:
        """Wait until the store exists; return False if stopped first."""
        root = self.config.store
        if root.is_dir():
            return True
        self.log.warning("store_missing", path=str(root))
        self.notifier.status(f"waiting for the store {root} to appear")
        self.ready.set()  # ready, if idle: systemd must not time the start out
        self.notifier.ready()
        while not self.stop_requested.wait(1.0):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload_config_only()
                root = self.config.store
            if root.is_dir():
                self.log.info("store_appeared", path=str(root))
                return True
        return False

    def _start(self) -> None:
        """Lock, recover, census, start the observer and the scheduler, report ready."""
        started = time.monotonic()
        engine = self.engine_factory(self.config)
        engine.preflight()
        snapshot = None
        try:
            with engine.lock.held(wait=30.0):
                snapshot = engine.recover().snapshot
        except StoreBusyError:
            self.log.warning("prune_skipped", reason="locked by another warden; recovery deferred")
        index = Index(engine.root, self.config.kinds)
        # Recovery's own census serves the index unless recovery changed the store:
        # a second census of 50,000 versions would double the start's time and peak memory.
        index.load(snapshot if snapshot is not None else engine.census())
        del snapshot  # the index holds the records; the snapshot's tuples need not live on
        self._flows_at = None  # a new index: its first sample works its flows out afresh
        release_memory()
        self._engine, self._index = engine, index
        self._recorder = ChangeRecorder(index, self._on_change)
        self._watcher = self._start_watcher(engine.root)
        self._watcher.resync(index, datetime.now(tz=UTC))
        self._scheduler = self._start_scheduler()
        self.metrics.start(self.config)
        self.ready.set()
        self.notifier.ready()
        self.log.info(
            "daemon_ready",
            versions=len(index.versions),
            store_bytes=index.store_bytes,
            seconds=round(time.monotonic() - started, 3),
            observer=self._watcher.name,
        )
        self._request_check(0.0)

    def _start_watcher(self, root: Path) -> Watcher:
        """Start the configured watcher, or the next best one; never raise.

        Inotify (``auto`` or ``inotify`` on Linux) needs watches on the root
        and the kind directories only; if even those are refused (the watch
        or instance limit), polling (``schedule.observer: polling`` chooses
        it outright); if even the root cannot be read, no watcher at all:
        checks on schedule and the reconcile job. The reconcile job corrects
        whatever a switch missed.
        """
        recorder = self._recorder
        if recorder is None:
            raise RuntimeError("the change recorder must exist before the watcher")
        kinds = recorder.index.watched_kinds
        chosen = self.config.schedule.observer
        if chosen != "polling":
            try:
                watcher: Watcher = self._inotify_watcher(recorder, root, kinds)
                watcher.start()
            except OSError as error:
                if chosen == "auto" and error.errno == errno.ENOSYS:
                    watcher = ObserverWatcher(make_observer(), recorder, root, kinds)
                else:
                    self._degraded("polling", error)
                    watcher = self._polling_watcher(recorder, root, kinds)
            else:
                return watcher
        else:
            watcher = self._polling_watcher(recorder, root, kinds)
        try:
            watcher.start()
        except (OSError, RecursionError) as error:
            self._degraded("reconcile only", error)
            return NoWatcher()
        return watcher

    def _polling_watcher(
        self, recorder: ChangeRecorder, root: Path, kinds: tuple[str, ...]
    ) -> PollingWatcher:
        """Return a polling watcher of the store (not started)."""
        return PollingWatcher(
            recorder,
            root,
            kinds,
            settle=lambda kind, name: policy.effective(self.config, kind, name).settle,
            interval=self.config.schedule.poll_interval,
        )

    def _inotify_watcher(
        self, recorder: ChangeRecorder, root: Path, kinds: tuple[str, ...]
    ) -> InotifyWatcher:
        """Return an inotify watcher of the store (not started); raise OSError without inotify."""
        return InotifyWatcher(
            recorder,
            root,
            kinds,
            settle=lambda kind, name: policy.effective(self.config, kind, name).settle,
            on_failure=self._watch_failed,
            on_overflow=self._events_lost,
        )

    def _events_lost(self) -> None:
        """The kernel's event queue overflowed: what changed is unknown, so rescan now."""
        self._request_job("reconcile", 0.0)

    def _watch_failed(self, path: str, error: OSError) -> None:
        """A directory could not be watched: say so once, count it (reconcile covers it)."""
        failures = self.metrics.count_watch_failure()
        self.log.warning(
            "watch_failed",
            path=path,
            error=f"{errno.errorcode.get(error.errno or 0, 'OSError')}: {error.strerror}",
            failures=failures,
        )

    def _degraded(self, observer: str, error: BaseException) -> None:
        self.log.warning(
            "observer_degraded", observer=observer, error=f"{type(error).__name__}: {error}"
        )

    def _start_scheduler(self) -> BackgroundScheduler:
        schedule = self.config.schedule
        scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        scheduler.add_job(
            self._scheduled_check,
            "interval",
            seconds=schedule.check_interval,
            id="check",
            name="check",
        )
        scheduler.add_job(
            self.reconcile,
            "interval",
            seconds=schedule.reconcile_interval,
            id="reconcile",
            name="reconcile",
        )
        interval = self.notifier.watchdog_interval_seconds()
        if interval:
            scheduler.add_job(self.notifier.watchdog, "interval", seconds=interval, id="watchdog")
        scheduler.start()
        return scheduler

    def _shutdown(self) -> None:
        """Stop the scheduler (waiting for a running job), the observer and the metrics."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        self.metrics.stop()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def _reload_config_only(self) -> bool:
        """Load the config again and make every check a start makes; keep the old one on failure.

        A config that loads but could not run (a state directory on another
        filesystem, an archive.dir that cannot be made...) is rejected here,
        as ``storewarden check`` rejects it, rather than stopping the daemon.
        """
        try:
            config = load_config(self.config_path, store=self.store_override)
            self.engine_factory(config).preflight()
            # The log file is opened again here (logrotate's SIGHUP); if it cannot be,
            # the logging stays as it was.
            self.on_reload(config)
        except ConfigError as error:
            self._reject(error.problems)
            return False
        except (
            UnsafeStateDirError,
            UnsafeArchiveDirError,
            PreflightError,
            LayoutError,
            LogFileError,
            OSError,
        ) as error:
            self._reject([str(error)])
            return False
        self.config = config
        self.log.info("config_reloaded", config=str(self.config_path))
        return True

    def _reject(self, problems: list[str]) -> None:
        self.log.error("config_rejected", config=str(self.config_path), problems=problems)
        self.metrics.count_error("config_rejected")

    def _reload(self) -> None:
        """Reload the config (SIGHUP); keep the old one if the new one is invalid."""
        self.notifier.reloading()
        if self._reload_config_only():
            self._shutdown()
            if self._wait_for_store():
                self._start()
        else:
            self.notifier.ready()

    # -- jobs -----------------------------------------------------------------------

    def _on_change(self) -> None:
        """Called from the observer thread: bring the next check forward (debounced)."""
        self._plan_due = True
        if not self._early_check_pending.is_set():
            self._early_check_pending.set()
            self._request_check(self.config.schedule.debounce)

    def _request_check(self, delay: float) -> None:
        if not self._request_job("check", delay):
            self._early_check_pending.clear()

    def _request_job(self, job: str, delay: float) -> bool:
        """Bring the job ``job`` forward to run in ``delay`` seconds; return whether it was."""
        scheduler = self._scheduler
        if scheduler is None:
            return False
        when = datetime.now(tz=UTC) + timedelta(seconds=delay)
        try:
            scheduler.modify_job(job, next_run_time=when)
        except (
            Exception
        ):  # broad on purpose: the scheduler may be shutting down; the interval job remains
            return False
        return True

    def _log_changes(self, changes: list[Change]) -> None:
        for change in changes:
            record = change.record
            if change.what == "added" and record is not None:
                self.log.info(
                    "version_added",
                    kind=record.kind,
                    name=record.name,
                    version=record.version,
                    bytes=record.bytes,
                )
            elif change.what == "gone" and record is not None:
                self.log.info(
                    "version_gone", kind=record.kind, name=record.name, version=record.version
                )
            elif change.what == "latest":
                self.log.info(
                    "latest_changed",
                    kind=change.kind,
                    name=change.name,
                    old=change.old,
                    new=change.new,
                    reason="observed",
                )

    def _scheduled_check(self) -> None:
        """Run the check job; after a plan, return the memory it freed to the system.

        A plan holds a record per version of the store. Freed, up to 2,000
        tuples of each size stay on the interpreter's free lists, one here and
        there in the pools the plan filled, and keep those pools from the
        system (6 MiB at 50,000 versions) until a full collection clears them.
        """
        planned = self.check() is not None
        if planned:
            release_memory()

    def check(self) -> CycleResult | None:
        """The check job: apply marked changes, measure, prune if a trigger holds or plan is due."""
        self._early_check_pending.clear()
        with self._mutex:
            engine, index, recorder = self._engine, self._index, self._recorder
            if engine is None or index is None or recorder is None:
                return None
            try:
                touched = recorder.drain()
                if touched:
                    self._log_changes(index.refresh(touched))
                if self._watcher is not None:
                    self._watcher.follow(index, touched, datetime.now(tz=UTC))
                    self.metrics.observe_watches(self._watcher.watch_count())
                usage = engine.usage(index.store_bytes)
                triggers = policy.triggers_holding(usage, self.config)
                self.log.debug(
                    "check", usage=usage.as_dict(), triggers=list(triggers), changed=len(touched)
                )
                result = None
                if triggers or self._plan_due:
                    self._plan_due = False
                    result = self._cycle(engine, index)
                self._report(usage.used_percent)
                if result is not None and result.removed:
                    usage = engine.usage(index.store_bytes)
                self.metrics.observe(
                    index.bytes_by_kind,
                    index.versions_by_kind,
                    usage,
                    result,
                    quarantined=len(engine.quarantined()) if result is not None else None,
                    pins_unreadable=engine.pins_unreadable if result is not None else None,
                )
                self._record_history(engine, index, usage)
            except Exception as error:  # broad on purpose: a failing check must not kill the job
                self.log.error("check_failed", error=f"{type(error).__name__}: {error}")
                self.metrics.count_error("check_failed")
                return None
            else:
                return result
            finally:
                self.metrics.publish(self.config.metrics.textfile)
                if recorder.pending():
                    self._request_check(self.config.schedule.debounce)

    def _record_history(self, engine: Engine, index: Index, usage: Usage) -> None:
        """Append this check's sample, forecast from the history, warn when a time is short."""
        # After this process's first sample, the index's running flows; the first works
        # them out from the versions' arrival (what came while no daemon ran).
        flows = None
        if self._flows_at is not None:
            flows = (index.written - self._flows_at[0], index.freed - self._flows_at[1])
        if engine.record_history(
            index.versions.values(), usage, protected=self.protected_bytes, flows=flows
        ):
            self._flows_at = (index.written, index.freed)
        self.forecast = forecasting.forecast(
            engine.history.load(), usage, self.config, protected_bytes=self.protected_bytes
        )
        self.metrics.observe_forecast(self.forecast)
        short = forecasting.warnings(self.forecast, self.config.alert.forecast_horizon)
        for eta, seconds in short.items():
            if eta in self._warned:
                continue  # once each time it falls under the horizon, not at every check
            self.log.warning(
                "forecast_warning",
                eta=eta,
                seconds=round(seconds, 1),
                horizon_seconds=self.config.alert.forecast_horizon,
                rate_bytes_per_day=self.forecast.rate_bytes_per_day,
                protected_rate_bytes_per_day=self.forecast.protected_rate_bytes_per_day,
            )
        self._warned = set(short)

    def _cycle(self, engine: Engine, index: Index) -> CycleResult | None:
        try:
            result = engine.cycle(snapshot=index.snapshot(), should_stop=self.stop_requested.is_set)
        except StoreBusyError:
            self.log.info("prune_skipped", reason="store locked by another warden")
            return None
        for outcome in result.removed:
            index.forget(outcome.record.path)
            if outcome.pointer_old is not None:
                index.record_pointer(outcome.record.kind, outcome.record.name, outcome.pointer_new)
        if result.removed or result.would_remove or result.plan.triggers:
            self.last_result = result
        self.protected_bytes = sum(kept.version.bytes for kept in result.plan.kept)
        return result

    def reconcile(self) -> None:
        """The reconcile job: rescan the store and correct the index; log what was off."""
        with self._mutex:
            engine, index, recorder = self._engine, self._index, self._recorder
            if engine is None or index is None or recorder is None:
                return
            started = time.monotonic()
            try:
                recorder.drain()  # the census below sees everything these marks point at
                added, gone, changed = index.load(engine.census())
                release_memory()
                if self._watcher is not None:
                    self._watcher.resync(index, datetime.now(tz=UTC))
            except (
                Exception
            ) as error:  # broad on purpose: the store may vanish; the next run retries
                self.log.error("check_failed", error=f"reconcile: {type(error).__name__}: {error}")
                self.metrics.count_error("check_failed")
                return
            self._plan_due = True
            self.log.info(
                "reconcile_finished",
                added=added,
                gone=gone,
                changed=changed,
                seconds=round(time.monotonic() - started, 3),
            )
        self._request_check(0.0)

    def _report(self, used_percent: float) -> None:
        text = f"used {used_percent:.1f}%"
        index = self._index
        if index is not None:
            text += f", store {human_bytes(index.store_bytes)} in {len(index.versions)} versions"
        last = self.last_result
        if last is not None:
            text += (
                f"; last prune removed {len(last.removed)} ({human_bytes(last.bytes_freed)}),"
                f" target {'reached' if last.target_reached else 'NOT reached'}"
            )
        if text != self.last_status:
            self.last_status = text
            self.notifier.status(text)


def run_daemon(
    config: Config,
    *,
    config_path: Path | None,
    store_override: Path | None,
    on_reload: Callable[[Config], None],
) -> int:
    """Run the daemon in this process with SIGTERM/SIGINT/SIGHUP handlers; return the exit code."""
    daemon = Daemon(
        config, config_path=config_path, store_override=store_override, on_reload=on_reload
    )

    def on_stop(number: int, _frame: FrameType | None) -> None:
        daemon.stop(signal.Signals(number).name)

    def on_hangup(_number: int, _frame: FrameType | None) -> None:
        daemon.request_reload()

    previous: dict[signal.Signals, Any] = {}
    for number, handler in (
        (signal.SIGTERM, on_stop),
        (signal.SIGINT, on_stop),
        (signal.SIGHUP, on_hangup),
    ):
        previous[number] = signal.signal(number, handler)
    try:
        return daemon.run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)

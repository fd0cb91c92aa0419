"""SIGKILL a real `storewarden prune` at random moments, restart it, check the store each time.

Each trial generates a fresh store (bench/genstore.py: model names, bentos,
labels, plain-file pointers) beside a directory ``outside/`` that one version
links to (a symlink and a hard link), and records a checksum of every file.
It then runs ``python -m storewarden prune`` under a config that keeps it
pruning (``max_store_size`` far below the store, most protections off) and
SIGKILLs it after a random delay, one to three times in a row (a kill can land
in the recovery of the previous one), and finally lets a run finish. Then:

- every version left is complete and byte for byte what was generated;
- every ``latest`` names a remaining version, the newest by creation_time, in
  the form it had, or the name directory is gone with its last version;
- the trash and the temp directory are empty, nothing else appeared;
- nothing outside the store changed (the link targets included);
- no protected version (pinned, labelled, a rule's keep_latest/keep_last) went;
- every version that disappeared has a ``version_removed`` event (before the
  kill, or ``recovered`` from a restart), and none is claimed twice unmarked;
- BentoML's own ``bentoml.models.list()``, ``bentoml.bentos.list()`` and
  ``get("name:latest")`` succeed and agree.

Prints a table (and, with ``--each``, one row per trial)::

    python bench/crashloop.py --trials 200             # the figure in docs/reliability.md
    python bench/crashloop.py --trials 20 --seed 3 --each --keep

The reliability tests import this module and run a few trials of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checks live in tests/
from genstore import generate_store

from storewarden.logs import SchemaError, check_event
from tests.invariants import (
    RECOVERY_EVENTS,
    Baseline,
    ProtectSpec,
    capture,
    check_store,
    check_with_bentoml,
    present,
    removal_events,
)

# How many kills a trial makes before its last, uninterrupted run.
KILL_COUNTS = (1, 1, 1, 2, 2, 3)


# -- what the store held before the trial ---------------------------------------------


@dataclass
class Run:
    """One `storewarden prune` process: its events, and whether it was killed."""

    events: list[dict[str, Any]]
    exit_code: int | None
    killed: bool
    problems: list[str]

    def named(self, name: str) -> list[dict[str, Any]]:
        """Return the events called ``name``."""
        return [event for event in self.events if event["event"] == name]

    @property
    def phase(self) -> str:
        """Where a kill landed: start-up, recovery, pruning, or after the prune finished."""
        if self.named("prune_finished"):
            return "after"
        if self.named("prune_started"):
            return "pruning"
        recovering = [event for event in self.events if event["event"] in RECOVERY_EVENTS]
        recovering += [event for event in self.named("version_removed") if event.get("recovered")]
        return "recovery" if recovering else "start-up"


@dataclass(frozen=True)
class Kill:
    """When to SIGKILL a run: ``delay`` seconds after it starts, or, if ``per_removal`` is
    set, at ``fraction`` of the time its plan should take once it logs ``prune_started``
    (``planned`` removals of ``per_removal`` seconds each)."""

    delay: float = 0.0
    fraction: float = 0.0
    per_removal: float | None = None


def _wait_for_plan(process: subprocess.Popen[bytes], log: Path) -> int | None:
    """Poll ``log`` every millisecond for ``prune_started``; return its ``planned``.

    Return None if the run ends first.
    """
    while process.poll() is None:
        for line in log.read_text().splitlines():
            if '"event": "prune_started"' in line:
                return int(json.loads(line)["planned"])
        time.sleep(0.001)
    return None


def run_warden(config: Path, log: Path, kill: Kill | None, timeout: float = 300) -> Run:
    """Run `storewarden prune --config config`, SIGKILLed as ``kill`` says if set.

    Its JSON lines go to ``log`` (a file, so a child never blocks on a full pipe);
    every line that starts like JSON must parse and fit the audit schema.
    """
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "storewarden", "prune", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        killed = False
        delay = kill.delay if kill is not None else timeout
        if kill is not None and kill.per_removal is not None:
            planned = _wait_for_plan(process, log) or 0
            delay = kill.fraction * planned * kill.per_removal
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            if kill is None:
                process.kill()
                process.wait()
                return Run([], None, False, [f"prune did not finish in {timeout} s"])
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            killed = True
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
            check_event(event)
        except (json.JSONDecodeError, SchemaError) as error:
            problems.append(f"bad log line ({error}): {line[:200]}")
            continue
        events.append(event)
    code = None if killed else process.returncode
    if code not in (None, 0):
        problems.append(f"prune exited {code}: {log.read_text()[-600:]}")
    return Run(events, code, killed, problems)


# -- one trial ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The size of each trial's store."""

    names: int = 12
    versions: int = 8
    files: int = 3
    bytes: int = 4096
    bentos: int = 8


@dataclass
class Trial:
    """What one trial did and found."""

    index: int
    phases: list[str]
    removed: int
    recovered: int
    rolled_back: int
    bentoml_checked: bool
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        """Return how many runs were killed."""
        return len(self.phases)


def build_trial_store(directory: Path, seed: int, settings: Settings) -> tuple[Baseline, Path]:
    """Generate a store with an ``outside`` directory beside it; return its baseline and config."""
    root = directory / "bentoml"
    outside = directory / "outside"
    generated = generate_store(
        root,
        names=settings.names,
        versions_per_name=settings.versions,
        files_per_version=settings.files,
        bytes_per_file=settings.bytes,
        bentos=settings.bentos,
        seed=seed,
    )
    outside.mkdir()
    (outside / "target.bin").write_bytes(os.urandom(8192))
    (outside / "hard.bin").write_bytes(os.urandom(8192))
    names = sorted(name for kind, name in generated.versions if kind == "models")
    # The oldest version of an unprotected name links out of the store: the links go
    # with it, their targets stay.
    linked = generated.versions[("models", names[-1])][0].path
    os.symlink(outside / "target.bin", linked / "shared.bin")
    os.link(outside / "hard.bin", linked / "hard.bin")
    protect = ProtectSpec(pinned=(names[0],), kept_names=(names[1],))
    config = directory / "config.yaml"
    config.write_text(json.dumps(protect.config(root)))  # JSON is YAML
    return capture(root, outside, protect), config


def run_trial(
    directory: Path,
    index: int,
    rng: random.Random,
    settings: Settings,
    timing: Timing,
    *,
    with_bentoml: bool,
) -> Trial:
    """Kill the warden 1-3 times at random, let a last run finish, and check everything."""
    baseline, config = build_trial_store(directory, index, settings)
    runs: list[Run] = []
    for number in range(rng.choice(KILL_COUNTS)):
        run = run_warden(config, directory / f"run-{number}.log", timing.kill(rng))
        runs.append(run)
        if not run.killed:
            break
    runs.append(run_warden(config, directory / "run-last.log", None))
    events = [event for run in runs for event in run.events]
    problems = [problem for run in runs for problem in run.problems]
    problems += check_store(baseline, events)
    if with_bentoml:
        problems += check_with_bentoml([baseline])
    return Trial(
        index=index,
        phases=[run.phase for run in runs if run.killed],
        removed=len(baseline.versions)
        - sum(1 for key in baseline.versions if present(baseline, key)),
        recovered=sum(1 for event in removal_events(events) if event.get("recovered")),
        rolled_back=sum(1 for event in events if event["event"] == "removal_rolled_back"),
        bentoml_checked=with_bentoml,
        problems=problems,
    )


@dataclass(frozen=True)
class Timing:
    """When, in seconds after its start, an uninterrupted prune of a trial store did what.

    Python's start-up and imports take most of a small run, and vary more
    than the prune lasts; so most kills are timed from the ``prune_started``
    line instead (see :meth:`kill`).
    """

    pruning_from: float
    pruning_to: float
    exit: float

    removals: int

    def kill(self, rng: random.Random) -> Kill:
        """Return a random kill: one in four anywhere in the run, the rest while it prunes."""
        if rng.random() < 0.25:
            return Kill(delay=rng.uniform(0.0, self.exit))
        per_removal = (self.pruning_to - self.pruning_from) / max(1, self.removals)
        return Kill(fraction=rng.random(), per_removal=per_removal)


def calibrate(work: Path, settings: Settings, runs: int = 3) -> Timing:
    """Time uninterrupted prunes of trial stores (the fastest of ``runs``, the first is cold).

    Raise RuntimeError if an uninterrupted prune already breaks the store.
    """
    timings = []
    for number in range(runs):
        directory = work / f"calibration-{number}"
        directory.mkdir()
        baseline, config = build_trial_store(directory, number, settings)
        started_wall = time.time()
        started = time.monotonic()
        run = run_warden(config, directory / "run.log", None)
        seconds = time.monotonic() - started
        problems = run.problems + check_store(baseline, run.events)
        if problems:
            raise RuntimeError(
                "an uninterrupted prune already breaks the store: " + "; ".join(problems)
            )
        shutil.rmtree(directory)
        begun, ended = (
            min(seconds, max(0.0, moment - started_wall))
            for moment in (
                datetime.fromisoformat(run.named(name)[0]["timestamp"]).timestamp()
                for name in ("prune_started", "prune_finished")
            )
        )
        timings.append(Timing(begun, ended, seconds, len(run.named("version_removed"))))
    return min(timings, key=lambda timing: timing.exit)


@dataclass
class Summary:
    """Every trial of a run, with the calibrated timing of an uninterrupted prune."""

    trials: list[Trial]
    timing: Timing
    seconds: float

    @property
    def problems(self) -> list[str]:
        """Return every problem of every trial, prefixed with its trial."""
        return [
            f"trial {trial.index}: {problem}" for trial in self.trials for problem in trial.problems
        ]

    def phase_counts(self) -> Counter[str]:
        """Return how many kills landed in each phase."""
        return Counter(phase for trial in self.trials for phase in trial.phases)


def run_trials(
    work: Path,
    trials: int,
    *,
    seed: int = 0,
    settings: Settings | None = None,
    bentoml_every: int = 1,
    keep: bool = False,
) -> Summary:
    """Run ``trials`` trials under ``work``; BentoML reads every ``bentoml_every``-th store."""
    settings = settings or Settings()
    rng = random.Random(seed)
    started = time.monotonic()
    timing = calibrate(work, settings)
    results = []
    for index in range(1, trials + 1):
        directory = work / f"trial-{index:04d}"
        directory.mkdir()
        with_bentoml = bentoml_every > 0 and index % bentoml_every == 0
        trial = run_trial(directory, index, rng, settings, timing, with_bentoml=with_bentoml)
        results.append(trial)
        if not trial.problems and not keep:
            shutil.rmtree(directory)
    return Summary(results, timing, time.monotonic() - started)


# -- output -----------------------------------------------------------------------------------


def summary_rows(summary: Summary) -> list[tuple[str, str]]:
    """Return the summary table's rows."""
    phases = summary.phase_counts()
    trials = summary.trials
    checked = [trial for trial in trials if trial.bentoml_checked]
    return [
        ("trials", str(len(trials))),
        (
            "uninterrupted prune: start, prune_started, exit",
            f"0, {summary.timing.pruning_from:.2f}, {summary.timing.exit:.2f} s",
        ),
        ("SIGKILLs", str(sum(trial.kills for trial in trials))),
        ("  landed in start-up", str(phases["start-up"])),
        ("  landed in recovery of an earlier kill", str(phases["recovery"])),
        ("  landed while pruning", str(phases["pruning"])),
        ("  landed after the prune finished", str(phases["after"])),
        ("versions removed", str(sum(trial.removed for trial in trials))),
        ("removals completed by a restart", str(sum(trial.recovered for trial in trials))),
        ("removals rolled back by a restart", str(sum(trial.rolled_back for trial in trials))),
        (
            "BentoML list/get checks passed",
            f"{sum(1 for t in checked if not t.problems)}/{len(checked)}",
        ),
        ("trials with a violated invariant", str(sum(1 for trial in trials if trial.problems))),
        ("seconds", f"{summary.seconds:.0f}"),
    ]


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """Print rows as aligned columns."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trials, print the tables; return 1 if any invariant was violated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--names", type=int, default=Settings.names)
    parser.add_argument("--versions", type=int, default=Settings.versions)
    parser.add_argument("--bentos", type=int, default=Settings.bentos)
    parser.add_argument("--bentoml-every", type=int, default=1, help="0: never read with BentoML")
    parser.add_argument("--work", type=Path, help="directory for the trial stores (default: temp)")
    parser.add_argument("--each", action="store_true", help="print one row per trial")
    parser.add_argument("--keep", action="store_true", help="keep every trial store")
    arguments = parser.parse_args(argv)
    settings = Settings(names=arguments.names, versions=arguments.versions, bentos=arguments.bentos)
    with contextlib.ExitStack() as stack:
        work = arguments.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        summary = run_trials(
            work,
            arguments.trials,
            seed=arguments.seed,
            settings=settings,
            bentoml_every=arguments.bentoml_every,
            keep=arguments.keep,
        )
        if arguments.each:
            rows = [("trial", "kills landed in", "removed", "recovered", "rolled back", "ok")]
            rows += [
                (
                    str(trial.index),
                    ",".join(trial.phases),
                    str(trial.removed),
                    str(trial.recovered),
                    str(trial.rolled_back),
                    "yes" if not trial.problems else "NO",
                )
                for trial in summary.trials
            ]
            print_table(rows)
            print()
        print_table(summary_rows(summary))
        for problem in summary.problems:
            print(f"VIOLATION {problem}")
        if summary.problems and arguments.work is None:
            print("(rerun with --work DIR to keep the failing stores)")
    return 1 if summary.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Live progress of a running hunt, read from Orion's storage while `orion hunt` runs.

Why: a hunt runs for minutes to hours and `orion hunt` says nothing about how far it is, so the
terminal Snakemake runs in stayed silent and the log held only launcher lines. The hunt process
polls the experiment's trials through Orion's API (never from inside a trial) and prints
- one line per trial that ended, with its objective (the log keeps them all), and
- a `[progress] ` line (reprohunt.logged shows those on the terminal too) whenever the counts
  change: completed / budget, broken, the best objective so far and its trial, elapsed time,
  and the remaining time at the pace of the trials this run completed (none before the first).
The experiment is opened once (opening storage writes PickledDB's indexes); each poll then only
reads, holding PickledDB's lock just while the file loads.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from reprohunt.logged import PROGRESS_PREFIX

POLL_SECONDS = 5.0


def clock(seconds: float) -> str:
    """H:MM:SS, the way Orion shows durations."""
    return str(datetime.timedelta(seconds=round(seconds)))


def describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{key.lstrip('/')}={value}" for key, value in sorted(params.items()))


@dataclass
class Progress:
    """What one hunt process has seen of its experiment so far."""

    name: str
    max_trials: int
    started: float = field(default_factory=time.monotonic)
    seen: set[str] = field(default_factory=set)
    completed_at_start: int | None = None
    last_counts: tuple[int, int] | None = None

    def update(self, trials: list[Any]) -> list[str]:
        """The lines to print for this poll: ended trials, then the summary when it changed."""
        lines = []
        completed = [t for t in trials if t.status == "completed" and t.objective is not None]
        broken = [t for t in trials if t.status == "broken"]
        if self.completed_at_start is None:  # a resumed experiment: earlier trials set no pace
            self.completed_at_start = len(completed)
            self.seen = {t.id for t in completed + broken}
        for trial in sorted(completed + broken, key=lambda t: t.end_time or t.submit_time):
            if trial.id in self.seen:
                continue
            self.seen.add(trial.id)
            outcome = (
                f"objective {trial.objective.value:.6g}"
                if trial.status == "completed"
                else "broken"
            )
            lines.append(f"trial {trial.id[:8]} {outcome} ({describe(trial.params)})")
        counts = (len(completed), len(broken))
        if counts != self.last_counts:
            self.last_counts = counts
            lines.append(PROGRESS_PREFIX.decode() + self.summary(completed, len(broken)))
        return lines

    def summary(self, completed: list[Any], broken: int) -> str:
        elapsed = time.monotonic() - self.started
        done_here = len(completed) - (self.completed_at_start or 0)
        left = max(0, self.max_trials - len(completed))
        if left == 0:
            remaining = "done"
        elif done_here > 0:
            remaining = f"~{clock(elapsed / done_here * left)} left"
        else:
            remaining = "remaining time known after the first trial"
        best = min(completed, key=lambda t: t.objective.value) if completed else None
        best_text = (
            f"best {best.objective.value:.6g} (trial {best.id[:8]})" if best else "no best yet"
        )
        return (
            f"hunt {self.name}: {len(completed)}/{self.max_trials} trials completed, "
            f"{broken} broken, {best_text}, elapsed {clock(elapsed)}, {remaining}"
        )


class Poller:
    """Reads the experiment for a Progress, opening it once Orion has created it."""

    def __init__(self, progress: Progress, storage: dict[str, Any]) -> None:
        self.progress, self.storage = progress, storage
        self.experiment: Any = None

    def poll(self) -> bool:
        """Print what changed since the last poll; False while the experiment does not exist."""
        if self.experiment is None:
            from orion.client import get_experiment
            from orion.core.utils.exceptions import NoConfigurationError

            try:
                self.experiment = get_experiment(self.progress.name, storage=self.storage)
            except NoConfigurationError:
                return False
        for line in self.progress.update(self.experiment.fetch_trials(with_evc_tree=False)):
            print(line, flush=True)
        return True


@contextlib.contextmanager
def watching(
    name: str, storage: dict[str, Any], max_trials: int, every: float = POLL_SECONDS
) -> Iterator[None]:
    """Poll the experiment in a thread while the body runs, and once more at its end."""
    progress = Progress(name, max_trials)
    poller = Poller(progress, storage)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                poller.poll()
            except Exception as error:  # progress must never stop a hunt
                print(f"progress: could not read the experiment ({error})", flush=True)

    if not poller.poll():  # a new experiment: every trial is this run's
        progress.completed_at_start = 0
    thread = threading.Thread(target=loop, name="hunt-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poller.poll()

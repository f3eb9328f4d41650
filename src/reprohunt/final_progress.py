"""`[progress] ` lines of the final stage, one when a retrain starts and one when it ends.

Why: the final stage's runs take minutes each, several at once, and Snakemake shows only a job's
start and end. A run knows its arm and seed, and how many result files of this results folder
exist when it ends (final/<arm>/seed<S>/metrics.json); it does not know how many runs the
workflow asked for, so it says "N finished so far", not "N of M".
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from reprohunt.logged import PROGRESS_PREFIX

PREFIX = PROGRESS_PREFIX.decode()


def arm_and_seed(out: Path) -> str:
    """`tuned seed 1986` from final/tuned/seed1986/metrics.json."""
    return f"{out.parent.parent.name} {out.parent.name.replace('seed', 'seed ')}"


def started(out: Path) -> float:
    print(f"{PREFIX}final stage: retrain {arm_and_seed(out)} started", flush=True)
    return time.monotonic()


def finished(out: Path, since: float, values: dict[str, float]) -> None:
    """After `out` was written: this run's time and result, and the results finished so far."""
    result = ", ".join(f"{name} {value:.4g}" for name, value in values.items())
    final = out.parent.parent.parent
    done = len(list(final.glob("*/seed*/metrics.json")))
    elapsed = datetime.timedelta(seconds=round(time.monotonic() - since))
    print(
        f"{PREFIX}final stage: retrain {arm_and_seed(out)} done in {elapsed} ({result}); "
        f"{done} retrain result(s) of {final} finished so far",
        flush=True,
    )

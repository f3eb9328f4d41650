"""Release what dead hunt processes left behind, after proving that they are dead.

A hunt process killed hard (SIGKILL, OOM, node crash, preemption) leaves three things that
Orion 0.2.7 does not clean up promptly (see /work/shared/reference/orion-facts.md §3, §5):
- its reserved trials stay `reserved` until 5 x heartbeat (10 min by default) has passed;
- a PickledDB soft lock (`orion_db.pkl.lock`, used on NFS/overlayfs/tmpfs, where Orion does not
  trust flock) blocks every Orion command; filelock reclaims it by itself only when its owner
  ran on this host, so a crashed node's lock stays;
- an algorithm lock (`locked: 1` in the DB) held at the moment of the kill blocks every suggest.

Releasing any of them while its owner lives would corrupt the hunt, so all of it happens only
under proof: every hunt process of an experiment folder holds `hunt.lock` shared (flock), the
kernel drops the lock of a dead process, so holding it exclusively proves that no hunt process
is alive. flock must then be coherent across the nodes that share the folder (local disks, NFSv4,
Lustre mounted with `flock`, GPFS, BeeGFS with global locks): see docs/scaling-out.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reprohunt.orion_storage import DB_FILE

MEMBERSHIP_LOCK = "hunt.lock"
# A live Orion command holds the PickledDB lock for one read or write (milliseconds) and gives
# up waiting for it after 60 s, so a lock older than this belongs to no live command.
STALE_DB_LOCK_AGE_S = 60


@contextlib.contextmanager
def hunt_membership(hunt_dir: Path, recover: Callable[[], None]) -> Iterator[bool]:
    """Hold `hunt.lock` shared while hunting; run `recover` first when no one else holds it.
    Yields whether this hunter was alone when it joined.

    Getting the lock exclusively proves that every earlier hunter is dead; it is then turned into
    a shared lock so that other hunters can join. A hunter that starts during `recover` waits.
    """
    with (hunt_dir / MEMBERSHIP_LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(handle, fcntl.LOCK_SH)
            alone = False
        else:
            recover()
            fcntl.flock(handle, fcntl.LOCK_SH)
            alone = True
        yield alone


def _recorded_owner(lock: Path) -> tuple[int, str] | None:
    """`(pid, host)` from a filelock soft-lock record (`PID\\nHOST\\n[START]\\n`), if readable."""
    try:
        lines = lock.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) < 2 or not lines[0].isdigit():
        return None
    return int(lines[0]), lines[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_db_lock(hunt_dir: Path) -> list[str]:
    """Remove the PickledDB soft lock when its owner is provably gone (call only under proof).

    Its owner is gone when it ran on this host and its pid is dead, or, for an owner this host
    cannot probe (another node, or no record), when the lock is older than any live Orion
    command holds it. Where Orion locks with flock (local disks), the lock file stays behind
    empty after every command and the kernel frees the lock of a dead process: nothing to do.
    """
    from filelock import SoftFileLock
    from orion.core.io.database.pickleddb import _create_lock

    lock = hunt_dir / f"{DB_FILE}.lock"
    if not isinstance(_create_lock(str(lock)), SoftFileLock):
        return []
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return []
    owner = _recorded_owner(lock)
    if owner is not None and owner[1] == socket.gethostname():
        if _alive(owner[0]):
            return [f"kept PickledDB lock {lock}: its owner, pid {owner[0]}, is alive"]
        reason = f"its owner, pid {owner[0]} on this host, is dead"
    elif age > STALE_DB_LOCK_AGE_S:
        who = f"pid {owner[0]} on {owner[1]}" if owner else "an unrecorded owner"
        reason = f"held by {who} for {age:.0f} s while no hunt process is alive"
    else:
        return [f"kept PickledDB lock {lock}: only {age:.0f} s old, its owner may be alive"]
    lock.unlink(missing_ok=True)
    return [f"removed stale PickledDB lock {lock} ({reason})"]


@dataclasses.dataclass
class Recovered:
    """What recover_dead_workers did: every step (for the log), and those after which the hunt
    no longer replays a straight run's trials (for its replay record)."""

    messages: list[str] = dataclasses.field(default_factory=list)
    departures: list[str] = dataclasses.field(default_factory=list)


def recover_dead_workers(storage: dict[str, Any], name: str, max_broken: int) -> Recovered:
    """Return dead workers' trials to the pool, free the algorithm lock and bring the
    algorithm's registry up to date with the storage (call under proof).

    A trial returned to the pool runs again from its own checkpoint, to the same result, so the
    hunt still replays. Broken trials are retried only when there are `max_broken` of them,
    i.e. when the experiment would stop at once: a rerun after a failed hunt then tries again
    (each trial log is appended to), while a hunt that merely had a few broken trials keeps them
    as its record. A retried broken trial is a departure: a straight run learned it broke.
    """
    from orion.core.io.experiment_builder import ExperimentBuilder
    from orion.core.utils.exceptions import NoConfigurationError

    builder = ExperimentBuilder(storage)
    try:
        experiment = builder.load(name=name, mode="w")
    except NoConfigurationError:
        return Recovered()
    db = builder.storage
    done = Recovered()
    reserved = db.update_trials(experiment, where={"status": "reserved"}, status="interrupted")
    if reserved:
        done.messages.append(f"{reserved} trial(s) reserved by a dead worker returned to the pool")
    broken = db.count_broken_trials(experiment)
    if broken >= max_broken:
        db.update_trials(experiment, where={"status": "broken"}, status="interrupted")
        retried = (
            f"{broken} broken trial(s) of an earlier run will be retried "
            f"(max_broken {max_broken} was reached)"
        )
        done.messages.append(retried)
        done.departures.append(retried)
    lock = db.get_algorithm_lock_info(uid=experiment.id)
    if lock is not None and lock.locked:
        db.release_algorithm_lock(uid=experiment.id)
        done.messages.append("released the algorithm lock left by a dead worker")
    resync_algorithm(experiment)
    return done


def resync_algorithm(experiment: Any) -> None:
    """Have the algorithm observe every trial as the storage holds it now.

    Why: Orion records a result in the storage first and in the algorithm's registry after; a
    worker killed between the two leaves the algorithm believing a completed trial is still
    running, and a trial returned to the pool above is still `reserved` in it. A search that
    waits for results (orion_optuna's batch) would wait for ever, a sequential one would
    propose from a stale history. Orion's observe updates registered trials in place, so
    the trials' order, which the search is seeded by, is kept.
    """
    trials = experiment.fetch_trials(with_evc_tree=False)
    with experiment.acquire_algorithm_lock() as algorithm:
        algorithm.observe(trials)

"""One live run per results folder: the experiment's own lock, held by Snakemake's main process.

Why not Snakemake's directory lock alone: its refusal tells the user that the lock "can be
removed with the --unlock argument", and a user who does that while the first run lives gets
two hunts in one experiment, outputs deleted under the first run and records that claim what
did not happen. This lock is a kernel flock on `results/<experiment>/.run.lock`: the kernel
frees it when its holder ends, however it ends (SIGKILL included), so a stale lock cannot exist
and there is nothing to unlock. The file records the holder's PID, host and start time, which a
refused run names. Every process the run starts gets the holder's PID and host in its
environment (RUN_PID_VARIABLE, RUN_HOST_VARIABLE), so a rule's wrapper can stop its command when
the run that started it is gone (reprohunt.logged). Stdlib only: the Snakefile imports it in the
workflow env.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

RUN_LOCK = ".run.lock"
RUN_PID_VARIABLE = "REPROHUNT_RUN_PID"
RUN_HOST_VARIABLE = "REPROHUNT_RUN_HOST"


class RunLockError(Exception):
    """Another live run holds the experiment; the message names it and what to do."""


@dataclass(frozen=True)
class RunOwner:
    """Who holds a run lock, as its holder recorded it."""

    pid: int
    host: str
    started: str

    def __str__(self) -> str:
        return f"PID {self.pid} on host {self.host}, started {self.started}"


def recorded_owner(handle: IO[str]) -> RunOwner | None:
    """The holder's record (`PID\\nHOST\\nSTARTED\\n`), or None while it is being written."""
    handle.seek(0)
    lines = handle.read().splitlines()
    if len(lines) < 3 or not lines[0].isdigit():
        return None
    return RunOwner(int(lines[0]), lines[1], lines[2])


def refusal(results: Path, owner: RunOwner | None, config_file: str) -> RunLockError:
    """Why this run may not start, naming the live one and what to do."""
    pid = owner.pid if owner else "PID"
    return RunLockError(
        f"another run of this experiment is live in {results}: "
        f"{owner or 'a run still starting'}. Two runs in one results folder would mix their "
        "hunts and delete each other's outputs. Wait for it to end, or stop it (Ctrl-C in its "
        f"terminal, or `kill {pid}` on its host), or give this run another `experiment:` in "
        f"{config_file}. Snakemake's --unlock does not lift this lock: the kernel frees it when "
        "that run's process ends."
    )


def check_free(results: Path, config_file: str) -> None:
    """Raise RunLockError when a live run holds `results`' lock (a probe: takes nothing)."""
    try:
        handle = (results / RUN_LOCK).open("r")
    except FileNotFoundError:
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refusal(results, recorded_owner(handle), config_file) from None


def hold(results: Path, config_file: str) -> IO[str]:
    """Take `results`' run lock for the lifetime of this process, or raise RunLockError naming
    the live run that holds it. The caller keeps the returned handle open (closing it, or the
    process ending, frees the lock)."""
    results.mkdir(parents=True, exist_ok=True)
    handle = (results / RUN_LOCK).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = recorded_owner(handle)
        handle.close()
        raise refusal(results, owner, config_file) from None
    owner = RunOwner(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S %z"))
    handle.truncate(0)
    handle.write(f"{owner.pid}\n{owner.host}\n{owner.started}\n")
    handle.flush()
    os.environ[RUN_PID_VARIABLE] = str(owner.pid)
    os.environ[RUN_HOST_VARIABLE] = owner.host
    return handle

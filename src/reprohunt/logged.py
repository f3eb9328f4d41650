"""`python -m reprohunt.logged [--numerics PROFILE] LOG -- COMMAND…`: a rule's command, logged.

Why not `> LOG 2>&1`: when the results disk is full, the log is cut (or empty) exactly where the
cause is, and Snakemake's own output says only that the rule failed. Here the command's output
also goes through a small in-memory tail, so on failure the tail reaches Snakemake's output
(stderr) whatever became of the log. A full disk is named on the first line, "disk full at
PATH: … free …; fix: …". Where it is judged: a step usually cleans up after a failed write, so
the free space when the step has ended says nothing. The write that failed judges it, where it
failed (hpopt.files.DiskFullError, from atomic writes: libsndfile and torch.save hide ENOSPC
behind their own errors), and this wrapper shows that line first; failing that, an ENOSPC in
the output ("No space left on device"), the log's own failed write, or a disk still full now.
Lines that start with PROGRESS_PREFIX (a hunt's live progress) also reach the terminal as they
come, so a long rule is never silent. With ``--numerics`` the command runs under that numerics
profile (reprohunt.numerics).

Why it also owns the command's processes: a Ctrl-C stopped Snakemake in a second, but the hunt,
its Orion workers, trials and the warm launcher's server ran on for minutes, and after a
SIGKILL of Snakemake retrains kept writing into the results. The command runs in a session of
its own (a terminal's Ctrl-C reaches this wrapper, not the tree half-way), and this wrapper is
the subreaper of everything it starts. On SIGINT, SIGTERM or SIGHUP, or when the Snakemake run
that started it ends (its PID comes from reprohunt.runlock's variable; SIGKILL included), it
gives the command STOP_GRACE_S seconds to stop by itself on SIGTERM (the hunt hands it to Orion,
which releases its trials), then kills every process left below it, and dies of the signal.
Stdlib only.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

from hpopt.files import DISK_FULL, disk_full
from hpopt.process import become_subreaper, die_with_parent, kill_descendants, parent_of
from reprohunt import numerics
from reprohunt.runlock import RUN_PID_VARIABLE

TAIL_LINES = 30
# How a library reports ENOSPC that keeps its errno (Python's OSError, C's perror).
NO_SPACE = os.strerror(errno.ENOSPC).encode()
# A line the command prints with this prefix is shown on Snakemake's terminal (stderr) too.
PROGRESS_PREFIX = b"[progress] "
# Seconds the command gets to stop by itself before every process it started is killed.
STOP_GRACE_S = 4
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def named_disk_full(line: bytes) -> str | None:
    """The step's own "disk full at PATH: …" (hpopt.files.DiskFullError), from that phrase on."""
    text = line.decode(errors="replace").rstrip()
    at = text.find(DISK_FULL)
    return text[at:] if at >= 0 else None


def disk_full_cause(folder: Path, named: str | None, refused: bool) -> str | None:
    """Why the step failed, when a full disk is why: the step's own line naming the path, or,
    after an ENOSPC that named none (`refused`), or while the disk is still full, `folder`."""
    if named is not None:
        return named
    return disk_full(folder.resolve(), refused, "now", probe=folder)


def is_ancestor(pid: int) -> bool:
    """Whether `pid` lies above this process in the tree (not a PID of another host or run)."""
    current = os.getppid()
    while current > 1:
        if current == pid:
            return True
        current = parent_of(current)
    return False


def watch_run() -> None:
    """SIGTERM this process when the Snakemake run that started it ends, however it ends.

    Nothing to watch when the variable is unset, or names no ancestor (a cluster job inherits
    the variable of a main process on another host)."""
    text = os.environ.get(RUN_PID_VARIABLE, "")
    if not text.isdigit() or not is_ancestor(int(text)):
        return
    try:
        handle = os.pidfd_open(int(text))
    except OSError:  # gone already, or a kernel without pidfd (before Linux 5.3)
        return

    def wait_then_stop() -> None:
        select.select([handle], [], [])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_then_stop, daemon=True).start()


def stop_on_signals(process: subprocess.Popen[bytes], command: list[str]) -> None:
    """On a stop signal: SIGTERM the command, wait STOP_GRACE_S, kill what is left of every
    process below this one, then die of the same signal (as the shell above expects)."""

    def stop(signum: int, _frame: object) -> None:
        for ignored in STOP_SIGNALS:
            signal.signal(ignored, signal.SIG_IGN)
        name = signal.Signals(signum).name
        what = " ".join(command[:3])
        sys.stderr.write(f"{name}: stopping `{what}…` and every process it started\n")
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)
        kill_descendants(os.getpid())
        process.wait()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)


def run(log_path: Path, command: list[str]) -> int:
    """Run `command`, copying its output to `log_path`; on failure tell stderr why."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
    log_error: OSError | None = None
    named: str | None = None  # the step's own "disk full at PATH" line, if any
    refused = False  # whether an ENOSPC showed in the output
    # Unbuffered: a write the full disk refused leaves nothing behind for close() to retry.
    with open(log_path, "wb", buffering=0) as log:
        become_subreaper()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        stop_on_signals(process, command)
        watch_run()
        assert process.stdout is not None  # stdout=PIPE
        for line in process.stdout:
            tail.append(line)
            named = named or named_disk_full(line)
            refused = refused or NO_SPACE in line
            if line.startswith(PROGRESS_PREFIX):
                sys.stderr.buffer.write(line)
                sys.stderr.buffer.flush()
            if log_error is None:
                try:
                    rest = memoryview(line)
                    while rest:  # a short write is retried, so a full disk raises its errno
                        rest = rest[log.write(rest) :]
                except OSError as error:
                    log_error = error
        code = process.wait()
        if log_error is None:
            try:  # a network filesystem may report a lost write only here
                log.close()
            except OSError as error:
                log_error = error
    if code == 0 and log_error is None:
        return 0
    refused = refused or (log_error is not None and log_error.errno == errno.ENOSPC)
    cause = disk_full_cause(log_path.parent, named, refused)
    if cause is not None:
        sys.stderr.write(f"error: {cause}\n")
    where = f"{log_path} could not be written ({log_error.strerror})" if log_error else log_path
    sys.stderr.write(f"error: {' '.join(command[:3])}… exited with {code}; log: {where}\n")
    sys.stderr.write("".join(line.decode(errors="replace") for line in tail))
    return code or 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    profile = None
    if args[:1] == ["--numerics"] and len(args) > 1:
        profile, args = args[1], args[2:]
    if len(args) < 3 or args[1] != "--":
        print(
            "usage: python -m reprohunt.logged [--numerics PROFILE] LOG -- COMMAND [ARGS…]",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # the tail must hold the last lines
    if profile is not None:
        # Every process the rule starts inherits the profile, set before any library loads.
        try:
            numerics.apply(profile, "config `numerics`")
        except numerics.NumericsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    return run(Path(args[0]), args[2:])


if __name__ == "__main__":
    sys.exit(main())

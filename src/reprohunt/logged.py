"""`python -m reprohunt.logged [--numerics PROFILE] LOG -- COMMAND…`: a rule's command, logged.

Why not `> LOG 2>&1`: when the results disk is full, the log is cut (or empty) exactly where the
cause is, and Snakemake's own output says only that the rule failed. Here the command's output
also goes through a small in-memory tail, so on failure the tail reaches Snakemake's output
(stderr) whatever became of the log, together with "disk full at PATH" when the log's
filesystem is out of space. Lines that start with PROGRESS_PREFIX (a hunt's live progress) also
reach the terminal as they come, so a long rule is never silent. With ``--numerics`` the command
runs under that numerics profile (reprohunt.numerics). Stdlib only.
"""

from __future__ import annotations

import collections
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

from reprohunt import numerics

TAIL_LINES = 30
# Below this many free bytes a failure is reported as a full disk.
FULL_BELOW_BYTES = 1 << 20
# A line the command prints with this prefix is shown on Snakemake's terminal (stderr) too.
PROGRESS_PREFIX = b"[progress] "


def disk_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < FULL_BELOW_BYTES
    except OSError:
        return False


def run(log_path: Path, command: list[str]) -> int:
    """Run `command`, copying its output to `log_path`; on failure tell stderr why."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
    log_error: OSError | None = None
    # Unbuffered: a write the full disk refused leaves nothing behind for close() to retry.
    with open(log_path, "wb", buffering=0) as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in process.stdout:
            tail.append(line)
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
    full = (log_error is not None and log_error.errno == errno.ENOSPC) or disk_full(log_path.parent)
    cause = f"disk full at {log_path.parent.resolve()}: free space, then rerun. " if full else ""
    where = f"{log_path} could not be written ({log_error.strerror})" if log_error else log_path
    sys.stderr.write(f"error: {cause}{' '.join(command[:3])}… exited with {code}; log: {where}\n")
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

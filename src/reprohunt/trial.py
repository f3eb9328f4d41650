"""`hpopt-trial SCRIPT ARGS…`: how the workflow's `orion hunt` starts each trial.

Orion runs the trial command without a shell and does not capture its output, so a failing
trial would leave nothing but a line in the hunt log. This wrapper (stdlib only, so it starts in
milliseconds) gives every trial:
- its own log, `$ORION_WORKING_DIR/trial.log` (stdout and stderr of the recipe), which the hunt
  rule names when trials break;
- a wall-clock limit (`HPOPT_TRIAL_TIMEOUT` seconds): past it the trial is stopped (SIGTERM to
  its process group, SIGKILL after `TERM_GRACE_SECONDS`) and exits 124, which Orion counts as a
  broken trial (a hang never blocks the hunt). The grace period lets torchrun stop its workers,
  which it starts in sessions of their own, out of reach of a signal to this group;
- the launcher chosen by the hunt: `HPOPT_TRIAL_LAUNCHER` (the train env's python, or
  `hpopt-exec` for warm starts), followed by the shell-quoted words of
  `HPOPT_TRIAL_LAUNCHER_ARGS` when set (a multi-process trial: `-m hpopt.gpu_lease --
  …/torchrun --standalone --nproc_per_node=N`);
- no orphans: the wrapper dies with Orion's worker and takes the recipe process with it (the
  recipe is also told, by SIGTERM, when the wrapper itself is SIGKILLed);
- no database credentials: the recipe does not inherit ORION_DB_PASSWORD and the like (a trial
  never talks to the database, and recipes dump their environment into logs and provenance).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from hpopt.process import die_with_parent
from reprohunt.orion_storage import CREDENTIAL_VARIABLES

TIMEOUT_EXIT_CODE = 124
# torchrun's agent gives its workers 30 s to exit after a SIGTERM; a plain trial needs far less.
TERM_GRACE_SECONDS = 40


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: hpopt-trial SCRIPT [ARGS…] (run by `orion hunt`)", file=sys.stderr)
        return 2
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 1

    launcher = [
        os.environ.get("HPOPT_TRIAL_LAUNCHER", sys.executable),
        *shlex.split(os.environ.get("HPOPT_TRIAL_LAUNCHER_ARGS", "")),
    ]
    timeout_text = os.environ.get("HPOPT_TRIAL_TIMEOUT")
    timeout = float(timeout_text) if timeout_text else None
    trial_dir = Path(os.environ.get("ORION_WORKING_DIR", "."))
    trial_dir.mkdir(parents=True, exist_ok=True)
    log_path = trial_dir / "trial.log"
    trial = os.environ.get("ORION_TRIAL_ID", "?")
    print(f"trial {trial}: {' '.join([*launcher, *args])} (log: {log_path})", flush=True)

    env = {name: value for name, value in os.environ.items() if name not in CREDENTIAL_VARIABLES}
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [*launcher, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

        def forward(signum: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(child)
            message = f"trial {trial}: killed after the {timeout:g} s trial timeout"
            log.write(f"\n{message}\n".encode())
            print(message, flush=True)
            return TIMEOUT_EXIT_CODE
    # A negative code is a signal: report it the way a shell would (128 + signal number).
    code = 128 - code if code < 0 else code
    print(f"trial {trial}: exit {code}", flush=True)
    return code


def stop(child: subprocess.Popen) -> None:
    """SIGTERM the trial's process group, SIGKILL it if it is still there after the grace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=TERM_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


if __name__ == "__main__":
    sys.exit(main())

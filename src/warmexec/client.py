"""``hpopt-exec``: run a trial script in a child of the warm server, or cold when there is none.

Drop-in for ``python`` in a trial command::

    orion hunt … /abs/.venv/train/bin/hpopt-exec recipes/speaker_id/train.py train.yaml --hpopt …

Stdlib only and small, so it starts in tens of milliseconds. It sends its argv, cwd, environment
and stdin/stdout/stderr to the server, relays SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2 to the trial,
and ends with the trial's exit status (dying of the same signal when the trial did). The first
client starts the server, under a lock so concurrent trials start one; when no server can be used
it says why, once, and replaces itself with ``python script args…``.

Exit statuses besides the trial's own: ``SERVER_LOST_EXIT`` (70) when the server died while the
trial ran (the trial is killed with it), ``trial.SETUP_FAILED_EXIT`` (71) when the forked child
could not become the trial (the reason is on stderr), 2 for a usage error.
"""

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from warmexec.protocol import (
    DEFAULT_PRELOAD,
    ENV_IDLE_TIMEOUT,
    ENV_PRELOAD,
    ENV_SOCKET,
    FORWARDED_SIGNALS,
    Rendezvous,
    messages,
    prepare_directory,
    rendezvous,
    send_message,
)

# The trial's outcome is unknown because the server died mid-trial (EX_SOFTWARE): any non-zero
# status makes Orion mark the trial broken.
SERVER_LOST_EXIT = 70
# The server binds its socket before its slow imports, so this only bounds a wedged start.
_LISTEN_TIMEOUT_S = 60.0

USAGE = f"""\
usage: hpopt-exec SCRIPT [ARG...]   run SCRIPT as `python SCRIPT ARG...` would, in a warm process
       hpopt-exec --serve           start the warm server unless running; return once it is warm
       hpopt-exec --status          print the server's state as JSON; exit 1 if none is running
       hpopt-exec --stop            stop accepting trials; wait for running ones and the server

environment:
  {ENV_SOCKET}        server socket (default: one per user and virtual environment)
  {ENV_IDLE_TIMEOUT}  seconds without a client before a server started now exits (300)
  {ENV_PRELOAD}       comma-separated modules a server started now imports
                           ({",".join(DEFAULT_PRELOAD)})"""


class LauncherUnavailable(RuntimeError):
    """No warm server can run this trial; the message says why."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    commands = {"--serve": serve, "--status": status, "--stop": stop}
    if args and args[0] in commands and len(args) == 1:
        return commands[args[0]](rendezvous())
    if not args or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    return run(args)


def run(argv: Sequence[str]) -> int:
    """Run ``python argv…`` in a warm child; its exit status."""
    try:
        sock = connect(rendezvous(), start=True)
        request = {
            "op": "run",
            "argv": list(argv),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "prefix": sys.prefix,
        }
        send_message(sock, request, fds=(0, 1, 2))
    except (OSError, LauncherUnavailable) as exc:
        run_cold(argv, str(exc))
    with sock:
        _relay_signals(sock)
        started = False
        try:
            for message in messages(sock):
                if message["op"] == "refused":
                    run_cold(argv, f"the warm server refused the trial: {message.get('reason')}")
                started = started or message["op"] == "started"
                if message["op"] == "exited":
                    return _end_like(int(message["returncode"]))
        except OSError:
            pass  # the server is gone: same as a closed connection
    if not started:
        run_cold(argv, "the warm server closed the connection before starting the trial")
    print(
        "hpopt-exec: the warm server went away while the trial was running; "
        "the trial was killed with it and its outcome is unknown",
        file=sys.stderr,
    )
    return SERVER_LOST_EXIT


def run_cold(argv: Sequence[str], reason: str) -> NoReturn:
    """Become ``python argv…`` after saying why (the only message the fallback prints)."""
    print(f"hpopt-exec: {reason}; running the trial cold", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, *argv])


def connect(where: Rendezvous, start: bool) -> socket.socket:
    """A connection to the server, starting one first when ``start`` and none is listening."""
    try:
        return _connect(where)
    except (FileNotFoundError, ConnectionRefusedError) as exc:  # none, or a stale socket
        if not start:
            raise LauncherUnavailable(f"no warm server on {where.socket}") from exc
    except OSError as exc:
        raise LauncherUnavailable(f"cannot reach the warm server on {where.socket}: {exc}") from exc
    try:
        prepare_directory(where)
        with _locked(where):
            try:  # another client may have started it while we waited for the lock
                return _connect(where)
            except (FileNotFoundError, ConnectionRefusedError):
                _start_server(where)
            return _connect(where)
    except OSError as exc:
        raise LauncherUnavailable(f"cannot start a warm server on {where.socket}: {exc}") from exc


def serve(where: Rendezvous) -> int:
    """``--serve``: make sure a server runs, and return once it has finished its imports."""
    try:
        state = _ask(connect(where, start=True), {"op": "ping"})
    except LauncherUnavailable as exc:
        print(f"hpopt-exec: {exc}", file=sys.stderr)
        return 1
    print(f"hpopt-exec: warm server {state['pid']} ready on {state['socket']}", file=sys.stderr)
    return 0


def status(where: Rendezvous) -> int:
    """``--status``: the server's state as JSON on stdout, or exit 1 when none is running."""
    try:
        state = _ask(connect(where, start=False), {"op": "ping"})
    except LauncherUnavailable as exc:
        print(f"hpopt-exec: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(state, indent=2))
    return 0


def stop(where: Rendezvous) -> int:
    """``--stop``: the server stops accepting; wait until its running trials end and it exits."""
    try:
        state = _ask(connect(where, start=False), {"op": "stop"})
    except LauncherUnavailable as exc:
        print(f"hpopt-exec: {exc}; nothing to stop", file=sys.stderr)
        return 0
    if state["trials"]:
        print(f"hpopt-exec: waiting for {state['trials']} running trial(s)", file=sys.stderr)
    _wait_for_exit(int(state["pid"]))
    return 0


def _connect(where: Rendezvous) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(where.socket))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def _locked(where: Rendezvous) -> Iterator[None]:
    """Hold the spawn lock: one client at a time checks for, and starts, the server."""
    fd = os.open(where.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _start_server(where: Rendezvous) -> None:
    """Start a detached server and wait until it listens (its imports happen after that)."""
    import select
    import subprocess

    ready_read, ready_write = os.pipe()
    try:
        with open(where.log, "ab") as log:
            subprocess.Popen(
                [sys.executable, "-m", "warmexec.server", "--socket", str(where.socket)]
                + ["--ready-fd", str(ready_write)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(ready_write,),
                start_new_session=True,  # not in the hunt's process group: outlives one trial
                cwd="/",
            )
    finally:
        os.close(ready_write)
    with os.fdopen(ready_read, "rb") as ready:
        if not select.select([ready], [], [], _LISTEN_TIMEOUT_S)[0]:
            raise LauncherUnavailable(f"the warm server did not start listening; see {where.log}")
        if ready.readline() != b"listening\n":
            raise LauncherUnavailable(f"the warm server failed to start; see {where.log}")


def _ask(sock: socket.socket, request: dict) -> dict:
    """Send one request and return the reply."""
    with sock:
        try:
            send_message(sock, request)
            return next(iter(messages(sock)))
        except (OSError, StopIteration) as exc:
            raise LauncherUnavailable("the warm server closed the connection") from exc


def _relay_signals(sock: socket.socket) -> None:
    def relay(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):  # the server is gone: the message loop will notice
            send_message(sock, {"op": "signal", "signal": signum})

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, relay)


def _end_like(returncode: int) -> int:
    """The exit status to return, after dying of the trial's signal if it died of one."""
    if returncode >= 0:
        return returncode
    signum = -returncode
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError, ValueError):  # SIGKILL, SIGSTOP: default anyway
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum  # the signal does not terminate (e.g. SIGCHLD): report it as a shell would


def _wait_for_exit(pid: int) -> None:
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([pidfd], [], [])
    finally:
        os.close(pidfd)

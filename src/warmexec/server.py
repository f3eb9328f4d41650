"""The warm server: imports the heavy libraries once, then forks one child per trial request.

Run by the first client (``hpopt-exec`` starts it as ``python -m warmexec.server``). It
binds the socket before importing anything heavy, so clients queue up instead of starting a second
server, and accepts only once the imports are done. It never runs a torch op: a child forked from
a process whose OpenMP pool has started can hang on its first parallel op.

One single-threaded ``selectors`` loop serves the listening socket, every client connection (its
messages, and its closing, which kills the trial's process group) and every trial process (a pidfd
that becomes readable when it exits). It stops accepting after the idle timeout, on
``hpopt-exec --stop`` or on SIGTERM/SIGINT, and exits once the running trials have finished; a
second SIGTERM/SIGINT exits at once (the trials die with it, see ``trial._die_with_server``).
"""

import argparse
import contextlib
import fcntl
import functools
import gc
import importlib
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from warmexec.protocol import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_PRELOAD,
    ENV_IDLE_TIMEOUT,
    ENV_PRELOAD,
    ENV_SOCKET,
    FORWARDED_SIGNALS,
    MessageReader,
    ProtocolError,
    Rendezvous,
    receive,
    send_message,
    startup_environment,
)
from warmexec.trial import SETUP_FAILED_EXIT, become_trial

# How often a pending stop retries the spawn lock that a starting client may hold for a moment.
_LOCK_RETRY_S = 0.2
# A reply is a few bytes; a client that cannot take it in this long is treated as gone.
_SEND_TIMEOUT_S = 10.0
_STDIO_FDS = 3


@dataclass(eq=False)
class Connection:
    """One client: its socket, the fds it sent, and the trial it asked for (if any)."""

    sock: socket.socket
    reader: MessageReader = field(default_factory=MessageReader)
    fds: list[int] = field(default_factory=list)
    trial: "Trial | None" = None


@dataclass(eq=False)
class Trial:
    """A forked trial process; ``client`` is None once its client has gone."""

    pid: int
    pidfd: int
    client: Connection | None


class Server:
    def __init__(self, where: Rendezvous, idle_timeout_s: float) -> None:
        self.where = where
        self.idle_timeout_s = idle_timeout_s
        self.pid = os.getpid()
        self.startup_env = startup_environment(os.environ)
        self.preloaded: list[str] = []
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.listener_inode = 0
        self.connections: set[Connection] = set()
        self.trials: dict[int, Trial] = {}
        self.stop_reason: str | None = None
        self.idle_since = time.monotonic()
        self._wakeup_read, self._wakeup_write = socket.socketpair()

    # -- start-up ------------------------------------------------------------------------------

    def listen(self) -> None:
        """Bind the socket (mode 0600), replacing a stale one, refusing to replace a live one."""
        path = str(self.where.socket)
        with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
            raise RuntimeError(f"another server already listens on {path}")
        if self.where.socket.exists() and not self.where.socket.is_socket():
            raise RuntimeError(f"{path} exists and is not a socket; choose another {ENV_SOCKET}")
        self.where.socket.unlink(missing_ok=True)  # a stale socket of a killed server
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # single-threaded here: no other file is created meanwhile
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        listener.listen(128)
        listener.setblocking(False)
        self.listener = listener
        self.listener_inode = os.stat(path).st_ino
        log(f"listening on {path}")

    def preload(self, modules: Sequence[str]) -> None:
        """Import what every trial would; a failure only means trials import that module cold."""
        for name in modules:
            started = time.monotonic()
            try:
                importlib.import_module(name)
            except Exception as exc:
                log(f"preloading {name} failed, trials will import it cold: {exc!r}")
                continue
            self.preloaded.append(name)
            log(f"preloaded {name} in {time.monotonic() - started:.2f} s")
        gc.freeze()  # keep the collector from touching (and so copying) inherited objects

    # -- main loop -----------------------------------------------------------------------------

    def serve(self) -> int:
        assert self.listener is not None
        self._wakeup_read.setblocking(False)
        self._wakeup_write.setblocking(False)
        signal.set_wakeup_fd(self._wakeup_write.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)  # acted on in _on_signal, via the wakeup fd
        self._register(self._wakeup_read, self._on_signal)
        self._register(self.listener, self._accept)
        log(f"ready (idle timeout {self.idle_timeout_s:g} s)")
        try:
            while self.listener is not None or self.connections or self.trials:
                for key, _events in self.selector.select(self._timeout()):
                    key.data()
                self._maybe_stop_listening()
        finally:
            if self.listener is not None:  # still listening, so the path is still ours
                self._unlink_socket_if_ours()
        log("exiting")
        return 0

    def _timeout(self) -> float | None:
        if self.listener is None:
            return None
        if self.stop_reason is not None:
            return _LOCK_RETRY_S
        if self.connections or self.trials:
            return None
        return max(0.0, self.idle_since + self.idle_timeout_s - time.monotonic())

    def _maybe_stop_listening(self) -> None:
        if self.listener is None:
            return
        idle_for = time.monotonic() - self.idle_since
        if not (self.connections or self.trials) and idle_for >= self.idle_timeout_s:
            self.stop_reason = self.stop_reason or f"idle for {self.idle_timeout_s:g} s"
        if self.stop_reason is not None:
            self._stop_listening()

    def _stop_listening(self) -> None:
        """Remove the socket under the spawn lock, serve the clients already queued, stop accepting.

        The lock keeps a client from starting a new server between our check of the socket's inode
        and its removal. Clients that connected before the removal are in the backlog: accept them.
        """
        assert self.listener is not None
        with open(self.where.lock, "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a client is starting a server; retry after _LOCK_RETRY_S
            self._unlink_socket_if_ours()
        self._accept()
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None
        log(f"stopped accepting ({self.stop_reason}); {len(self.trials)} trial(s) still running")

    def _unlink_socket_if_ours(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.where.socket).st_ino == self.listener_inode:
                self.where.socket.unlink()

    def _on_signal(self) -> None:
        received = self._wakeup_read.recv(64)
        if self.stop_reason is not None:
            log("second stop signal: exiting now; running trials are killed")
            raise SystemExit(1)
        self.stop_reason = f"signal {signal.Signals(received[0]).name}"

    # -- connections ---------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            credentials = sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
            )
            _pid, uid, _gid = struct.unpack("3i", credentials)
            if uid != os.getuid():  # a client can run any code as us: only we may connect
                log(f"refused a connection from uid {uid}")
                sock.close()
                continue
            sock.settimeout(_SEND_TIMEOUT_S)
            connection = Connection(sock)
            self.connections.add(connection)
            self._register(sock, functools.partial(self._on_readable, connection))

    def _on_readable(self, connection: Connection) -> None:
        try:
            batch, fds, closed = receive(connection.sock, connection.reader, _STDIO_FDS)
        except (OSError, ProtocolError) as exc:
            log(f"dropping a client: {exc!r}")
            self._client_gone(connection)
            return
        connection.fds.extend(fds)
        for message in batch:
            if connection not in self.connections:
                return
            self._handle(connection, message)
        if closed and connection in self.connections:
            self._client_gone(connection)

    def _handle(self, connection: Connection, message: Mapping[str, object]) -> None:
        op = message["op"]
        if op == "signal" and connection.trial is not None:
            signum = message.get("signal")
            if isinstance(signum, int) and signum in FORWARDED_SIGNALS:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(connection.trial.pid, signum)
        elif op == "run" and connection.trial is None:
            self._run(connection, message)
        elif op == "ping":
            self._reply_and_close(connection, {"op": "pong", **self._state()})
        elif op == "stop":
            self.stop_reason = self.stop_reason or "hpopt-exec --stop"
            self._reply_and_close(connection, {"op": "stopping", **self._state()})
        else:
            log(f"dropping a client that sent an unexpected {op!r}")
            self._client_gone(connection)

    def _state(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "socket": str(self.where.socket),
            "prefix": sys.prefix,
            "preloaded": self.preloaded,
            "trials": len(self.trials),
            "idle_timeout_s": self.idle_timeout_s,
            "accepting": self.listener is not None and self.stop_reason is None,
        }

    def _run(self, connection: Connection, message: Mapping[str, object]) -> None:
        try:
            argv, cwd, env = _parse_run(message)
        except ValueError as exc:
            self._reply_and_close(connection, {"op": "refused", "reason": f"bad request: {exc}"})
            return
        refusal = self._incompatibility(message.get("prefix"), env)
        if refusal is None and len(connection.fds) != _STDIO_FDS:
            refusal = f"expected {_STDIO_FDS} file descriptors, got {len(connection.fds)}"
        if refusal is not None:
            self._reply_and_close(connection, {"op": "refused", "reason": refusal})
            return
        stdio, connection.fds = connection.fds, []
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would write the server's pending log lines again
        pid = os.fork()
        if pid == 0:
            try:
                self._close_inherited()
                become_trial(self.pid, argv, cwd, env, stdio)
            finally:  # the child must never return into the server's loop
                os._exit(SETUP_FAILED_EXIT)
        for fd in stdio:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done by the child; whichever runs first wins the race
        trial = Trial(pid, os.pidfd_open(pid), connection)
        connection.trial = trial
        self.trials[pid] = trial
        self._register(trial.pidfd, functools.partial(self._reap, trial))
        log(f"trial {pid} started: {' '.join(argv)} (cwd {cwd})")
        self._send(connection, {"op": "started", "pid": pid})

    def _incompatibility(self, prefix: object, env: Mapping[str, str]) -> str | None:
        """Why this server cannot run this client's trial as a cold start would (None: it can)."""
        if prefix != sys.prefix:
            return f"the warm server runs the Python of {sys.prefix}, the client {prefix}"
        wanted = startup_environment(env)
        differing = sorted(
            name
            for name in wanted.keys() | self.startup_env.keys()
            if wanted.get(name) != self.startup_env.get(name)
        )
        if differing:
            return (
                f"the warm server was started with different {', '.join(differing)} (read once at "
                f"interpreter start); stop it with `hpopt-exec --stop` or set {ENV_SOCKET} to "
                f"another path"
            )
        return None

    def _close_inherited(self) -> None:
        """In the child: close the server's fds (sockets, pidfds, epoll, other clients' fds)."""
        signal.set_wakeup_fd(-1)
        for key in list(self.selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
            else:
                os.close(key.fd)
        self.selector.close()
        self._wakeup_write.close()
        for connection in self.connections:
            for fd in connection.fds:
                os.close(fd)

    def _reap(self, trial: Trial) -> None:
        _, status = os.waitpid(trial.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        self.selector.unregister(trial.pidfd)
        os.close(trial.pidfd)
        del self.trials[trial.pid]
        log(f"trial {trial.pid} exited with {returncode}")
        if trial.client is not None:
            self._reply_and_close(trial.client, {"op": "exited", "returncode": returncode})
        self._note_if_idle()

    def _send(self, connection: Connection, message: Mapping[str, object]) -> None:
        try:
            send_message(connection.sock, message)
        except OSError as exc:
            log(f"client unreachable: {exc!r}")
            self._client_gone(connection)

    def _reply_and_close(self, connection: Connection, message: Mapping[str, object]) -> None:
        self._send(connection, message)
        if connection in self.connections:
            self._client_gone(connection)

    def _client_gone(self, connection: Connection) -> None:
        """Forget a connection; a trial still running for it is killed with its process group."""
        self.connections.discard(connection)
        self.selector.unregister(connection.sock)
        connection.sock.close()
        for fd in connection.fds:
            os.close(fd)
        trial = connection.trial
        if trial is not None and trial.pid in self.trials:
            trial.client = None
            log(f"client of trial {trial.pid} gone: killing its process group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(trial.pid, signal.SIGKILL)
        self._note_if_idle()

    def _note_if_idle(self) -> None:
        if not (self.connections or self.trials):
            self.idle_since = time.monotonic()

    def _register(self, fileobj: socket.socket | int, handler: Callable[[], None]) -> None:
        self.selector.register(fileobj, selectors.EVENT_READ, handler)


def _parse_run(message: Mapping[str, object]) -> tuple[list[str], str, dict[str, str]]:
    argv, cwd, env = message.get("argv"), message.get("cwd"), message.get("env")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings")
    if not isinstance(cwd, str):
        raise ValueError("cwd must be a string")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise ValueError("env must map names to strings")
    return argv, cwd, env


def log(message: str) -> None:
    """One line on the server's stderr (the log file next to the socket)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} hpopt-exec server[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warmexec.server", description=__doc__)
    parser.add_argument("--socket", type=Path, required=True, help="path to listen on")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=float(os.environ.get(ENV_IDLE_TIMEOUT) or DEFAULT_IDLE_TIMEOUT_S),
        help=f"seconds without a client before stopping (default ${ENV_IDLE_TIMEOUT} or "
        f"{DEFAULT_IDLE_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--preload",
        default=os.environ.get(ENV_PRELOAD, ",".join(DEFAULT_PRELOAD)),
        help=f"comma-separated modules to import (default ${ENV_PRELOAD} or "
        f"{','.join(DEFAULT_PRELOAD)})",
    )
    parser.add_argument(
        "--ready-fd", type=int, help="write 'listening' to this fd once bound, then close it"
    )
    args = parser.parse_args(argv)

    # The OpenMP runtime reads these once when torch loads it; without them the server has the
    # library default, and each trial sets the count its own environment asks for.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.pop(name, None)
    if not sys.flags.safe_path:
        del sys.path[0]  # the cwd `python -m` put there; each trial puts its script's directory

    server = Server(Rendezvous(args.socket), args.idle_timeout)
    server.listen()
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"listening\n")
        os.close(args.ready_fd)
    server.preload([name.strip() for name in args.preload.split(",") if name.strip()])
    return server.serve()


if __name__ == "__main__":
    sys.exit(main())

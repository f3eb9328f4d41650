"""Where client and server meet (socket path, lock, log) and what they say (framed JSON messages).

Stdlib only and cheap to import: the client imports it at every trial start.

Messages are length-prefixed JSON objects on an ``AF_UNIX`` stream socket; the first one from the
client carries its stdin/stdout/stderr as ``SCM_RIGHTS`` file descriptors. Conversation::

    client → server  {"op": "run", "argv": [script, *args], "cwd": …, "env": {…}, "prefix": …}
                     with fds 0, 1, 2 attached
    server → client  {"op": "started", "pid": …}  or  {"op": "refused", "reason": …}
    client → server  {"op": "signal", "signal": n}        (zero or more times)
    server → client  {"op": "exited", "returncode": rc}   (rc < 0: killed by signal -rc)

    client → server  {"op": "ping"}  →  {"op": "pong", …state}
    client → server  {"op": "stop"}  →  {"op": "stopping", …state}

A closed connection is meaningful both ways: the client gone means "kill the trial", the server
gone means "the trial's outcome is unknown".
"""

import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

ENV_SOCKET = "HPOPT_EXEC_SOCKET"
ENV_IDLE_TIMEOUT = "HPOPT_EXEC_IDLE_TIMEOUT"
ENV_PRELOAD = "HPOPT_EXEC_PRELOAD"

DEFAULT_IDLE_TIMEOUT_S = 300.0
# What a trial of this project imports before its first step; a module missing here only costs
# time. torch._dynamo is what the first torch.optim optimizer imports (~2 s, 800 modules).
DEFAULT_PRELOAD = (
    "numpy",
    "torch",
    "torch._dynamo",
    "hyperpyyaml",
    "soundfile",
    "hpopt",
    "hpopt.context",  # `import hpopt` is lazy; every recipe enters the context
)

# Signals a terminal, Orion, Snakemake or a batch scheduler (USR1/USR2: pre-emption warnings) send
# to the trial command; the client relays them to the trial process.
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
)

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct("!I")
_RECV_BYTES = 256 * 1024

# Environment read once when the interpreter, a native library or a preloaded module starts (hash
# seed, sys.path, locale, dynamic loader, OpenMP/MKL runtime, torch/dynamo configuration): a forked
# trial cannot take the client's value, so a server started with a different value must not run
# the trial. The thread counts are applied in the child instead (``torch.set_num_threads``), and
# the stdio settings when the child reopens its standard streams.
_STARTUP_PREFIXES = (
    *("PYTHON", "LD_", "LC_", "OMP_", "GOMP_", "KMP_", "MKL_"),
    *("TORCH_", "TORCHDYNAMO_", "TORCHINDUCTOR_"),
    # The numerics profile's CPU code-path caps (reprohunt.numerics), read when torch loads.
    *("ATEN_", "ONEDNN_", "DNNL_", "NPY_", "OPENBLAS_"),
)
_STARTUP_NAMES = ("LANG",)
APPLIED_IN_CHILD = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONUNBUFFERED", "PYTHONIOENCODING")


class ProtocolError(RuntimeError):
    """The peer sent something that is not a message of this protocol."""


class Rendezvous:
    """The files one server and its clients share: the socket, the spawn lock and the server log.

    (A plain class: ``dataclasses`` alone would add ~7 ms to every trial start.)
    """

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.lock = socket.with_name(socket.name + ".lock")
        self.log = socket.with_name(socket.name + ".log")


def rendezvous(environ: Mapping[str, str] = os.environ) -> Rendezvous:
    """The socket to use: ``$HPOPT_EXEC_SOCKET``, else one per user and virtual environment.

    A requested path longer than ``sun_path`` allows is replaced by a short private path keyed by
    its hash, so every client asking for the same long path still meets the same server.
    """
    requested = environ.get(ENV_SOCKET, "").strip()
    if requested:
        path = Path(os.path.abspath(requested))
        if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES:
            return Rendezvous(path)
        return Rendezvous(_private_dir(environ) / f"{_digest(str(path))}.sock")
    return Rendezvous(_private_dir(environ) / f"venv-{_digest(sys.prefix)}.sock")


def prepare_directory(where: Rendezvous) -> None:
    """Create the socket's directory; a shared one must be ours and closed to others.

    Anyone who can connect can run code as us, so the default location must not be a directory
    another user created or can write to.
    """
    directory = where.socket.parent
    if directory.name != _private_dir_name():
        directory.mkdir(parents=True, exist_ok=True)
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{directory} must be owned by uid {os.getuid()} with mode 0700 "
            f"(it is uid {info.st_uid}, mode {info.st_mode & 0o777:o}); remove it or set "
            f"{ENV_SOCKET} to a path in a directory of yours"
        )


def startup_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` a running interpreter cannot change any more (see above)."""
    return {
        name: value
        for name, value in environ.items()
        if (name.startswith(_STARTUP_PREFIXES) or name in _STARTUP_NAMES)
        and name not in APPLIED_IN_CHILD
    }


def encode(message: Mapping[str, object]) -> bytes:
    """One framed message."""
    payload = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(payload)) + payload


def send_message(
    sock: socket.socket, message: Mapping[str, object], fds: Sequence[int] = ()
) -> None:
    """Send one message, with ``fds`` attached to its first byte when given."""
    data = encode(message)
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        data = data[sent:]
    if data:
        sock.sendall(data)


class MessageReader:
    """Reassembles messages from the byte stream, whatever the chunking."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            try:
                message = json.loads(self._buffer[_HEADER.size : end])
            except ValueError as exc:
                raise ProtocolError(f"undecodable message: {exc}") from exc
            if not isinstance(message, dict) or not isinstance(message.get("op"), str):
                raise ProtocolError(f"not a message: {message!r:.200}")
            messages.append(message)
            del self._buffer[:end]
        return messages


def receive(
    sock: socket.socket, reader: MessageReader, max_fds: int = 0
) -> tuple[list[dict], list[int], bool]:
    """One read: the messages it completed, the fds it carried, and whether the peer closed."""
    if max_fds:
        data, fds, _flags, _address = socket.recv_fds(sock, _RECV_BYTES, max_fds)
    else:
        data, fds = sock.recv(_RECV_BYTES), []
    return reader.feed(data), fds, not data


def messages(sock: socket.socket) -> Iterable[dict]:
    """Blocking iterator over the messages from ``sock``, ending when the peer closes."""
    reader = MessageReader()
    while True:
        batch, _fds, closed = receive(sock, reader)
        yield from batch
        if closed:
            return


def _private_dir_name() -> str:
    return f"hpopt-exec-{os.getuid()}"


def _private_dir(environ: Mapping[str, str]) -> Path:
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    base = Path(runtime) if runtime and os.path.isdir(runtime) else Path("/tmp")
    return base / _private_dir_name()


def _digest(text: str) -> str:
    import hashlib  # only here: an explicit short socket path needs no hash, nor its import cost

    return hashlib.sha256(os.fsencode(text)).hexdigest()[:16]

"""The forked child's side: turn a copy of the warm server into ``python script.py args…``.

Everything a fresh interpreter would get from the client is re-applied here (stdio, cwd,
environment, argv, ``sys.path[0]``, thread count, random state), the script runs as ``__main__``,
and the process ends the way CPython ends: same exit status, same traceback, same death by SIGINT
after an uncaught ``KeyboardInterrupt``, atexit handlers and non-daemon threads honoured.
"""

import atexit
import io
import os
import runpy
import signal
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import NoReturn

from hpopt.process import die_with_parent

# Exit status when the child could not become the trial (chdir failed, fds unusable…): EX_OSERR,
# distinct from the client's SERVER_LOST_EXIT (70).
SETUP_FAILED_EXIT = 71


def become_trial(
    server_pid: int, argv: Sequence[str], cwd: str, env: Mapping[str, str], stdio: Sequence[int]
) -> NoReturn:
    """Run the script in this freshly forked child and exit with its status; never returns."""
    try:
        _die_with_server(server_pid)
        os.setpgid(0, 0)  # its own group, so the server can kill what the trial started too
        _restore_default_signals()
        for target, fd in enumerate(stdio):  # received fds are > 2: the server's 0–2 are open
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        _reopen_stdio(env)
        script = os.path.abspath(argv[0])
        sys.argv = list(argv)
        sys.orig_argv = [sys.executable, *argv]
        if not env.get("PYTHONSAFEPATH"):
            sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
        _reseed()
        _apply_thread_count(env)
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"
        os.write(2, f"hpopt-exec: the warm trial process could not start: {reason}\n".encode())
        os._exit(SETUP_FAILED_EXIT)
    _exit_like_cpython(_run_as_main(script))


def _die_with_server(server_pid: int) -> None:
    """Be SIGKILLed when the server dies: a trial must not outlive the connection it reports on."""
    die_with_parent(signal.SIGKILL)
    if os.getppid() != server_pid:  # the server died before prctl took effect
        os._exit(SETUP_FAILED_EXIT)


def _restore_default_signals() -> None:
    """The dispositions a fresh interpreter has (the server installed its own SIGTERM handler)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)


def _reopen_stdio(env: Mapping[str, str]) -> None:
    """New ``sys.std*`` over fds 0–2, buffered as CPython would for these fds and this env."""
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    encoding, _, errors = env.get("PYTHONIOENCODING", "").partition(":")
    inherited = sys.__stdout__  # None only in an interpreter started without fd 1
    encoding = encoding or (inherited.encoding if inherited else "utf-8")
    errors = errors or (inherited.errors if inherited and inherited.errors else "strict")

    def text(fd: int, mode: str, errors: str) -> io.TextIOWrapper:
        raw_only = unbuffered and mode == "w"
        binary = open(fd, mode + "b", buffering=0 if raw_only else -1, closefd=False)  # noqa: SIM115
        return io.TextIOWrapper(
            binary,
            encoding=encoding,
            errors=errors,
            line_buffering=not unbuffered and (fd == 2 or os.isatty(fd)),
            write_through=raw_only,
        )

    # The originals are replaced too, as a fresh interpreter's are over its fds (typeshed marks
    # sys.__std*__ Final, as no program but an interpreter's start-up should set them).
    sys.stdin = sys.__stdin__ = text(0, "r", errors)  # type: ignore[misc]
    sys.stdout = sys.__stdout__ = text(1, "w", errors)  # type: ignore[misc]
    sys.stderr = sys.__stderr__ = text(2, "w", "backslashreplace")  # type: ignore[misc]


def _reseed() -> None:
    """Fresh entropy for every generator a fresh interpreter seeds from the OS.

    Python's ``random`` reseeds itself after ``os.fork``; numpy's legacy global generator and
    torch's CPU generator do not, and would otherwise hand every trial the server's state.
    CUDA generators are created in the child, at CUDA initialisation, as in a cold process.
    """
    if numpy := sys.modules.get("numpy"):
        numpy.random.seed()
    if torch := sys.modules.get("torch"):
        torch.default_generator.seed()


def _apply_thread_count(env: Mapping[str, str]) -> None:
    """Give torch the intra-op thread count a cold start would read from the environment.

    The OpenMP runtime read the server's environment when torch was imported (the server drops
    these variables first, so its default is the library default).
    """
    torch = sys.modules.get("torch")
    value = env.get("OMP_NUM_THREADS") or env.get("MKL_NUM_THREADS")
    if torch is None or not value:
        return
    try:
        threads = int(value.split(",")[0])
    except ValueError:
        return  # a cold torch ignores an unparsable value too
    if threads > 0:
        torch.set_num_threads(threads)


def _run_as_main(script: str) -> int | KeyboardInterrupt:
    """Run the script as ``__main__``; its exit code, or the uncaught KeyboardInterrupt."""
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return _system_exit_code(exc)
    except KeyboardInterrupt as exc:
        _report_uncaught(exc)
        return exc
    except BaseException as exc:
        _report_uncaught(exc)
        return 1
    return 0


def _system_exit_code(exc: SystemExit) -> int:
    """CPython's reading of ``sys.exit(code)``: None → 0, int → itself, else printed and 1."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _report_uncaught(exc: BaseException) -> None:
    """Print the traceback through ``sys.excepthook``, without the launcher's own frames."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _LAUNCHER_FILES:
        tb = tb.tb_next
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


# Frames above the script's own: this module's and runpy's (frozen in CPython 3.11).
_LAUNCHER_FILES = (_run_as_main.__code__.co_filename, runpy.run_path.__code__.co_filename)


def _exit_like_cpython(outcome: int | KeyboardInterrupt) -> NoReturn:
    """Finalise as ``Py_FinalizeEx`` does, then exit with the status a cold run would have.

    ``os._exit`` is the only way out: unwinding would run the server's own cleanup in the child.
    """
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:
        traceback.print_exc()
    if isinstance(outcome, KeyboardInterrupt):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        outcome = 128 + signal.SIGINT  # only reached if SIGINT is blocked
    os._exit(int(outcome) & 0xFF)

"""Parent-death signal, shared by the hunt and trial wrappers, the warm launcher and DDP workers."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``signum`` to the calling process when its parent dies.

    Used as `preexec_fn` (and by a wrapper on itself) so that killing the workflow, even with
    SIGKILL, never leaves an `orion hunt`, a trial or a warm trial child running on without anyone
    to watch it. Callers check `os.getppid()` afterwards: the parent may have died before.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return  # not Linux: trial timeouts are then the only guard against orphans

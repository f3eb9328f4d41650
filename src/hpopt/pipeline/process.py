"""Process hygiene shared by the hunt and trial wrappers (stdlib only)."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM the calling process when its parent dies.

    Used as `preexec_fn` (and by a wrapper on itself) so that killing the workflow, even with
    SIGKILL, never leaves an `orion hunt` or a trial running on without anyone to watch it.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux: trial timeouts are then the only guard against orphans

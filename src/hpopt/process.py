"""Process lifetimes: the parent-death signal (shared by the hunt and trial wrappers, the warm
launcher and DDP workers), and a rule wrapper's hold on every process its command starts."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# Rounds of SIGKILL over the tree: a process may fork while the previous round runs.
_KILL_ROUNDS = 5


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


def become_subreaper() -> None:
    """Make every orphaned descendant of this process its child instead of PID 1's.

    A process that detaches (the warm launcher's server starts in a session of its own, and
    its starter exits) or whose parent died stays in this process's tree, so that
    `descendants` finds it and `kill_descendants` ends it. Linux only; elsewhere a no-op.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _stat_fields(stat: Path) -> list[str]:
    """The fields of a /proc/PID/stat file after the command name (state, ppid, …): the name,
    in parentheses, may hold spaces, so the split comes after its closing one."""
    return stat.read_text().rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int:
    """The parent PID of `pid` (0 when it is gone or unreadable; Linux)."""
    try:
        return int(_stat_fields(Path(f"/proc/{pid}/stat"))[1])
    except (OSError, ValueError, IndexError):
        return 0


def descendants(root: int) -> list[int]:
    """Every live process below `root` in the process tree, read from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(stat)
            if fields[0] != "Z":  # a zombie runs nothing; its parent reaps it
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill_descendants(root: int) -> None:
    """SIGKILL every process below `root`, again until none is left (or after a few rounds)."""
    for _ in range(_KILL_ROUNDS):
        alive = descendants(root)
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)

"""File helpers shared by recipes and the pipeline: atomic writes and SHA-256 digests (stdlib only).

Atomic writes: Orion parses ``$ORION_RESULTS_PATH`` once the trial process ends, and the
workflow reads result and record files that concurrent processes write; a process killed half-way
through a plain ``open(..., "w")`` would leave truncated JSON. A temp file in the same folder plus
``os.replace`` is atomic on POSIX filesystems, and the temp file is removed on any failure.
``mkstemp`` creates the temp file 0600; it gets the mode a plain ``open`` would have given it
(0666 less the umask), so a handed-over result stays readable by whom the umask allows.

A write that fails on a full disk raises :class:`DiskFullError`, which names the path, the free
space and the fix (``disk full at PATH: …``); the rule wrapper (reprohunt.logged) shows that
line first. It is decided where the write failed, before the temp file is removed.
"""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

# What a full-disk message starts with (reprohunt.logged looks for it in a step's output).
DISK_FULL = "disk full at "
# Below this many free bytes where a write just failed, the disk is taken to be full.
FULL_BELOW_BYTES = 1 << 20


class DiskFullError(OSError):
    """A write that a full filesystem refused, named ``disk full at PATH: …`` with the fix."""


def disk_full(path: Path, refused: bool, when: str, probe: Path | None = None) -> str | None:
    """``disk full at PATH: F MB free of T MB WHEN; fix: …`` when a write to ``path`` was refused
    for space (``refused``: ENOSPC) or the filesystem of ``probe`` (default: ``path``'s folder) has
    less than FULL_BELOW_BYTES free now; else None. The one rule of both places that judge it:
    here, where a write failed, and the rule wrapper (reprohunt.logged), after a step."""
    try:
        usage = shutil.disk_usage(probe or path.parent)
    except OSError:
        return None
    if not refused and usage.free >= FULL_BELOW_BYTES:
        return None
    return (
        f"{DISK_FULL}{path}: {usage.free / 2**20:.1f} MB free of {usage.total / 2**20:.1f} MB "
        f"{when}; fix: free space on that filesystem or move the results folder to a larger disk, "
        "then rerun"
    )


def disk_full_error(path: Path, error: Exception) -> DiskFullError | None:
    """``error``, raised while writing ``path``, as a DiskFullError if the disk is full now.

    Libraries hide ENOSPC behind their own errors (libsndfile's "System error.", torch.save's
    "unexpected pos … vs …"), so besides ENOSPC itself the witness is the free space at the
    moment of the failure: the failed file still holds its space here, and once it is removed
    (by atomic_path, or a step's clean-up) the disk looks free again.
    """
    if isinstance(error, DiskFullError):
        return None
    refused = isinstance(error, OSError) and error.errno == errno.ENOSPC
    # Absolute: the message is read far from the process's working folder.
    message = disk_full(path.absolute(), refused, "as the write failed")
    return None if message is None else DiskFullError(errno.ENOSPC, message)


@contextlib.contextmanager
def disk_full_named(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise a failure of the block as DiskFullError naming ``path`` when its disk is full."""
    try:
        yield
    except Exception as error:
        full = disk_full_error(Path(path), error)
        if full is None:
            raise
        raise full from error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path beside ``path`` to write to; it replaces ``path`` when the block succeeds.

    On any failure the temp file is removed, so no partial file is left behind; a failure on a
    full disk becomes a DiskFullError naming ``path`` (judged before the removal frees space).
    """
    target = Path(path)
    handle, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    os.close(handle)
    try:
        os.chmod(temp_name, 0o666 & ~current_umask())
        with disk_full_named(target):
            yield Path(temp_name)
            os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process umask (read without changing it: os.umask would set it for every thread)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022  # no /proc (not Linux): the usual default


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old file or the whole new one."""
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


def write_json_atomically(
    path: str | os.PathLike[str],
    payload: Any,
    indent: int | None = None,
    default: Callable[[Any], Any] | None = None,
) -> None:
    """Serialise ``payload`` as strict JSON (no NaN/inf) and atomically replace ``path``.

    ``default`` is ``json.dumps``'s: how to write a value JSON has no type for (``str`` for a
    record gathered from libraries that hand back their own types)."""
    text = json.dumps(payload, allow_nan=False, indent=indent, default=default)
    write_text_atomically(path, text + "\n" if indent is not None else text)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (streamed: archives of hundreds of MB do not fill memory)."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_of(hashes: Mapping[str, str]) -> str:
    """One SHA-256 standing for a set of files: hashed over sorted ``relpath  sha256`` lines.

    Paths are part of the digest so that renaming or moving a file changes it too.
    """
    return sha256_text("".join(f"{relpath}  {hashes[relpath]}\n" for relpath in sorted(hashes)))

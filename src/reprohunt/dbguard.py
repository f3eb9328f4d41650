"""Guard the PickledDB: refuse a damaged or emptied database before a hunt, snapshot a good one.

Orion 0.2.7 reads an empty `orion_db.pkl` as a new, empty database (PickledDB._get_database), so
a truncated file silently restarts the hunt at trial 1, and a half-written one fails with a bare
`UnpicklingError`. Before every hunt the database is checked against what the results folder
shows (each completed trial leaves its folder with a filled-in Orion result file); after each
successful hunt it is copied to `orion_db.pkl.bak`, from which the hunt can resume.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

from hpopt.files import atomic_path
from reprohunt.orion_storage import DB_FILE

BACKUP_SUFFIX = ".bak"


class DatabaseError(Exception):
    """The database does not match the results folder; the message names the file and the fix."""


def completed_on_disk(hunt_dir: Path) -> set[str]:
    """Ids of trials whose folder holds a filled-in Orion result file (any experiment)."""
    return {
        result.parent.name
        for result in hunt_dir.glob("*/trials/*/results_*.log")
        if result.stat().st_size
    }


def known_to_database(database: Any) -> set[str]:
    """Ids of every trial the database holds, whatever its status.

    Not only the completed ones: a hunt killed after a trial wrote its result file and before
    Orion recorded it leaves that trial `reserved` with its result on disk. Recovery returns it
    to the pool and it runs again; only a trial the database has never heard of shows that the
    database is older than the folder or another one.
    """
    trials = database._db["trials"].find({})  # noqa: SLF001 (Orion's EphemeralDB has no API)
    return {trial["id"] for trial in trials}


def _fix(path: Path) -> str:
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    if backup.exists():
        return f"restore the last good copy (`cp {backup} {path}`) and rerun"
    return f"restore it from a copy, or remove {path.parent} to start the hunt over"


def check(hunt_dir: Path) -> None:
    """Refuse a database that is unreadable, or that lost trials the results folder shows."""
    path = hunt_dir / DB_FILE
    on_disk = completed_on_disk(hunt_dir)
    if not path.exists() or path.stat().st_size == 0:
        if on_disk:
            state = "missing" if not path.exists() else "empty"
            raise DatabaseError(
                f"{path} is {state}, but {len(on_disk)} completed trial folder(s) under "
                f"{hunt_dir} show an earlier hunt: Orion would silently start over. " + _fix(path)
            )
        return
    try:
        database = pickle.loads(path.read_bytes())
    except Exception as error:  # unpickling a damaged file can raise almost anything
        raise DatabaseError(
            f"{path} is damaged ({type(error).__name__}: {error}). " + _fix(path)
        ) from error
    lost = on_disk - known_to_database(database)
    if lost:
        raise DatabaseError(
            f"{path} lacks {len(lost)} trial(s) whose folders hold a result (e.g. "
            f"{sorted(lost)[0]}): it is older than the results folder or was replaced. "
            + _fix(path)
        )


def snapshot(hunt_dir: Path) -> None:
    """Copy the database to `orion_db.pkl.bak` (atomically: a reader sees a whole copy)."""
    path = hunt_dir / DB_FILE
    if path.exists() and path.stat().st_size:
        with atomic_path(path.with_name(path.name + BACKUP_SUFFIX)) as temp:
            shutil.copyfile(path, temp)

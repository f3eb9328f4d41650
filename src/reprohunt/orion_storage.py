"""One place that turns the workflow's `orion.storage` config into what Orion needs.

Why: the same storage must reach `orion hunt` (a subprocess) and Orion's Python API (this
process), and database credentials must never be written to results/ or provenance, so they
only ever travel in environment variables: ORION_DB_USER / ORION_DB_PASSWORD, set by the user,
become part of the MongoDB address inside `ORION_DB_ADDRESS` for Orion, and `CREDENTIAL_VARIABLES`
lists every variable a trial must not inherit (see reprohunt.trial).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

DB_FILE = "orion_db.pkl"
USER_VARIABLE, PASSWORD_VARIABLE = "ORION_DB_USER", "ORION_DB_PASSWORD"
# ORION_DB_ADDRESS carries the password for MongoDB; the others are kept out of trials too,
# since a trial never talks to the database (it writes its result file).
CREDENTIAL_VARIABLES = (USER_VARIABLE, PASSWORD_VARIABLE, "ORION_DB_ADDRESS")


def storage_config(spec_storage: dict[str, Any], hunt_dir: Path) -> dict[str, Any]:
    """Orion's `storage:` dict for the API (credentials included for MongoDB; never persist it)."""
    kind = spec_storage["type"]
    if kind == "pickleddb":
        database = {"type": "pickleddb", "host": str((hunt_dir / DB_FILE).resolve())}
    else:
        database = {
            "type": "mongodb",
            "host": mongodb_address(spec_storage),
            "port": spec_storage.get("port", 27017),
            "name": spec_storage.get("name", "orion"),
        }
    return {"type": "legacy", "database": database}


def mongodb_address(spec_storage: dict[str, Any]) -> str:
    """`mongodb://user:password@host` from ORION_DB_USER/ORION_DB_PASSWORD, or the bare host."""
    host = spec_storage.get("host", "localhost")
    user, password = os.environ.get(USER_VARIABLE), os.environ.get(PASSWORD_VARIABLE)
    if user and password:
        return f"mongodb://{quote_plus(user)}:{quote_plus(password)}@{host}"
    return host


def storage_env(config: dict[str, Any]) -> dict[str, str]:
    """Environment variables that make any `orion` command use `config` (they beat YAML files)."""
    database = config["database"]
    env = {"ORION_DB_TYPE": database["type"], "ORION_DB_ADDRESS": str(database["host"])}
    if database["type"] == "mongodb":
        env |= {"ORION_DB_PORT": str(database["port"]), "ORION_DB_NAME": database["name"]}
    return env


def redact(text: str) -> str:
    """`text` with any `user:password@` of a URI, and the password itself, replaced by `***`."""
    text = re.sub(r"://[^/@\s]*@", "://***@", text)
    password = os.environ.get(PASSWORD_VARIABLE)
    for secret in {password, quote_plus(password)} if password else ():
        text = text.replace(secret, "***")
    return text


def public_description(config: dict[str, Any]) -> dict[str, Any]:
    """The storage as it may be recorded: no credentials."""
    database = dict(config["database"])
    database["host"] = redact(str(database["host"]))
    return database

"""Write a JSON file so that a reader sees either the old content or the whole new one.

Orion parses ``$ORION_RESULTS_PATH`` once the trial process ends; a trial killed half-way
through a plain ``open(..., "w")`` would leave truncated JSON that Orion reports as a confusing
parse error. A temp file in the same folder plus ``os.replace`` is atomic on POSIX filesystems.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomically(path: str | os.PathLike[str], payload: Any) -> None:
    """Serialise ``payload`` (strict JSON: no NaN/inf) and atomically replace ``path`` with it."""
    target = Path(path)
    text = json.dumps(payload, allow_nan=False)
    handle, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise

"""SHA-256 of files and of whole file sets, the currency of the reproducibility audit."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so 300 MB archives do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_of(hashes: Mapping[str, str]) -> str:
    """One SHA-256 standing for a set of files: hashed over sorted ``relpath  sha256`` lines.

    Paths are part of the digest so that renaming or moving a file changes it too.
    """
    lines = "".join(f"{relpath}  {hashes[relpath]}\n" for relpath in sorted(hashes))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()

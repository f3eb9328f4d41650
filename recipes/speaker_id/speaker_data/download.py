"""Fetching mini-LibriSpeech: resumable download, checksum verification, safe extraction.

Only the standard library is used (urllib, tarfile), so nothing extra enters the train env.
Downloads go to ``<name>.part`` and are renamed only after the checksum matches: an interrupted
download resumes with an HTTP Range request, and a final-named archive is always a verified one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpopt.files import write_text_atomically
from speaker_data.errors import DataError
from speaker_data.prepared import SUBSET

OFFICIAL_URL = "https://www.openslr.org/resources/31/train-clean-5.tar.gz"
# Published in https://www.openslr.org/resources/31/md5sum.txt; OpenSLR gives no SHA-256.
OFFICIAL_MD5 = "5df7d4e78065366204ca6845bb08f490"
ARCHIVE_NAME = "train-clean-5.tar.gz"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """A downloaded, verified archive and the checksums recorded for provenance."""

    path: Path
    url: str
    sha256: str
    md5: str

    def provenance(self) -> dict[str, str]:
        return {"name": self.path.name, "url": self.url, "sha256": self.sha256, "md5": self.md5}


def _checksums(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _download_resumable(url: str, part: Path, timeout: float, log: Callable[[str], None]) -> None:
    """Append the rest of ``url`` to ``part`` (or start it); raise DataError if cut short."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "reprohunt-data-prepare"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the part file is complete
            return
        raise DataError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(
            f"{url}: cannot connect ({reason}); check the URL, or prepare offline with "
            "--extracted PATH"
        ) from err
    with response:
        resumed = offset > 0 and response.status == 206
        if resumed:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                raise DataError(f"{url}: server answered range {content_range!r} to {offset}-")
            log(f"resuming {part.name} at {offset} bytes")
        else:
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        received = offset
        with open(part, "ab" if resumed else "wb") as out:
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
            except (http.client.HTTPException, OSError) as err:
                raise _interrupted(url, part, received, err) from err
        if expected is not None and received < expected:
            raise _interrupted(url, part, received, f"{expected - received} bytes missing")


def _interrupted(url: str, part: Path, received: int, why: object) -> DataError:
    return DataError(
        f"download of {url} interrupted after {received} bytes ({why}); the partial file "
        f"{part} is kept: rerun the same command to resume"
    )


def fetch_archive(
    url: str,
    download_dir: Path,
    sha256: str | None,
    md5: str | None,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> Archive:
    """Download (or reuse) ``download_dir/train-clean-5.tar.gz`` and verify its checksum.

    At least one of ``sha256``/``md5`` must be given. A mismatching download stays as
    ``<name>.part`` (so a wrong expected checksum costs no re-download) and raises DataError.
    """
    if sha256 is None and md5 is None:
        raise ValueError("fetch_archive needs an expected sha256 or md5")
    download_dir.mkdir(parents=True, exist_ok=True)
    final = download_dir / ARCHIVE_NAME
    part = final.with_name(final.name + ".part")
    candidate = final if final.exists() else part
    if candidate is part:
        log(f"downloading {url} -> {part}")
        _download_resumable(url, part, timeout, log)
    actual_sha256, actual_md5 = _checksums(candidate)
    for kind, expected, actual in (("sha256", sha256, actual_sha256), ("md5", md5, actual_md5)):
        if expected is not None and expected.lower() != actual:
            raise DataError(
                f"{candidate}: {kind} is {actual}, expected {expected.lower()}; refusing it. "
                f"If the expected checksum is right, delete {candidate} and rerun to download "
                "again; if the file is right, pass its checksum with --sha256"
            )
    if candidate is part:
        os.replace(part, final)
    return Archive(path=final, url=url, sha256=actual_sha256, md5=actual_md5)


def extract_archive(
    archive: Archive, download_dir: Path, log: Callable[[str], None] = print
) -> Path:
    """Unpack ``LibriSpeech/train-clean-5`` into ``download_dir``; returns the data root.

    Extraction goes to a temp folder and is moved in whole, with a marker recording the archive's
    SHA-256, so a half-extracted tree is never taken for a complete one. Reused when the marker
    matches. tarfile's "data" filter refuses absolute paths, links out of the tree and devices.
    """
    target = download_dir / "LibriSpeech" / SUBSET
    marker = download_dir / f".{SUBSET}.extracted"
    if target.exists():
        if marker.exists() and marker.read_text().strip() == archive.sha256:
            log(f"reusing {target} (extracted from this archive)")
            return download_dir
        raise DataError(
            f"{target} exists but was not extracted from {archive.path} (sha256 "
            f"{archive.sha256}); remove it, or use --extracted {download_dir} to prepare from it"
        )
    tmp = download_dir / f".extract-tmp-{os.getpid()}"
    try:
        log(f"extracting {archive.path}")
        try:
            with tarfile.open(archive.path, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise DataError(
                f"{archive.path}: unreadable archive ({err}); delete it and rerun to download again"
            ) from err
        extracted = tmp / "LibriSpeech" / SUBSET
        if not extracted.is_dir():
            raise DataError(f"{archive.path}: archive holds no LibriSpeech/{SUBSET} folder")
        target.parent.mkdir(exist_ok=True)
        os.replace(extracted, target)
        write_text_atomically(marker, archive.sha256 + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return download_dir

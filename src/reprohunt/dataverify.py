"""``python -m reprohunt.dataverify DIR``: re-hash a prepared folder against its hashes.json.

The data contract (README, "Bring your own recipe"): a recipe's prepare script writes
``DIR/hashes.json``, ``{group: {relative path: sha256}}``, paths relative to DIR except those of
the ``audio`` group, which are relative to ``data_root`` in ``DIR/prepared.json`` (a corpus kept
outside DIR); ``prepared.json`` is written last and may record ``<digest key>`` summaries of the
groups (``corpus_sha256`` for audio, ``features_sha256``, ``manifests_sha256``).

Prints every difference, one per line and naming the file (``missing:``, ``changed:``,
``extra:``), and exits 1 if there is any, 0 if everything matches. The reproducibility audit
runs it; it needs only the standard library, so it is quick and works in either environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hpopt.files import digest_of, sha256_file

AUDIO = "audio"
_DIGESTS = {
    "audio": "corpus_sha256",
    "features": "features_sha256",
    "manifests": "manifests_sha256",
}
_SUMMARIES = {"prepared.json", "hashes.json"}


def _load_json(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def differences(prepared_dir: Path, data_root: Path | None = None) -> tuple[list[str], int]:
    """All differences between the folder and its records, and the number of files checked.

    ``data_root`` overrides where the audio is looked for (a corpus moved since preparation).
    """
    found: list[str] = []
    hashes = _load_json(prepared_dir / "hashes.json")
    if not hashes or not all(isinstance(files, dict) for files in hashes.values()):
        return [f"missing: {prepared_dir / 'hashes.json'} (absent or not a valid hash record)"], 0
    summary = _load_json(prepared_dir / "prepared.json")
    if summary is None:
        found.append(f"missing: {prepared_dir / 'prepared.json'} (preparation did not complete)")
    else:
        for group, key in _DIGESTS.items():
            if key in summary and summary[key] != digest_of(hashes.get(group, {})):
                found.append(
                    f"changed: {prepared_dir / 'prepared.json'} {key} disagrees with hashes.json"
                )
    if data_root is None and summary is not None and "data_root" in summary:
        data_root = prepared_dir / summary["data_root"]  # an absolute path stays absolute
    checked = 0
    for group in hashes:
        base = data_root if group == AUDIO else prepared_dir
        if base is None:
            found.append(
                f"missing: data root of the audio unknown; pass --data-root to check {group}"
            )
            continue
        for relpath, expected in sorted(hashes[group].items()):
            path = base / relpath
            checked += 1
            if not path.is_file():
                found.append(f"missing: {path}")
            elif (actual := sha256_file(path)) != expected:
                found.append(f"changed: {path} (sha256 {actual}, recorded {expected})")
    found.extend(_extras(prepared_dir, data_root, hashes))
    return found, checked


def _extras(prepared_dir: Path, data_root: Path | None, hashes: dict) -> list[str]:
    """Files present but not recorded: anything in the prepared folder, and stray FLAC files."""
    known = {prepared_dir / rel for group in hashes if group != AUDIO for rel in hashes[group]}
    known |= {prepared_dir / name for name in _SUMMARIES}
    audio_files: set[Path] = set()
    if data_root is not None and AUDIO in hashes:
        known |= {data_root / rel for rel in hashes[AUDIO]}
        audio_dirs = {(data_root / rel).parents[2] for rel in hashes[AUDIO]}
        audio_files = {path for folder in audio_dirs for path in folder.rglob("*.flac")}
    present = {path for path in prepared_dir.rglob("*") if path.is_file()} | audio_files
    return [f"extra: {path}" for path in sorted(present - known)]


def data_identity(prepared_dir: Path) -> str:
    """SHA-256 of the folder's hashes.json: one value that changes with any data file."""
    return sha256_file(prepared_dir / "hashes.json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reprohunt.dataverify",
        description="Re-hash a prepared data folder against its hashes.json; exit 1 if any differ.",
    )
    parser.add_argument("prepared_dir", type=Path, help="the prepared folder (holds hashes.json)")
    parser.add_argument("--data-root", type=Path, help="where the audio is, if it moved")
    args = parser.parse_args(argv)
    if not args.prepared_dir.is_dir():
        parser.error(f"{args.prepared_dir} is not a folder")
    found, checked = differences(args.prepared_dir, args.data_root)
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} difference(s) in {args.prepared_dir}", file=sys.stderr)
        return 1
    print(f"OK: {checked} files in {args.prepared_dir} match hashes.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

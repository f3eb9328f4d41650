"""``python -m hpopt.data.verify DIR``: re-hash a prepared folder against its hashes.json.

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

from hpopt.data.hashing import digest_of, sha256_file

_GROUPS = ("audio", "features", "manifests")
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
    if hashes is None or not all(isinstance(hashes.get(g), dict) for g in _GROUPS):
        return [f"missing: {prepared_dir / 'hashes.json'} (absent or not a valid hash record)"], 0
    summary = _load_json(prepared_dir / "prepared.json")
    if summary is None:
        found.append(f"missing: {prepared_dir / 'prepared.json'} (preparation did not complete)")
    else:
        for group, key in _DIGESTS.items():
            if summary.get(key) != digest_of(hashes[group]):
                found.append(
                    f"changed: {prepared_dir / 'prepared.json'} {key} disagrees with hashes.json"
                )
    if data_root is None and summary is not None and "data_root" in summary:
        data_root = prepared_dir / summary["data_root"]  # an absolute path stays absolute
    bases = {"features": prepared_dir, "manifests": prepared_dir, "audio": data_root}
    checked = 0
    for group in _GROUPS:
        base = bases[group]
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
    known = {prepared_dir / rel for group in ("features", "manifests") for rel in hashes[group]}
    known |= {prepared_dir / name for name in _SUMMARIES}
    audio_files: set[Path] = set()
    if data_root is not None:
        known |= {data_root / rel for rel in hashes["audio"]}
        audio_dirs = {(data_root / rel).parents[2] for rel in hashes["audio"]}
        audio_files = {path for folder in audio_dirs for path in folder.rglob("*.flac")}
    present = {path for path in prepared_dir.rglob("*") if path.is_file()} | audio_files
    return [f"extra: {path}" for path in sorted(present - known)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpopt.data.verify",
        description="Re-hash a folder made by hpopt.data.prepare; exit 1 on any difference.",
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

"""``python -m reprohunt.dataverify``: every kind of difference is named and fails the check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _verify(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reprohunt.dataverify", str(folder), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def prepared_copy(prepared_tiny: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "prepared"
    shutil.copytree(prepared_tiny, copy)
    return copy


def test_untouched_folder_verifies(prepared_tiny: Path) -> None:
    run = _verify(prepared_tiny)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("OK: 35 files")  # 24 audio, 7 feature, 4 manifest files


def test_changed_missing_and_extra_files_are_each_named(prepared_copy: Path) -> None:
    changed = prepared_copy / "features/valid.npy"
    changed.write_bytes(changed.read_bytes()[:-4] + b"\0\0\0\0")
    missing = sorted((prepared_copy / "corpus").rglob("*.flac"))[0]
    missing.unlink()
    extra = prepared_copy / "manifests/notes.txt"
    extra.write_text("stray")
    stray_audio = missing.with_name("1001-100000-9999.flac")
    shutil.copy(sorted((prepared_copy / "corpus").rglob("*.flac"))[0], stray_audio)
    run = _verify(prepared_copy)
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert any(line.startswith(f"changed: {changed} (sha256 ") for line in lines), lines
    assert f"missing: {missing}" in lines
    assert f"extra: {extra}" in lines
    assert f"extra: {stray_audio}" in lines
    assert len(lines) == 4
    assert "4 difference(s)" in run.stderr


def test_incomplete_folder_and_edited_hash_record_are_reported(prepared_copy: Path) -> None:
    (prepared_copy / "prepared.json").unlink()
    run = _verify(prepared_copy)
    assert run.returncode == 1
    assert "prepared.json (preparation did not complete)" in run.stdout
    assert "data root of the audio unknown" in run.stdout
    assert (
        _verify(prepared_copy, "--data-root", str(prepared_copy / "corpus")).stdout.count("\n") == 1
    )


def test_hash_record_edited_to_match_a_changed_file_is_caught(prepared_copy: Path) -> None:
    hashes_path = prepared_copy / "hashes.json"
    hashes = json.loads(hashes_path.read_text())
    hashes["manifests"]["manifests/labels.json"] = "0" * 64
    hashes_path.write_text(json.dumps(hashes))
    run = _verify(prepared_copy)
    assert run.returncode == 1
    assert "manifests_sha256 disagrees with hashes.json" in run.stdout
    assert f"changed: {prepared_copy / 'manifests/labels.json'}" in run.stdout


def test_missing_hash_record_fails(prepared_copy: Path) -> None:
    (prepared_copy / "hashes.json").unlink()
    run = _verify(prepared_copy)
    assert run.returncode == 1 and "hashes.json (absent or not a valid hash record)" in run.stdout


def test_moved_audio_is_found_with_data_root(prepared_copy: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.move(prepared_copy / "corpus", moved)
    assert _verify(prepared_copy).returncode == 1
    run = _verify(prepared_copy, "--data-root", str(moved))
    assert run.returncode == 0, run.stdout

"""Opening a prepared folder from a recipe, with checks that fail before any training starts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from speaker_data.errors import DataError

# Bumped when the layout of a prepared folder changes; readers refuse other versions.
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
# The mini-LibriSpeech subset; the synthetic corpus uses the same folder name.
SUBSET = "train-clean-5"


@dataclass(frozen=True)
class SplitIndex:
    """One split, in index order: where each utterance's frames are and who speaks."""

    name: str
    utt_ids: list[str]
    offsets: list[int]
    frames: list[int]
    spk_ids: list[str]
    wav_relpaths: list[str]  # relative to the data root, from the manifest


@dataclass(frozen=True)
class PreparedData:
    folder: Path
    summary: dict
    labels: dict[str, int]
    data_root: Path

    @property
    def n_mels(self) -> int:
        return int(self.summary["n_mels"])

    @property
    def features_dir(self) -> Path:
        return self.folder / "features"

    def split(self, name: str) -> SplitIndex:
        index = _read_json(self.features_dir / f"{name}.index.json")
        manifest = _read_json(self.folder / "manifests" / f"{name}.json")
        items = index["utterances"]
        missing = [utt for utt in items if utt not in manifest]
        if missing:
            raise DataError(
                f"{self.folder}/manifests/{name}.json lacks {missing[0]} listed in the feature "
                "index; the folder is inconsistent, re-run prepare"
            )
        prefix = "{data_root}/"
        return SplitIndex(
            name=name,
            utt_ids=list(items),
            offsets=[items[u]["offset"] for u in items],
            frames=[items[u]["frames"] for u in items],
            spk_ids=[items[u]["spk_id"] for u in items],
            wav_relpaths=[manifest[u]["wav"].removeprefix(prefix) for u in items],
        )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataError(
            f"{path} is missing; the prepared folder is incomplete, re-run prepare"
        ) from err
    except ValueError as err:
        raise DataError(f"{path} is not valid JSON ({err}); re-run prepare") from err


def open_prepared(folder: Path, n_mels: int, data_root: Path | None = None) -> PreparedData:
    """Check ``folder`` is a complete prepared folder whose features match ``n_mels``.

    ``data_root`` overrides where the audio is (only the on-the-fly feature path reads it).
    """
    summary_path = folder / "prepared.json"
    if not folder.is_dir():
        raise DataError(
            f"data_folder {folder} does not exist; create it with "
            "python recipes/speaker_id/speaker_id_prepare.py --out " + str(folder)
        )
    if not summary_path.is_file():
        raise DataError(
            f"{summary_path} is missing: {folder} is not a complete prepared folder; "
            f"(re)create it with python recipes/speaker_id/speaker_id_prepare.py --out {folder}"
        )
    summary = _read_json(summary_path)
    if summary.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{summary_path}: format_version {summary.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}; re-run prepare"
        )
    if summary.get("n_mels") != n_mels:
        raise DataError(
            f"n_mels: the recipe asks for {n_mels} but {summary_path} has n_mels "
            f"{summary.get('n_mels')}; pass --n_mels {summary.get('n_mels')} or re-run prepare "
            f"with --n-mels {n_mels}"
        )
    for name in [*(f"{s}.npy" for s in SPLITS), "stats.npz"]:
        if not (folder / "features" / name).is_file():
            raise DataError(f"{folder / 'features' / name} is missing; re-run prepare")
    labels = _read_json(folder / "manifests" / "labels.json")
    root = data_root if data_root is not None else folder / summary["data_root"]
    return PreparedData(folder=folder, summary=summary, labels=labels, data_root=root)

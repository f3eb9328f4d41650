"""Reading a LibriSpeech-layout corpus: find it, validate it, list utterances, split them.

Both sources (the synthetic corpus and mini-LibriSpeech) go through this one code path, so the
synthetic default tests exactly what a real corpus will meet.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from speaker_data.errors import DataError
from speaker_data.features import SAMPLE_RATE, n_frames
from speaker_data.prepared import SPLITS, SUBSET

_NAME = re.compile(r"^(?P<spk>\d+)-(?P<chapter>\d+)-(?P<utt>\d+)\.flac$")
# The x-vector's five TDNN layers see 15 frames; shorter utterances cannot be classified.
MIN_FRAMES = 15


@dataclass(frozen=True)
class Utterance:
    """One audio file; ``relpath`` is relative to the data root (which holds LibriSpeech/)."""

    utt_id: str
    spk_id: str
    relpath: str
    n_samples: int

    @property
    def seconds(self) -> float:
        return self.n_samples / SAMPLE_RATE


def find_data_root(path: Path) -> Path:
    """The folder holding ``LibriSpeech/train-clean-5``, given it or one of the two below it."""
    path = path.resolve()
    if path.name == SUBSET and path.parent.name == "LibriSpeech":
        root = path.parent.parent
    elif path.name == "LibriSpeech":
        root = path.parent
    else:
        root = path
    if (root / "LibriSpeech" / SUBSET).is_dir():
        return root
    raise DataError(
        f"{path}: no LibriSpeech/{SUBSET} folder here; pass the folder that contains "
        f"LibriSpeech/{SUBSET}/<speaker>/<chapter>/*.flac (or that folder itself)"
    )


def scan_corpus(data_root: Path) -> list[Utterance]:
    """All utterances under ``data_root/LibriSpeech/train-clean-5``, sorted by id, validated.

    Refuses (naming the path) an empty speaker or chapter folder, a misnamed or unreadable FLAC
    file, a sample rate other than 16 kHz, multi-channel audio, and audio too short to classify.
    """
    subset_dir = data_root / "LibriSpeech" / SUBSET
    speakers = sorted(p for p in subset_dir.iterdir() if p.is_dir())
    if not speakers:
        raise DataError(f"{subset_dir}: no speaker folders; the corpus is empty")
    utterances = []
    for speaker_dir in speakers:
        found = sorted(speaker_dir.glob("*/*.flac"))
        if not found:
            raise DataError(
                f"{speaker_dir}: speaker folder holds no <chapter>/*.flac files; "
                "remove the folder or restore its audio"
            )
        for path in found:
            utterances.append(_read_utterance(path, data_root))
    return utterances


def _read_utterance(path: Path, data_root: Path) -> Utterance:
    match = _NAME.match(path.name)
    chapter_dir = path.parent
    if (
        match is None
        or match["spk"] != chapter_dir.parent.name
        or match["chapter"] != chapter_dir.name
    ):
        raise DataError(
            f"{path}: expected a name <speaker>-<chapter>-<utt>.flac matching its folders "
            f"{chapter_dir.parent.name}/{chapter_dir.name}"
        )
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(
            f"{path}: unreadable audio file ({err}); re-extract or re-download it"
        ) from err
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise DataError(
            f"{path}: {info.samplerate} Hz, {info.channels} channel(s); "
            f"this recipe needs mono {SAMPLE_RATE} Hz audio"
        )
    if n_frames(info.frames) < MIN_FRAMES:
        raise DataError(
            f"{path}: {info.frames} samples is too short (needs at least "
            f"{MIN_FRAMES} feature frames, about 0.17 s)"
        )
    return Utterance(
        utt_id=path.stem,
        spk_id=match["spk"],
        relpath=path.relative_to(data_root).as_posix(),
        n_samples=info.frames,
    )


def split_by_speaker(
    utterances: Sequence[Utterance], ratio: Sequence[int], seed: int
) -> dict[str, list[Utterance]]:
    """Split by utterance, per speaker, so every speaker appears in train, valid and test.

    Each speaker's utterances (in id order) are shuffled by one ``random.Random(seed)`` stream
    taken over speakers in id order; valid and test each get ``round(n * ratio / 100)`` but at
    least one utterance, train the rest. Speaker-level stratification differs from SpeechBrain's
    global shuffle on purpose: a speaker missing from valid would make the error meaningless.
    """
    rng = random.Random(seed)
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in sorted(utterances, key=lambda u: u.utt_id):
        by_speaker.setdefault(utt.spk_id, []).append(utt)
    splits: dict[str, list[Utterance]] = {name: [] for name in SPLITS}
    for spk_id in sorted(by_speaker):
        utts = by_speaker[spk_id]
        n_valid = max(1, round(len(utts) * ratio[1] / 100))
        n_test = max(1, round(len(utts) * ratio[2] / 100))
        if len(utts) - n_valid - n_test < 1:
            raise DataError(
                f"speaker {spk_id} has {len(utts)} utterance(s); at least 3 are needed so that "
                "it appears in train, valid and test"
            )
        rng.shuffle(utts)
        splits["valid"].extend(utts[:n_valid])
        splits["test"].extend(utts[n_valid : n_valid + n_test])
        splits["train"].extend(utts[n_valid + n_test :])
    return {name: sorted(utts, key=lambda u: u.utt_id) for name, utts in splits.items()}

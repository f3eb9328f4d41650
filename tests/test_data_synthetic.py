"""The synthetic corpus generator: determinism, LibriSpeech layout, real FLAC audio."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf
from speaker_data.synthetic import SyntheticConfig, generate_corpus, synthesize

from hpopt.files import sha256_file

TINY = SyntheticConfig(seed=3, n_speakers=3, utts_per_speaker=3, min_seconds=0.4, max_seconds=0.6)


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*.flac"))}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = generate_corpus(TINY, tmp_path / "a")
    generate_corpus(TINY, tmp_path / "b")
    generate_corpus(SyntheticConfig(**{**TINY.as_dict(), "seed": 4}), tmp_path / "c")
    hashes_a, hashes_b, hashes_c = (_hashes(tmp_path / n) for n in "abc")
    assert len(hashes_a) == len(first) == 9
    assert hashes_a == hashes_b
    assert hashes_a.keys() == hashes_c.keys()
    assert not set(hashes_a.values()) & set(hashes_c.values())


def test_more_utterances_leave_existing_ones_unchanged(tmp_path: Path) -> None:
    generate_corpus(TINY, tmp_path / "small")
    generate_corpus(SyntheticConfig(**{**TINY.as_dict(), "utts_per_speaker": 4}), tmp_path / "big")
    small, big = _hashes(tmp_path / "small"), _hashes(tmp_path / "big")
    assert len(big) == 12
    assert {k: big[k] for k in small} == small


def test_files_are_16k_mono_flac_in_librispeech_layout(tmp_path: Path) -> None:
    relpaths = generate_corpus(TINY, tmp_path)
    name = re.compile(r"^LibriSpeech/train-clean-5/(\d+)/(\d+)/(\d+)-(\d+)-(\d{4})\.flac$")
    for relpath in relpaths:
        match = name.match(relpath)
        assert match, relpath
        assert match[1] == match[3] and match[2] == match[4]
        info = sf.info(str(tmp_path / relpath))
        assert (info.format, info.subtype, info.samplerate, info.channels) == (
            "FLAC",
            "PCM_16",
            16000,
            1,
        )
        assert TINY.min_seconds <= info.duration <= TINY.max_seconds
    chapters = {Path(r).parent.name for r in relpaths if "/1001/" in r}
    assert len(chapters) == TINY.chapters_per_speaker


def test_speakers_differ_more_than_utterances_of_one_speaker() -> None:
    # Long-term average spectra: same-speaker utterances should be closer than other speakers'.
    config = SyntheticConfig(seed=0, min_seconds=2.0, max_seconds=2.0)

    def ltas(speaker: int, utt: int) -> np.ndarray:
        signal = synthesize(config, speaker, utt)
        frames = np.lib.stride_tricks.sliding_window_view(signal, 512)[::256]
        spectrum = np.log(np.mean(np.abs(np.fft.rfft(frames * np.hanning(512))) ** 2, axis=0))
        return spectrum - spectrum.mean()

    within, between = [], []
    for speaker in range(6):
        a, b = ltas(speaker, 0), ltas(speaker, 1)
        within.append(np.linalg.norm(a - b))
        between.append(np.linalg.norm(a - ltas((speaker + 1) % 6, 0)))
    assert np.mean(within) < np.mean(between)


def test_signal_is_bounded_and_noisy_not_silent() -> None:
    signal = synthesize(TINY, 0, 0)
    assert np.isfinite(signal).all()
    assert 0.2 < np.max(np.abs(signal)) <= 0.5
    assert np.std(signal) > 0.01

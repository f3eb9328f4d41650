"""Log-mel features: framing, filterbank, and cache == on-the-fly computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speaker_data.features import (
    HOP_LENGTH,
    N_FFT,
    SAMPLE_RATE,
    fbank,
    mel_filterbank,
    n_frames,
)


def test_frame_count_without_centre_padding() -> None:
    assert n_frames(N_FFT - 1) == 0
    assert n_frames(N_FFT) == 1
    assert n_frames(N_FFT + HOP_LENGTH - 1) == 1
    assert n_frames(N_FFT + HOP_LENGTH) == 2
    assert fbank(np.zeros(SAMPLE_RATE, dtype=np.float32), 23).shape == (n_frames(SAMPLE_RATE), 23)


def test_too_short_signal_is_refused_with_its_length() -> None:
    with pytest.raises(ValueError, match="399 samples"):
        fbank(np.zeros(N_FFT - 1), 40)


def test_filterbank_is_triangular_and_covers_the_band() -> None:
    weights = mel_filterbank(40).numpy()
    assert weights.shape == (N_FFT // 2 + 1, 40)
    assert weights.min() >= 0 and weights.max() <= 1
    assert (weights > 0).sum(axis=1).max() <= 2  # a bin belongs to at most two triangles
    assert (weights.sum(axis=0) > 0).all()  # no empty filter at 40 bands
    with pytest.raises(ValueError, match="n_mels"):
        mel_filterbank(0)


def test_a_tone_peaks_in_the_band_centred_on_its_frequency() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    weights = mel_filterbank(40).numpy()
    centres_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)[weights.argmax(axis=0)]
    for hz in (300.0, 1000.0, 4000.0):
        feats = fbank((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 40)
        peak_band = int(feats.mean(dim=0).argmax())
        assert abs(centres_hz[peak_band] - hz) / hz < 0.15, (hz, centres_hz[peak_band])


def test_cached_features_equal_fbank_of_the_decoded_audio(prepared_tiny: Path) -> None:
    # The recipe's feature_source "audio" relies on this bit-for-bit equality.
    summary = json.loads((prepared_tiny / "prepared.json").read_text())
    manifest = json.loads((prepared_tiny / "manifests/valid.json").read_text())
    index = json.loads((prepared_tiny / "features/valid.index.json").read_text())
    array = np.load(prepared_tiny / "features/valid.npy", mmap_mode="r")
    assert array.shape[1] == summary["n_mels"] == index["n_mels"]
    data_root = prepared_tiny / summary["data_root"]
    for utt_id, entry in manifest.items():
        signal, _ = sf.read(entry["wav"].replace("{data_root}", str(data_root)), dtype="float32")
        where = index["utterances"][utt_id]
        cached = array[where["offset"] : where["offset"] + where["frames"]]
        assert torch.equal(fbank(signal, summary["n_mels"]), torch.from_numpy(np.array(cached)))

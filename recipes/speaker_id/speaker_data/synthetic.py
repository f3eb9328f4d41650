"""Deterministic synthetic speaker corpus, written as 16 kHz FLAC in LibriSpeech layout.

Why synthetic: the default workflow must run offline in minutes, yet exercise the real code path
(FLAC files in ``LibriSpeech/train-clean-5/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``).

Each speaker is a source-filter voice: a pitch range, a vocal-tract length (formant scale) with
personal per-vowel formant offsets, formant bandwidths, a spectral tilt, a speaking rate,
breathiness and a fricative colour. Each utterance draws a random syllable sequence over a
shared vowel inventory, with per-utterance pitch shift, formant jitter, channel tilt and
background noise at a random SNR. Speakers' parameter ranges overlap, so short crops of similar
voices are confusable and the task is learnable but not trivial.

Every speaker and every utterance has its own random stream derived from ``(seed, speaker,
utterance)``, so changing the number of utterances or speakers leaves the others unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hpopt.files import atomic_path
from speaker_data.features import SAMPLE_RATE
from speaker_data.prepared import SUBSET

# Vowel formant targets (F1, F2, F3 in Hz) of an average adult voice (Peterson & Barney-like).
_VOWELS_HZ = np.array(
    [
        [270.0, 2290.0, 3010.0],  # i
        [530.0, 1840.0, 2480.0],  # e
        [730.0, 1090.0, 2440.0],  # a
        [570.0, 840.0, 2410.0],  # o
        [300.0, 870.0, 2240.0],  # u
        [500.0, 1500.0, 2500.0],  # schwa
    ]
)
_BANDWIDTHS_HZ = np.array([80.0, 110.0, 160.0])
_STFT_SIZE = 512
_STFT_HOP = 128
_PEAK = 0.5


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and difficulty of the generated corpus; every field is recorded in prepared.json."""

    seed: int = 0
    n_speakers: int = 40
    utts_per_speaker: int = 34
    chapters_per_speaker: int = 2
    min_seconds: float = 1.0
    max_seconds: float = 2.0
    snr_db_low: float = 5.0
    snr_db_high: float = 20.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Voice:
    """A speaker's fixed source-filter parameters."""

    f0_hz: float
    f0_spread_semitones: float
    formant_scale: float
    vowel_offsets: np.ndarray  # [n_vowels, 3] multiplicative
    bandwidth_scale: float
    tilt_db_per_octave: float
    syllable_seconds: float
    breathiness: float
    fricative_hz: float


def speaker_ids(n_speakers: int) -> list[str]:
    """Numeric LibriSpeech-like speaker ids (``1001``, ``1002``, ...)."""
    return [str(1001 + index) for index in range(n_speakers)]


def chapter_id(speaker_index: int, chapter_index: int) -> str:
    return str(100000 + 100 * speaker_index + chapter_index)


def _voice(seed: int, speaker_index: int) -> Voice:
    rng = np.random.default_rng([seed, speaker_index, 0])
    return Voice(
        f0_hz=float(np.exp(rng.uniform(np.log(85.0), np.log(260.0)))),
        f0_spread_semitones=float(rng.uniform(1.0, 5.0)),
        formant_scale=float(rng.uniform(0.82, 1.22)),
        vowel_offsets=1.0 + rng.normal(0.0, 0.06, size=_VOWELS_HZ.shape),
        bandwidth_scale=float(rng.uniform(0.7, 1.6)),
        tilt_db_per_octave=float(rng.uniform(-3.0, 3.0)),
        syllable_seconds=float(rng.uniform(0.12, 0.26)),
        breathiness=float(rng.uniform(0.0, 0.3)),
        fricative_hz=float(rng.uniform(2500.0, 6000.0)),
    )


def _smooth(track: np.ndarray, width: int) -> np.ndarray:
    """Moving average along the last axis, edge-padded so the length is kept."""
    if width <= 1:
        return track
    pad = [(0, 0)] * (track.ndim - 1) + [(width // 2, width - 1 - width // 2)]
    padded = np.pad(track, pad, mode="edge")
    kernel = np.ones(width) / width
    return np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="valid"), -1, padded)


def _filter_stft(source: np.ndarray, envelopes: np.ndarray) -> np.ndarray:
    """Shape ``source`` with one magnitude envelope per STFT frame (sqrt-Hann overlap-add)."""
    window = np.sqrt(np.hanning(_STFT_SIZE + 1)[:-1])
    n_frames = envelopes.shape[0]
    padded = np.zeros((n_frames - 1) * _STFT_HOP + _STFT_SIZE)
    padded[: source.size] = source[: padded.size]
    frames = np.lib.stride_tricks.sliding_window_view(padded, _STFT_SIZE)[::_STFT_HOP][:n_frames]
    shaped = np.fft.irfft(np.fft.rfft(frames * window, axis=1) * envelopes, n=_STFT_SIZE, axis=1)
    out = np.zeros_like(padded)
    for index, frame in enumerate(shaped * window):
        out[index * _STFT_HOP : index * _STFT_HOP + _STFT_SIZE] += frame
    return out[: source.size] / (_STFT_SIZE / (2 * _STFT_HOP))


def _formant_envelope(
    freqs: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray, tilt: float
) -> np.ndarray:
    """Cascade-resonator magnitude response ``[frames, bins]`` for per-frame formants."""
    f = freqs[None, :, None]
    fc = formants[:, None, :]
    response = fc**2 / np.sqrt((fc**2 - f**2) ** 2 + (f * bandwidths) ** 2)
    octaves = np.log2(np.maximum(freqs, 50.0) / 500.0)
    return response.prod(axis=2) * 10.0 ** (tilt * octaves[None, :] / 20.0)


def synthesize(config: SyntheticConfig, speaker_index: int, utt_index: int) -> np.ndarray:
    """One utterance of one speaker as a float64 signal in [-0.5, 0.5] at 16 kHz."""
    voice = _voice(config.seed, speaker_index)
    rng = np.random.default_rng([config.seed, speaker_index, 1, utt_index])
    n_samples = int(rng.uniform(config.min_seconds, config.max_seconds) * SAMPLE_RATE)
    n_ctrl = (n_samples - 1) // _STFT_HOP + 1  # one control point per STFT hop

    # Syllable plan: kind (0 pause, 1 vowel, 2 fricative), vowel and loudness per segment.
    seg_ends, kinds, vowels, loudness = [], [], [], []
    t = 0.0
    while t < n_samples / SAMPLE_RATE:
        t += voice.syllable_seconds * rng.uniform(0.7, 1.3)
        seg_ends.append(t)
        kinds.append(rng.choice(3, p=[0.15, 0.7, 0.15]))
        vowels.append(rng.integers(len(_VOWELS_HZ)))
        loudness.append(rng.uniform(0.5, 1.0))
    if 1 not in kinds:
        # No vowel: a short all-pause plan would be silence (and the peak scaling a 0/0).
        kinds[0] = 1
    ctrl_seconds = np.arange(n_ctrl) * _STFT_HOP / SAMPLE_RATE
    segment = np.minimum(np.searchsorted(seg_ends, ctrl_seconds), len(seg_ends) - 1)
    kind = np.asarray(kinds)[segment]
    smooth = max(1, int(0.02 * SAMPLE_RATE / _STFT_HOP))

    # Formants per control point: speaker vowel targets, jittered per utterance, gliding between.
    utt_formant_scale = voice.formant_scale * (1.0 + rng.normal(0.0, 0.02))
    targets = _VOWELS_HZ * voice.vowel_offsets * utt_formant_scale
    formants = _smooth(targets[np.asarray(vowels)[segment]].T, smooth).T
    bandwidths = _BANDWIDTHS_HZ * voice.bandwidth_scale
    channel_tilt = voice.tilt_db_per_octave + rng.normal(0.0, 1.0)
    freqs = np.fft.rfftfreq(_STFT_SIZE, 1.0 / SAMPLE_RATE)
    voiced_env = _formant_envelope(freqs, formants, bandwidths, channel_tilt)
    fric_env = np.exp(-0.5 * ((freqs - voice.fricative_hz) / (0.25 * voice.fricative_hz)) ** 2)

    # Gates (per control point, smoothed) for voicing and frication, with syllable loudness.
    gain = np.asarray(loudness)[segment]
    voiced_gate = _smooth((kind == 1) * gain, smooth)
    fric_gate = _smooth((kind == 2) * gain, smooth)

    # Pitch: speaker base, per-utterance shift, declination plus per-syllable accents.
    accents = rng.normal(0.0, voice.f0_spread_semitones / 3.0, size=len(seg_ends))[segment]
    declination = np.linspace(0.5, -0.5, n_ctrl) * voice.f0_spread_semitones
    semitones = _smooth(declination + accents, 4 * smooth) + rng.normal(0.0, 1.0)
    f0_ctrl = voice.f0_hz * 2.0 ** (semitones / 12.0)
    sample_pos = np.arange(n_samples) / _STFT_HOP
    f0 = np.interp(sample_pos, np.arange(n_ctrl), f0_ctrl)
    f0 *= 1.0 + rng.normal(0.0, 0.003, size=n_samples)  # jitter
    phase = np.cumsum(f0) / SAMPLE_RATE
    pulses = 2.0 * (phase % 1.0) - 1.0
    noise = rng.normal(0.0, 1.0, size=n_samples)
    voiced_source = pulses + voice.breathiness * noise

    n_stft = (n_samples - 1) // _STFT_HOP + 1
    voiced = _filter_stft(voiced_source, voiced_env[:n_stft] * voiced_gate[:n_stft, None])
    fricated = _filter_stft(rng.normal(0.0, 1.0, n_samples), fric_env * fric_gate[:n_stft, None])
    speech = voiced / (np.std(voiced) + 1e-9) + 0.3 * fricated / (np.std(fricated) + 1e-9)

    snr_db = rng.uniform(config.snr_db_low, config.snr_db_high)
    background = np.cumsum(rng.normal(0.0, 1.0, n_samples)) * 0.02 + rng.normal(0.0, 1.0, n_samples)
    background -= background.mean()
    background *= np.std(speech) / (np.std(background) * 10.0 ** (snr_db / 20.0))
    signal = speech + background
    return signal * (_PEAK * rng.uniform(0.5, 1.0) / np.max(np.abs(signal)))


def utterance_relpath(spk_id: str, chapter: str, utt_index: int) -> str:
    """Path of an utterance relative to the data root, in LibriSpeech layout."""
    name = f"{spk_id}-{chapter}-{utt_index:04d}.flac"
    return f"LibriSpeech/{SUBSET}/{spk_id}/{chapter}/{name}"


def generate_corpus(config: SyntheticConfig, data_root: Path) -> list[str]:
    """Write the corpus under ``data_root`` as 16-bit FLAC; returns the written relative paths.

    The same config gives byte-identical files (for a given libsndfile version).
    """
    written = []
    for speaker_index, spk_id in enumerate(speaker_ids(config.n_speakers)):
        for utt_index in range(config.utts_per_speaker):
            chapter = chapter_id(speaker_index, utt_index % config.chapters_per_speaker)
            relpath = utterance_relpath(spk_id, chapter, utt_index)
            path = data_root / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            signal = synthesize(config, speaker_index, utt_index)
            with atomic_path(path) as temp:
                sf.write(temp, signal, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
            written.append(relpath)
    return written

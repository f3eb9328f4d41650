"""Log-mel filterbank features: the one function both the feature cache and the recipe's
on-the-fly ("audio") path use, so both give the model exactly the same numbers.

The mel filterbank is written here by hand because torchaudio would pin an older torch.
Settings follow SpeechBrain's ``Fbank`` defaults: 16 kHz, 25 ms Hamming window, 10 ms hop,
400-point FFT, HTK mel scale from 0 Hz to Nyquist, power spectrum, 10*log10 with a floor (the
log through :func:`portable_math.log10`, so the features are the same bits on every CPU).
Frames are taken without centre padding, so frame ``t`` covers samples ``[t*HOP, t*HOP+N_FFT)``.
torch is imported inside the functions that compute, so that argument checks and corpus
scanning (which only need the constants here) start fast.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
F_MIN_HZ = 0.0
F_MAX_HZ = SAMPLE_RATE / 2
LOG_FLOOR = 1e-10
MAX_N_MELS = 128

FEATURE_SETTINGS = {
    "sample_rate": SAMPLE_RATE,
    "n_fft": N_FFT,
    "hop_length": HOP_LENGTH,
    "window": "hamming",
    "f_min_hz": F_MIN_HZ,
    "f_max_hz": F_MAX_HZ,
    "mel_scale": "htk",
    "log": "10*log10(max(power, 1e-10))",
    "center": False,
}


def n_frames(n_samples: int) -> int:
    """Number of feature frames for a signal of ``n_samples`` (0 when shorter than one window)."""
    if n_samples < N_FFT:
        return 0
    return 1 + (n_samples - N_FFT) // HOP_LENGTH


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels: int) -> torch.Tensor:
    """Triangular HTK-mel filters as a ``[N_FFT // 2 + 1, n_mels]`` float32 matrix.

    Computed in float64 with numpy and cached, so every call site multiplies by the same matrix.
    """
    import torch

    if not 1 <= n_mels <= MAX_N_MELS:
        raise ValueError(f"n_mels must be between 1 and {MAX_N_MELS}, got {n_mels}")
    bin_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN_HZ), _hz_to_mel(F_MAX_HZ), n_mels + 2))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    weights = np.clip(np.minimum(rising, falling), 0.0, None)
    return torch.from_numpy(weights.astype(np.float32))


@functools.lru_cache(maxsize=1)
def _window() -> torch.Tensor:
    import torch

    return torch.hamming_window(N_FFT, periodic=False, dtype=torch.float32)


def fbank(signal: np.ndarray | torch.Tensor, n_mels: int) -> torch.Tensor:
    """Log-mel features ``[n_frames, n_mels]`` (float32, CPU) of a mono 16 kHz signal.

    Raises ValueError for a signal shorter than one 25 ms window, which has no frame at all.
    """
    import torch

    from speaker_data import portable_math

    wave = torch.as_tensor(signal, dtype=torch.float32).cpu()
    if wave.dim() != 1:
        raise ValueError(f"fbank expects a 1-D mono signal, got shape {tuple(wave.shape)}")
    if n_frames(wave.numel()) == 0:
        raise ValueError(
            f"signal of {wave.numel()} samples is shorter than one {N_FFT}-sample window"
        )
    with torch.no_grad():
        frames = wave.unfold(0, N_FFT, HOP_LENGTH) * _window()
        power = torch.fft.rfft(frames, n=N_FFT).abs().square()
        mel = power @ mel_filterbank(n_mels)
        return portable_math.log10(mel.clamp_min(LOG_FLOOR)) * 10.0


def seconds_to_frames(seconds: float) -> int:
    """Frame count of a duration, rounded down (at least 1): used to size training crops."""
    return max(1, math.floor(seconds * SAMPLE_RATE / HOP_LENGTH))

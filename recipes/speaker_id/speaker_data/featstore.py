"""The on-disk feature cache: one float32 array per split, an index, and train statistics.

Layout inside a prepared folder::

    features/{split}.npy         [total_frames, n_mels] float32, utterances back to back
    features/{split}.index.json  {"n_mels": n, "utterances": {utt_id: {offset, frames, spk_id}}}
    features/stats.npz           mean, var ([n_mels], float64) and count over all train frames

Trials open the arrays with ``numpy.load(mmap_mode="r")``, so no trial decodes audio and the OS
page cache shares one copy between parallel trials. Every file is byte-deterministic (npz members
get a fixed timestamp) so its SHA-256 can be compared across machines.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from hpopt.files import disk_full_named, write_json_atomically
from speaker_data.errors import DataError
from speaker_data.features import fbank, n_frames
from speaker_data.librispeech import Utterance

STATS_FILE = "stats.npz"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def array_path(features_dir: Path, split: str) -> Path:
    return features_dir / f"{split}.npy"


def index_path(features_dir: Path, split: str) -> Path:
    return features_dir / f"{split}.index.json"


def read_audio(path: Path) -> np.ndarray:
    """Decode a mono FLAC file to float32, naming the file if it is corrupt."""
    try:
        signal, _ = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(
            f"{path}: cannot decode audio ({err}); re-extract or re-download it"
        ) from err
    return signal


def reserve(path: Path) -> None:
    """Allocate the whole of a (sparse) memory-mapped file before anything is written to it.

    A store into a mapped page that the full disk cannot back is a SIGBUS: the process dies
    with no message and no clean-up, leaving the half-built folder and the disk full. An
    allocation that does not fit is an error instead, named with the path (DiskFullError).
    """
    with disk_full_named(path), open(path, "r+b") as stream:
        os.posix_fallocate(stream.fileno(), 0, os.fstat(stream.fileno()).st_size)


def write_split(
    features_dir: Path,
    split: str,
    utterances: Sequence[Utterance],
    data_root: Path,
    n_mels: int,
    progress: Callable[[int], None] = lambda done: None,
) -> None:
    """Compute log-mel features for every utterance of a split and store array + index."""
    import torch

    # The mel projection (a float32 matmul) sums in an order that depends on the thread count
    # (1 and 2 threads: about 1 in 100 frames 1 ULP apart), so the cache is computed on one
    # thread whatever the environment says: the recorded prepare command gives the same bits on
    # any machine, and so does the workflow's prepare rule (one thread).
    torch.set_num_threads(1)
    total = sum(n_frames(utt.n_samples) for utt in utterances)
    path = array_path(features_dir, split)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(total, n_mels))
    reserve(path)
    index = {}
    offset = 0
    for done, utt in enumerate(utterances, start=1):
        signal = read_audio(data_root / utt.relpath)
        if signal.shape[0] != utt.n_samples:
            raise DataError(
                f"{data_root / utt.relpath}: header says {utt.n_samples} samples but "
                f"{signal.shape[0]} decode; the file is damaged"
            )
        feats = fbank(signal, n_mels).numpy()
        array[offset : offset + feats.shape[0]] = feats
        index[utt.utt_id] = {"offset": offset, "frames": feats.shape[0], "spk_id": utt.spk_id}
        offset += feats.shape[0]
        progress(done)
    array.flush()
    del array
    index_doc = {"n_mels": n_mels, "utterances": index}
    write_json_atomically(index_path(features_dir, split), index_doc, indent=1)


def write_train_stats(features_dir: Path) -> None:
    """Per-dimension mean and variance over every train frame (float64 accumulation)."""
    frames = np.load(array_path(features_dir, "train"), mmap_mode="r")
    total = np.zeros(frames.shape[1])
    total_sq = np.zeros(frames.shape[1])
    for start in range(0, frames.shape[0], 65536):
        block = np.asarray(frames[start : start + 65536], dtype=np.float64)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = frames.shape[0]
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    _save_npz(features_dir / STATS_FILE, mean=mean, var=var, count=np.array(count))


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``numpy.savez`` but with fixed member timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            archive.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH), buffer.getvalue()
            )


def load_stats(features_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Train mean and variance as float32 arrays."""
    with np.load(features_dir / STATS_FILE) as stats:
        return stats["mean"].astype(np.float32), stats["var"].astype(np.float32)

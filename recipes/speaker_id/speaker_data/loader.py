"""torch data loading for prepared folders: cached features or on-the-fly from audio.

Both feature sources yield identical tensors for identical batches: the "audio" source decodes
the FLAC file and runs the same :func:`speaker_data.features.fbank` that filled the cache, on the
whole utterance, then crops. Batch composition and crop positions are decided up front in the
main process from a seeded generator (see :func:`train_batches`), never inside workers, so
results do not depend on ``num_workers`` or on the feature source.

Data-parallel training (torchrun) is a sampler over those same global batches: every process
computes the identical epoch plan from the shared seed and takes its own slice of each batch
(:func:`shard_batches`), so the processes together see exactly the batches a single process
would, and each process's slice size is known for weighting its loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from speaker_data.featstore import read_audio
from speaker_data.features import fbank
from speaker_data.prepared import PreparedData, SplitIndex

FeatureSource = Literal["cache", "audio"]
# (utterance position in the split, first frame, number of frames; 0 frames = to the end)
Item = tuple[int, int, int]


class SpeakerFrames(Dataset):
    """Log-mel frames and speaker label of one utterance (or a crop of it)."""

    def __init__(self, prepared: PreparedData, split: SplitIndex, source: FeatureSource) -> None:
        self.prepared = prepared
        self.split = split
        self.source = source
        self.labels = torch.tensor([prepared.labels[spk] for spk in split.spk_ids])
        self._array: np.ndarray | None = None  # opened lazily, so each worker maps it itself

    def __len__(self) -> int:
        return len(self.split.utt_ids)

    def _utterance(self, position: int) -> torch.Tensor:
        if self.source == "audio":
            signal = read_audio(self.prepared.data_root / self.split.wav_relpaths[position])
            return fbank(signal, self.prepared.n_mels)
        if self._array is None:
            path = self.prepared.features_dir / f"{self.split.name}.npy"
            self._array = np.load(path, mmap_mode="r")
        offset = self.split.offsets[position]
        return torch.from_numpy(
            np.array(self._array[offset : offset + self.split.frames[position]])
        )

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, torch.Tensor]:
        position, start, length = item
        feats = self._utterance(position)
        end = start + length if length else feats.shape[0]
        return feats[start:end], self.labels[position]


def collate(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Zero-pad to the longest item; ``lengths`` keeps the true frame counts."""
    lengths = torch.tensor([feats.shape[0] for feats, _ in items])
    padded = torch.zeros(len(items), int(lengths.max()), items[0][0].shape[1])
    for row, (feats, _) in enumerate(items):
        padded[row, : feats.shape[0]] = feats
    return {"feats": padded, "lengths": lengths, "labels": torch.stack([lab for _, lab in items])}


def train_batches(
    frames: Sequence[int],
    batch_size: int,
    crop_frames: int,
    rng: np.random.Generator,
    min_last: int = 1,
) -> list[list[Item]]:
    """One epoch: shuffled utterances, each cropped at a random start to ``crop_frames``.

    Utterances shorter than the crop are used whole (and padded in the batch). The last,
    incomplete batch is kept so that every utterance is seen every epoch; when it has fewer than
    ``min_last`` items it joins the batch before it instead (a model with batch normalisation
    cannot train on a single utterance, nor can each of N processes on a slice of it).
    """
    order = rng.permutation(len(frames))
    items = []
    for position in order:
        length = min(crop_frames, frames[position])
        start = int(rng.integers(0, frames[position] - length + 1))
        items.append((int(position), start, length))
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_last:
        batches[-2:] = [batches[-2] + batches[-1]]
    return batches


def shard_batches(
    batches: Sequence[list[Item]], rank: int, world_size: int
) -> list[tuple[list[Item], int]]:
    """Process ``rank``'s slice of every global batch, with that batch's full size.

    A distributed sampler that keeps the global batches: process ``r`` of ``N`` takes items
    ``r, r + N, ...`` of each batch (slice sizes differ by at most one), so all processes run
    the same number of steps, as DistributedDataParallel requires, and their union is exactly
    the single-process epoch. The full size lets a process weight its loss so that the averaged
    gradient equals the gradient of the global batch's mean loss.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return [(list(batch[rank::world_size]), len(batch)) for batch in batches]


def eval_batches(frames: Sequence[int], batch_size: int) -> list[list[Item]]:
    """Whole utterances, sorted by length so batches pad little; order is deterministic."""
    order = sorted(range(len(frames)), key=lambda p: (frames[p], p))
    items = [(p, 0, 0) for p in order]
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def make_loader(dataset: SpeakerFrames, batches: list[list[Item]], num_workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=False,
    )

"""Per-epoch checkpoints that a killed run resumes from, and that refuse a different setup.

Each checkpoint carries an *identity* (the architecture, the data's feature hash and labels, and
the training settings). Resuming with any of them changed would either crash on mismatched
tensor shapes or silently continue a different experiment, so it is refused with a message
naming the differing keys instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hpopt.files import atomic_path


class CheckpointError(Exception):
    """A checkpoint that cannot or must not be resumed from; the message says what to do."""


def _best_epoch(history: list[dict[str, Any]]) -> int:
    """Lowest valid error, then lowest valid loss, then earliest: SpeechBrain's min_key="error"."""
    return min(history, key=lambda h: (h["valid_error"], h["valid_loss"], h["epoch"]))["epoch"]


class Checkpoints:
    """``save_folder/epoch-NNN.ckpt``, one per epoch; only the latest and the best are kept."""

    def __init__(self, folder: Path, identity: dict[str, dict[str, Any]]) -> None:
        self.folder = folder
        self.identity = identity

    def _paths(self) -> list[Path]:
        return sorted(self.folder.glob("epoch-*.ckpt"))

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, not a torch file, or unpickling refused
            raise CheckpointError(
                f"{path} is not a readable checkpoint ({err}); delete it to resume from the "
                "previous one, or delete the folder to start over"
            ) from err

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint, or None; refused if its identity differs from this run's."""
        paths = self._paths()
        if not paths:
            return None
        state = self._load(paths[-1])
        for section, wanted in self.identity.items():
            saved = state.get(section) or {}
            differing = sorted(k for k in set(wanted) | set(saved) if saved.get(k) != wanted.get(k))
            if differing:
                details = "; ".join(
                    f"{k}: checkpoint {saved.get(k)!r}, now {wanted.get(k)!r}" for k in differing
                )
                raise CheckpointError(
                    f"{paths[-1]} was written with a different {section} ({details}); refusing "
                    f"to resume from it. Use another --output_folder, or delete {self.folder} "
                    "to start over"
                )
        return state

    def best(self) -> dict[str, Any] | None:
        """The kept checkpoint with the best validation result (None without checkpoints)."""
        states = [self._load(path) for path in self._paths()]
        if not states:
            return None
        best_epoch = _best_epoch(states[-1]["history"])
        return next(s for s in states if s["epoch"] == best_epoch)

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (needs ``epoch`` and ``history``) atomically, then prune the others."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"epoch-{state['epoch']:03d}.ckpt"
        with atomic_path(path) as temp:
            torch.save({**state, **self.identity}, temp)
        keep = {state["epoch"], _best_epoch(state["history"])}
        for old in self._paths():
            if int(old.stem.removeprefix("epoch-")) not in keep:
                old.unlink()

#!/usr/bin/env python3
"""Speaker identification (x-vector TDNN) on a prepared folder, tunable by Orion through hpopt.

    python recipes/speaker_id/train.py recipes/speaker_id/train.yaml --data_folder DIR \\
        --output_folder OUT [--emb_dim N --tdnn_channels N --lr X --dropout X ...] \\
        [--device cpu|cuda:0] [--hpopt recipes/speaker_id/hpopt.yaml --hpopt_mode orion]
    torchrun --standalone --nproc_per_node=N recipes/speaker_id/train.py ...   (same arguments)

After SpeechBrain's hyperparameter-optimization speaker-id template, in plain torch. Writes
``OUT/metrics.json``, ``OUT/train_log.txt``, ``OUT/hyperparams.yaml`` and, when
``ckpt_enable``, one checkpoint per epoch under ``OUT/save/`` from which a killed run resumes
exactly. The same seed, data, CPU, thread count and number of processes give bit-identical
metrics. Under torchrun the processes train one model with DistributedDataParallel on slices of
the same global batches; only rank 0 writes (see ddp.py and README.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

# Both must be set before torch loads. Deterministic cuBLAS needs the workspace setting. Idle
# OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning made 2-thread
# training 10x slower than 1 thread, sleeping made it faster (README.md, "Threads").
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from checkpoint import CheckpointError, Checkpoints  # noqa: E402
from ddp import DistributedError, Processes, launched_processes, local_processes  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402
from model import SpeakerIdModel  # noqa: E402
from speaker_data import featstore, loader  # noqa: E402
from speaker_data.errors import DataError  # noqa: E402
from speaker_data.features import seconds_to_frames  # noqa: E402
from speaker_data.prepared import PreparedData, open_prepared  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm import tqdm  # noqa: E402

import hpopt as hp  # noqa: E402
from hpopt.files import write_json_atomically, write_text_atomically  # noqa: E402

# Reported in metrics.json "params": the values a search may change.
TUNABLE = ("emb_dim", "tdnn_channels", "lr", "dropout", "batch_size", "number_of_epochs")
# Settings a resumed run must share with its checkpoint (besides the architecture and data).
TRAINING_KEYS = (
    "seed",
    "lr",
    "lr_final",
    "dropout",
    "batch_size",
    "number_of_epochs",
    "train_crop_seconds",
)
Autocast = Callable[[], contextlib.AbstractContextManager]
# Batch normalisation cannot train on one utterance: every process needs 2 per step.
MIN_ITEMS_PER_PROCESS = 2
# One row per evaluation batch: summed NLL, wrong predictions, utterances.
EVAL_COLUMNS = 3


class RecipeError(Exception):
    """A bad setting; the message names the YAML key (= command-line flag) and the fix."""


def check_hparams(hparams: dict[str, Any], processes: int = 1) -> None:
    """Refuse out-of-range settings before any data is read, naming the key."""
    for key in ("emb_dim", "tdnn_channels", "tdnn_channels_out", "batch_size", "number_of_epochs"):
        value = hparams[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"{key} must be a positive integer, got {value!r}")
    smallest_batch = MIN_ITEMS_PER_PROCESS * processes
    if hparams["batch_size"] < smallest_batch:
        raise RecipeError(
            f"batch_size must be at least {smallest_batch} with {processes} process(es): each "
            f"process trains on its slice of a batch, and batch normalisation needs "
            f"{MIN_ITEMS_PER_PROCESS} utterances per slice; got {hparams['batch_size']}"
        )
    for key in ("lr", "lr_final", "train_crop_seconds"):
        value = hparams[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise RecipeError(f"{key} must be a positive number, got {value!r}")
        if not math.isfinite(value):
            raise RecipeError(f"{key} must be finite, got {value!r}")
    dropout = hparams["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise RecipeError(f"dropout must be in [0, 1), got {dropout!r}")
    if hparams["feature_source"] not in ("cache", "audio"):
        raise RecipeError(
            f"feature_source must be cache or audio, got {hparams['feature_source']!r}"
        )
    for key, minimum in (("seed", 0), ("num_workers", 0), ("n_mels", 1)):
        value = hparams[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise RecipeError(f"{key} must be an integer >= {minimum}, got {value!r}")
    threads = hparams["num_threads"]
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise RecipeError(f"num_threads must be a positive integer or null, got {threads!r}")
    for key in ("ckpt_enable", "valid_each_epoch"):
        if not isinstance(hparams[key], bool):
            raise RecipeError(f"{key} must be true or false, got {hparams[key]!r}")
    if hparams["ckpt_enable"] and not hparams["valid_each_epoch"]:
        raise RecipeError(
            "ckpt_enable: true needs valid_each_epoch: true (the test uses the checkpoint of the "
            "epoch with the best valid error); set one of them the other way"
        )
    if not hparams["data_folder"]:
        raise RecipeError(
            "data_folder is not set: pass --data_folder DIR, a folder made by "
            "python recipes/speaker_id/speaker_id_prepare.py"
        )


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of one epoch's randomness, so a resumed run replays exactly what it would have.

    Rank 0 (and a single process) uses the ``(seed, epoch)`` stream; other ranks of a torchrun
    job get their own, so their dropout masks are independent of rank 0's.
    """
    entropy = [seed, epoch] if rank == 0 else [seed, epoch, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def learning_rate(hparams: dict[str, Any], epoch: int) -> float:
    """Linear decay from ``lr`` (first epoch) to ``lr_final`` (last epoch), as in the template."""
    n = hparams["number_of_epochs"]
    if n == 1:
        return float(hparams["lr"])
    return float(hparams["lr"] + (hparams["lr_final"] - hparams["lr"]) * (epoch - 1) / (n - 1))


def select_device(run_opts: dict[str, Any]) -> tuple[torch.device, Autocast]:
    """The torch device and an autocast factory for ``--precision`` (fp32 unless asked)."""
    device = torch.device(run_opts.get("device") or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
    precision = run_opts.get("precision") or "fp32"
    if precision == "fp32":
        return device, contextlib.nullcontext
    if device.type != "cuda":
        raise RecipeError(f"--precision {precision} needs a CUDA device; this run is on {device}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return device, lambda: torch.autocast("cuda", dtype=dtype)


def build_model(hparams: dict[str, Any], prepared: PreparedData) -> SpeakerIdModel:
    """The x-vector model, initialised from ``seed``, with the train-set normalisation."""
    torch.manual_seed(hparams["seed"])
    model = SpeakerIdModel(
        n_mels=hparams["n_mels"],
        tdnn_channels=hparams["tdnn_channels"],
        tdnn_channels_out=hparams["tdnn_channels_out"],
        emb_dim=hparams["emb_dim"],
        n_classes=len(prepared.labels),
        dropout=hparams["dropout"],
    )
    mean, var = featstore.load_stats(prepared.features_dir)
    model.set_feature_stats(torch.from_numpy(mean), torch.from_numpy(var))
    return model


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: DataLoader,
    loss_scales: Sequence[float],
    device: torch.device,
    autocast: Autocast,
    progress: tqdm,
) -> tuple[float, int]:
    """One pass over the training crops; returns (summed training loss, utterances seen).

    ``loss_scales[i]`` weights step i's mean loss: ``processes * slice / global batch`` under
    torchrun, so that DDP's gradient average equals the global batch's mean-loss gradient (1.0
    for a single process, which leaves the loss exactly as it is).
    """
    model.train()
    total, seen = 0.0, 0
    for batch, scale in zip(batches, loss_scales, strict=True):
        feats, lengths = batch["feats"].to(device), batch["lengths"].to(device)
        labels = batch["labels"].to(device)
        with autocast():
            log_probs = model(feats, lengths).float()
        mean_loss = torch.nn.functional.nll_loss(log_probs, labels)
        optimizer.zero_grad(set_to_none=True)
        (mean_loss * scale).backward()
        optimizer.step()
        total += float(mean_loss.detach()) * labels.numel()
        seen += labels.numel()
        progress.update(1)
    return total, seen


def evaluate_batches(
    model: SpeakerIdModel, batches: DataLoader, device: torch.device, autocast: Autocast
) -> list[tuple[float, int, int]]:
    """Per batch: summed NLL, wrong predictions and utterances, over whole utterances."""
    model.eval()
    rows = []
    with torch.no_grad():
        for batch in batches:
            feats, lengths = batch["feats"].to(device), batch["lengths"].to(device)
            labels = batch["labels"].to(device)
            with autocast():
                log_probs = model(feats, lengths).float()
            loss = float(torch.nn.functional.nll_loss(log_probs, labels, reduction="sum"))
            rows.append((loss, int((log_probs.argmax(dim=1) != labels).sum()), labels.numel()))
    return rows


def summarise(rows: Sequence[Sequence[float]]) -> dict[str, float]:
    """Mean NLL and classification error from per-batch rows, added up in batch order."""
    total_loss, errors, count = 0.0, 0, 0
    for loss, wrong, utterances in rows:
        total_loss += loss
        errors += int(wrong)
        count += int(utterances)
    return {"error": errors / count, "loss": total_loss / count}


class Experiment:
    """One training run: data, model, optimiser, checkpoints and the log, built from hparams."""

    def __init__(
        self,
        hparams: dict[str, Any],
        run_opts: dict[str, Any],
        hpopt_enabled: bool,
        processes: Processes,
    ):
        self.hparams = hparams
        self.hpopt_enabled = hpopt_enabled
        self.processes = processes
        # null: this machine's cores, shared by the run's processes on it.
        self.threads = hparams["num_threads"] or max(
            1, len(os.sched_getaffinity(0)) // local_processes()
        )
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(True)
        random.seed(hparams["seed"])
        np.random.seed(hparams["seed"] % 2**32)
        self.device, self.autocast = select_device(run_opts)
        data_root = Path(hparams["data_root"]) if hparams["data_root"] else None
        self.prepared = open_prepared(Path(hparams["data_folder"]), hparams["n_mels"], data_root)
        self.splits = {name: self.prepared.split(name) for name in ("train", "valid", "test")}
        n_train = len(self.splits["train"].frames)
        if n_train < MIN_ITEMS_PER_PROCESS * processes.size:
            raise RecipeError(
                f"{hparams['data_folder']}: {n_train} training utterances are too few for "
                f"{processes.size} process(es) (at least {MIN_ITEMS_PER_PROCESS} each per step)"
            )
        self.datasets = {
            name: loader.SpeakerFrames(self.prepared, split, hparams["feature_source"])
            for name, split in self.splits.items()
        }
        self.model = build_model(hparams, self.prepared).to(self.device)
        # What the optimiser steps through: the model, or DDP around it under torchrun.
        self.training_model = processes.wrap(self.model)
        # fused: one kernel whose arithmetic is the same on every x86-64 CPU; the default
        # (foreach) path's float32 sqrt is not (speaker_data.portable_math says why).
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hparams["lr"], fused=True)
        training = {key: hparams[key] for key in TRAINING_KEYS}
        if processes.distributed:  # its batches and dropout streams differ from one process's
            training["processes"] = processes.size
        identity = {
            "architecture": self.model.arch,
            "data": {
                "features_sha256": self.prepared.summary["features_sha256"],
                "labels": self.prepared.labels,
            },
            "training": training,
        }
        self.checkpoints = (
            Checkpoints(Path(hparams["save_folder"]), identity) if hparams["ckpt_enable"] else None
        )
        self.show_progress = hparams["progress_bar"]
        if self.show_progress is None:
            self.show_progress = (
                sys.stderr.isatty() and not hpopt_enabled and not run_opts.get("noprogressbar")
            )
        self.show_progress = self.show_progress and hp.is_main_process()

    def _loader(self, split: str, batches: list[list[loader.Item]]) -> DataLoader:
        return loader.make_loader(self.datasets[split], batches, self.hparams["num_workers"])

    def _eval(self, split: str) -> dict[str, float]:
        """The whole split's metrics: each process evaluates every N-th batch of the plan."""
        batches = loader.eval_batches(self.splits[split].frames, self.hparams["batch_size"])
        rank, size = self.processes.rank, self.processes.size
        mine = list(range(rank, len(batches), size))
        rows = evaluate_batches(
            self.model, self._loader(split, [batches[i] for i in mine]), self.device, self.autocast
        )
        gathered = self.processes.gather_rows(
            dict(zip(mine, rows, strict=True)), len(batches), EVAL_COLUMNS
        )
        return summarise(gathered)

    def _train_epoch(self, epoch: int) -> float:
        """Train on this process's slices of the epoch's global batches; the mean loss."""
        hparams, processes = self.hparams, self.processes
        torch.manual_seed(epoch_seed(hparams["seed"], epoch, processes.rank))  # dropout
        rng = np.random.default_rng(epoch_seed(hparams["seed"], epoch))  # order and crops
        batches = loader.train_batches(
            self.splits["train"].frames,
            hparams["batch_size"],
            seconds_to_frames(hparams["train_crop_seconds"]),
            rng,
            min_last=MIN_ITEMS_PER_PROCESS * processes.size,
        )
        shards = loader.shard_batches(batches, processes.rank, processes.size)
        progress = tqdm(
            total=len(shards), desc=f"epoch {epoch}", disable=not self.show_progress, leave=False
        )
        with progress:
            total, seen = train_epoch(
                self.training_model,
                self.optimizer,
                self._loader("train", [items for items, _ in shards]),
                [processes.size * len(items) / full for items, full in shards],
                self.device,
                self.autocast,
                progress,
            )
        if processes.distributed:
            total, seen = processes.sum([total, seen])
            # Each process's batch norm kept its own running statistics; use rank 0's.
            processes.share_buffers(self.model)
        return total / seen

    def fit(self, log: TextIO) -> list[dict[str, Any]]:
        """Train the remaining epochs (all, or those after the latest checkpoint)."""
        hparams = self.hparams
        history: list[dict[str, Any]] = []
        state = self.checkpoints.latest() if self.checkpoints else None
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            history = state["history"]
            log.write(f"resumed from {self.checkpoints.folder} after epoch {state['epoch']}\n")
        for epoch in range(len(history) + 1, hparams["number_of_epochs"] + 1):
            started = time.perf_counter()
            lr = learning_rate(hparams, epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            train_loss = self._train_epoch(epoch)
            # Evaluation touches no state training reads: skipping it changes no trained bit.
            last = epoch == hparams["number_of_epochs"]
            valid = self._eval("valid") if hparams["valid_each_epoch"] or last else None
            history.append(
                {
                    "epoch": epoch,
                    "lr": lr,
                    "train_loss": train_loss,
                    "valid_error": valid["error"] if valid else None,
                    "valid_loss": valid["loss"] if valid else None,
                }
            )
            workers = f" x {self.processes.size} processes" if self.processes.distributed else ""
            scores = (
                f"valid loss: {valid['loss']:.4f}, valid error: {valid['error']:.4f}"
                if valid
                else "valid: not evaluated (valid_each_epoch: false)"
            )
            log.write(
                f"epoch: {epoch}, lr: {lr:.2e} - train loss: {train_loss:.4f} - {scores} "
                f"({time.perf_counter() - started:.1f} s, {self.threads} threads{workers})\n"
            )
            log.flush()
            if self.checkpoints is not None:
                if hp.is_main_process():
                    self.checkpoints.save(
                        {
                            "epoch": epoch,
                            "model": self.model.state_dict(),
                            "optimizer": self.optimizer.state_dict(),
                            "valid": valid,
                            "history": history,
                        }
                    )
                # No process may read save/ (for the test) while rank 0 writes and prunes it.
                self.processes.barrier()
            if valid:
                hp.report_result({"error": valid["error"], "loss": valid["loss"]})
        return history

    def run(self) -> dict[str, Any]:
        """Fit, then test (outside hpopt mode); writes the outputs and returns the metrics."""
        hparams = self.hparams
        output = Path(hparams["output_folder"])
        main = hp.is_main_process()
        if main:
            output.mkdir(parents=True, exist_ok=True)
            hyperparams = yaml.safe_dump(hparams, sort_keys=False)
            write_text_atomically(output / "hyperparams.yaml", hyperparams)
        log_path = hparams["train_log"] if main else os.devnull
        with open(log_path, "a", encoding="utf-8") as log:
            if self.hpopt_enabled:
                log.write(f"trial_id: {hp.get_trial_id()}\n")
            history = self.fit(log)
            last = history[-1]
            # The workflow's result contract, version 1 (docs/recipes.md).
            metrics: dict[str, Any] = {
                "result_format": 1,
                "objective": {"split": "valid", "metric": "error"},
                "metrics": {"valid": {"error": last["valid_error"], "loss": last["valid_loss"]}},
                "epochs": len(history),
                "seed": hparams["seed"],
                "processes": self.processes.size,
                "params": {key: hparams[key] for key in TUNABLE},
                "history": history,
            }
            if self.hpopt_enabled:
                metrics["trial_id"] = hp.get_trial_id()
            else:
                best = self.checkpoints.best() if self.checkpoints else None
                if best is not None:
                    self.model.load_state_dict(best["model"])
                metrics["test_epoch"] = best["epoch"] if best is not None else last["epoch"]
                test = metrics["metrics"]["test"] = self._eval("test")
                log.write(
                    f"test (model of epoch {metrics['test_epoch']}): loss "
                    f"{test['loss']:.4f}, error {test['error']:.4f}\n"
                )
        if main:
            write_json_atomically(output / "metrics.json", metrics, indent=2)
        return metrics


def load_hparams(hparams_file: str, overrides: dict[str, Any]) -> dict[str, Any]:
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            return load_hyperpyyaml(fin, overrides)
    except FileNotFoundError as err:
        raise RecipeError(f"hparams file {hparams_file} not found") from err
    except KeyError as err:  # HyperPyYAML: "Override 'x' not found in: [...]"
        raise RecipeError(f"{err.args[0]} (the top-level keys of {hparams_file})") from err


def main(argv: list[str]) -> int:
    try:
        with hp.hyperparameter_optimization(objective_key="error") as hp_ctx:
            hparams_file, run_opts, overrides = hp_ctx.parse_arguments(argv)
            hparams = load_hparams(hparams_file, overrides)
            check_hparams(hparams, launched_processes())
            device, _ = select_device(run_opts)
            processes = Processes.start(device, run_opts.get("distributed_backend"))
            try:
                Experiment(hparams, run_opts, hp_ctx.enabled, processes).run()
            finally:
                processes.close()
    except (RecipeError, CheckpointError, DataError, DistributedError, hp.HpoptError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Speaker identification (x-vector TDNN) on a prepared folder, tunable by Orion through hpopt.

    python recipes/speaker_id/train.py recipes/speaker_id/train.yaml --data_folder DIR \\
        --output_folder OUT [--emb_dim N --tdnn_channels N --lr X --dropout X ...] \\
        [--device cpu|cuda:0] [--hpopt recipes/speaker_id/hpopt.yaml --hpopt_mode orion]

After SpeechBrain's hyperparameter-optimization speaker-id template, in plain torch. Writes
``OUT/metrics.json``, ``OUT/train_log.txt``, ``OUT/hyperparams.yaml`` and, when
``ckpt_enable``, one checkpoint per epoch under ``OUT/save/`` from which a killed run resumes
exactly. The same seed, data, CPU and thread count give bit-identical metrics. See README.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

# Both must be set before torch loads. Deterministic cuBLAS needs the workspace setting. Idle
# OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning made 2-thread
# training 10x slower than 1 thread, sleeping made it faster (measurements in README.md).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from checkpoint import CheckpointError, Checkpoints  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402
from model import SpeakerIdModel  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm import tqdm  # noqa: E402

import hpopt as hp  # noqa: E402
from hpopt.data import featstore, loader  # noqa: E402
from hpopt.data.errors import DataError  # noqa: E402
from hpopt.data.features import seconds_to_frames  # noqa: E402
from hpopt.data.prepared import PreparedData, open_prepared  # noqa: E402

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


class RecipeError(Exception):
    """A bad setting; the message names the YAML key (= command-line flag) and the fix."""


def check_hparams(hparams: dict[str, Any]) -> None:
    """Refuse out-of-range settings before any data is read, naming the key."""
    for key in ("emb_dim", "tdnn_channels", "tdnn_channels_out", "batch_size", "number_of_epochs"):
        value = hparams[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"{key} must be a positive integer, got {value!r}")
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
    if not hparams["data_folder"]:
        raise RecipeError(
            "data_folder is not set: pass --data_folder DIR, a folder made by "
            "python -m hpopt.data.prepare"
        )


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's randomness, so a resumed run replays exactly what it would have."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


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
    model: SpeakerIdModel,
    optimizer: torch.optim.Optimizer,
    batches: DataLoader,
    device: torch.device,
    autocast: Autocast,
    progress: tqdm,
) -> float:
    """One pass over the training crops; returns the mean training loss per utterance."""
    model.train()
    total, seen = 0.0, 0
    for batch in batches:
        feats, lengths = batch["feats"].to(device), batch["lengths"].to(device)
        labels = batch["labels"].to(device)
        with autocast():
            log_probs = model(feats, lengths).float()
        loss = torch.nn.functional.nll_loss(log_probs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * labels.numel()
        seen += labels.numel()
        progress.update(1)
    return total / seen


def evaluate(
    model: SpeakerIdModel, batches: DataLoader, device: torch.device, autocast: Autocast
) -> dict[str, float]:
    """Mean NLL and classification error over whole utterances."""
    model.eval()
    total_loss, errors, count = 0.0, 0, 0
    with torch.no_grad():
        for batch in batches:
            feats, lengths = batch["feats"].to(device), batch["lengths"].to(device)
            labels = batch["labels"].to(device)
            with autocast():
                log_probs = model(feats, lengths).float()
            total_loss += float(torch.nn.functional.nll_loss(log_probs, labels, reduction="sum"))
            errors += int((log_probs.argmax(dim=1) != labels).sum())
            count += labels.numel()
    return {"error": errors / count, "loss": total_loss / count}


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


class Experiment:
    """One training run: data, model, optimiser, checkpoints and the log, built from hparams."""

    def __init__(self, hparams: dict[str, Any], run_opts: dict[str, Any], hpopt_enabled: bool):
        check_hparams(hparams)
        self.hparams = hparams
        self.hpopt_enabled = hpopt_enabled
        self.threads = hparams["num_threads"] or len(os.sched_getaffinity(0))
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(True)
        random.seed(hparams["seed"])
        np.random.seed(hparams["seed"] % 2**32)
        self.device, self.autocast = select_device(run_opts)
        data_root = Path(hparams["data_root"]) if hparams["data_root"] else None
        self.prepared = open_prepared(Path(hparams["data_folder"]), hparams["n_mels"], data_root)
        self.splits = {name: self.prepared.split(name) for name in ("train", "valid", "test")}
        self.datasets = {
            name: loader.SpeakerFrames(self.prepared, split, hparams["feature_source"])
            for name, split in self.splits.items()
        }
        self.model = build_model(hparams, self.prepared).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hparams["lr"])
        identity = {
            "architecture": self.model.arch,
            "data": {
                "features_sha256": self.prepared.summary["features_sha256"],
                "labels": self.prepared.labels,
            },
            "training": {key: hparams[key] for key in TRAINING_KEYS},
        }
        self.checkpoints = (
            Checkpoints(Path(hparams["save_folder"]), identity) if hparams["ckpt_enable"] else None
        )
        self.show_progress = hparams["progress_bar"]
        if self.show_progress is None:
            self.show_progress = (
                sys.stderr.isatty() and not hpopt_enabled and not run_opts.get("noprogressbar")
            )

    def _loader(self, split: str, batches: list[list[loader.Item]]) -> DataLoader:
        return loader.make_loader(self.datasets[split], batches, self.hparams["num_workers"])

    def _eval(self, split: str) -> dict[str, float]:
        batches = loader.eval_batches(self.splits[split].frames, self.hparams["batch_size"])
        return evaluate(self.model, self._loader(split, batches), self.device, self.autocast)

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
        crop = seconds_to_frames(hparams["train_crop_seconds"])
        for epoch in range(len(history) + 1, hparams["number_of_epochs"] + 1):
            started = time.perf_counter()
            lr = learning_rate(hparams, epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            seed = epoch_seed(hparams["seed"], epoch)
            torch.manual_seed(seed)  # dropout
            rng = np.random.default_rng(seed)  # order and crops
            batches = loader.train_batches(
                self.splits["train"].frames, hparams["batch_size"], crop, rng
            )
            progress = tqdm(
                total=len(batches),
                desc=f"epoch {epoch}",
                disable=not self.show_progress,
                leave=False,
            )
            with progress:
                train_loss = train_epoch(
                    self.model,
                    self.optimizer,
                    self._loader("train", batches),
                    self.device,
                    self.autocast,
                    progress,
                )
            valid = self._eval("valid")
            history.append(
                {
                    "epoch": epoch,
                    "lr": lr,
                    "train_loss": train_loss,
                    "valid_error": valid["error"],
                    "valid_loss": valid["loss"],
                }
            )
            log.write(
                f"epoch: {epoch}, lr: {lr:.2e} - train loss: {train_loss:.4f} - valid loss: "
                f"{valid['loss']:.4f}, valid error: {valid['error']:.4f} "
                f"({time.perf_counter() - started:.1f} s, {self.threads} threads)\n"
            )
            log.flush()
            if self.checkpoints is not None and hp.is_main_process():
                self.checkpoints.save(
                    {
                        "epoch": epoch,
                        "model": self.model.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "valid": valid,
                        "history": history,
                    }
                )
            hp.report_result({"error": valid["error"], "loss": valid["loss"]})
        return history

    def run(self) -> dict[str, Any]:
        """Fit, then test (outside hpopt mode); writes the outputs and returns the metrics."""
        hparams = self.hparams
        output = Path(hparams["output_folder"])
        main = hp.is_main_process()
        if main:
            output.mkdir(parents=True, exist_ok=True)
            (output / "hyperparams.yaml").write_text(yaml.safe_dump(hparams, sort_keys=False))
        log_path = hparams["train_log"] if main else os.devnull
        with open(log_path, "a", encoding="utf-8") as log:
            if self.hpopt_enabled:
                log.write(f"trial_id: {hp.get_trial_id()}\n")
            history = self.fit(log)
            last = history[-1]
            metrics: dict[str, Any] = {
                "valid": {"error": last["valid_error"], "loss": last["valid_loss"]},
                "epochs": len(history),
                "seed": hparams["seed"],
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
                metrics["test"] = self._eval("test")
                log.write(
                    f"test (model of epoch {metrics['test_epoch']}): loss "
                    f"{metrics['test']['loss']:.4f}, error {metrics['test']['error']:.4f}\n"
                )
        if main:
            write_json_atomic(output / "metrics.json", metrics)
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
            Experiment(hparams, run_opts, hp_ctx.enabled).run()
    except (RecipeError, CheckpointError, DataError, hp.HpoptError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Training throughput of the speaker-id recipe (utterances/s), on CPU or, with gpu.sh, on a GPU.

Each repeat is one real recipe run (``python bench/trial_probe.py train.py …``, hpopt mode as a
hunt trial) of ``--epochs`` epochs; only the training passes count (validation excluded). An
epoch sees every training utterance once (a 1 s crop each), so utterances/s = training
utterances x epochs / seconds in the training passes. The figure is the median over repeats of
each run's median epoch, which keeps a first epoch's warm-up (allocator, cuDNN) out of it.

With ``--device cuda:N``, ``nvidia-smi`` is sampled every ``--gpu-sample-ms`` during the run and
the GPU's utilisation and memory are averaged over the samples taken inside training passes.

    .venv/train/bin/python bench/bench_throughput.py --repeats 3          # CPU, default model
    bench/gpu.sh                                                          # GPU, 512/512, batch 32
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import benchlib


class GpuSampler:
    """``nvidia-smi`` utilisation/memory samples, each tagged with the time it was read."""

    QUERY = "utilization.gpu,memory.used"

    def __init__(self, index: str, period_ms: int) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.process = subprocess.Popen(
            ["nvidia-smi", "-i", index, f"--query-gpu={self.QUERY}"]
            + ["--format=csv,noheader,nounits", f"-lms={period_ms}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            utilisation, memory = (float(field) for field in line.split(","))
            self.samples.append((time.time(), utilisation, memory))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        self.reader.join(timeout=5)

    def during(self, windows: list[list[float]]) -> dict[str, Any]:
        inside = [s for s in self.samples if any(a <= s[0] <= b for a, b in windows)]
        if not inside:
            return {"samples": 0}
        return {
            "samples": len(inside),
            "utilisation_percent_mean": statistics.mean(s[1] for s in inside),
            "memory_used_mib_max": max(s[2] for s in inside),
        }


def nvidia_index(device: str) -> str:
    """nvidia-smi's index of torch's ``cuda:N`` (through CUDA_VISIBLE_DEVICES when set)."""
    ordinal = int(device.partition(":")[2] or 0)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible.split(",")[ordinal].strip() if visible else str(ordinal)


def run_once(args: argparse.Namespace, data: Path, workdir: Path) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "number_of_epochs": args.epochs,
        "emb_dim": args.emb_dim,
        "tdnn_channels": args.tdnn_channels,
        "batch_size": args.batch_size,
    }
    recipe = benchlib.recipe_args(data, workdir / "out", overrides)
    recipe[recipe.index("--device") + 1] = args.device
    if args.precision:
        recipe += ["--precision", args.precision]
    sampler = None
    if args.device.startswith("cuda"):
        sampler = GpuSampler(nvidia_index(args.device), args.gpu_sample_ms)
    try:
        run = benchlib.probed_trial([benchlib.PYTHON], recipe, dict(os.environ), workdir)
    finally:
        if sampler is not None:
            sampler.stop()
    stamps = run.pop("train_epoch_spans")
    per_epoch = [run["train_utterances"] / (end - start) for start, end in stamps]
    run["utterances_per_s_by_epoch"] = per_epoch
    run["utterances_per_s_median_epoch"] = statistics.median(per_epoch)
    if sampler is not None:
        run["gpu"] = sampler.during(stamps)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_common_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--emb-dim", type=int, help="default: train.yaml's")
    parser.add_argument("--tdnn-channels", type=int, help="default: train.yaml's")
    parser.add_argument("--batch-size", type=int, help="default: train.yaml's")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), help="recipe default")
    parser.add_argument("--gpu-sample-ms", type=int, default=100, help="nvidia-smi period")
    parser.add_argument("--name", default="throughput", help="result file name (no .json)")
    args = parser.parse_args()
    benchlib.check_repeats(parser, args, 3)
    if args.device.startswith("cuda") and shutil.which("nvidia-smi") is None:
        parser.error(f"--device {args.device}: nvidia-smi not found (no NVIDIA driver here)")
    defaults = benchlib.SMOKE_MODEL if args.smoke else {}
    defaults = benchlib.recipe_defaults() | defaults
    for key in ("emb_dim", "tdnn_channels", "batch_size"):
        setattr(args, key, getattr(args, key) or defaults[key])
    data = benchlib.corpus(args)
    facts = benchlib.machine()

    with benchlib.scratch_dir("throughput") as scratch:
        runs = [run_once(args, data, Path(scratch) / f"run-{i}") for i in range(args.repeats)]
    rates = [run["utterances_per_s_median_epoch"] for run in runs]
    document: dict[str, Any] = {
        "machine": facts,
        "data": benchlib.prepared_summary(data),
        "device": args.device,
        "model": {
            "emb_dim": args.emb_dim,
            "tdnn_channels": args.tdnn_channels,
            "batch_size": args.batch_size,
            "precision": args.precision or "recipe default (fp32)",
        },
        "epochs_per_run": args.epochs,
        "repeats": args.repeats,
        "utterances_per_s": benchlib.spread(rates),
        "runs": runs,
    }
    if args.device.startswith("cuda"):
        utilisation = [run["gpu"].get("utilisation_percent_mean") for run in runs]
        utilisation = [value for value in utilisation if value is not None]
        document["gpu_utilisation_percent"] = benchlib.spread(utilisation) if utilisation else None
        document["gpu_name"] = subprocess.run(
            ["nvidia-smi", "-i", nvidia_index(args.device), "--query-gpu=name"]
            + ["--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    benchlib.write_result(args, args.name, document)
    line = f"{args.device}: {statistics.median(rates):.1f} utterances/s (median of {args.repeats})"
    if document.get("gpu_utilisation_percent"):
        line += f", GPU utilisation {document['gpu_utilisation_percent']['median']:.0f} %"
    print(line)


if __name__ == "__main__":
    main()

"""Figure 2: epoch time with the feature cache vs computing fbanks from the audio on the fly.

The recipe trains one epoch (default model, batch and data; training pass plus validation) with
``--feature_source cache`` (memory-mapped log-mels, the workflow's way) and with
``--feature_source audio`` (decode the FLAC and compute the fbank per item in the data loader,
the SpeechBrain template's way). Both run through the warm launcher so that start-up, which the
feature source does not change, stays out of the samples; the two alternate, and both must
report the same objective (the loader promises identical tensors).

The data pipeline alone — one training epoch's batches, then the validation batches, without a
model — is timed in this process for both sources too: it shows what the model leaves of the gap.
Target: the cached epoch at least 3x faster on CPU.

    .venv/train/bin/python bench/bench_features.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import benchlib

SOURCES = ("cache", "audio")
TARGET_SPEEDUP = 3.0


def recipe_epoch(source: str, data: Path, workdir: Path, env: dict[str, str], smoke: bool) -> dict:
    overrides = {"number_of_epochs": 1, "feature_source": source}
    overrides |= benchlib.SMOKE_MODEL if smoke else {}
    args = benchlib.recipe_args(data, workdir / "out", overrides)
    return benchlib.probed_trial([benchlib.HPOPT_EXEC], args, env, workdir)


def pipeline_epoch(source: str, data: Path) -> float:
    """Seconds to produce one epoch of training batches and the validation batches, with the
    recipe's torch thread count (the fbank runs torch ops)."""
    import numpy as np
    import torch
    from speaker_data import loader
    from speaker_data.features import seconds_to_frames
    from speaker_data.prepared import open_prepared

    hparams = benchlib.recipe_defaults()
    torch.set_num_threads(hparams["num_threads"] or len(os.sched_getaffinity(0)))
    prepared = open_prepared(data, hparams["n_mels"])
    train, valid = prepared.split("train"), prepared.split("valid")
    crop = seconds_to_frames(hparams["train_crop_seconds"])
    batch = hparams["batch_size"]
    started = time.perf_counter()
    batches = loader.train_batches(train.frames, batch, crop, np.random.default_rng(0))
    for split, plan in ((train, batches), (valid, loader.eval_batches(valid.frames, batch))):
        dataset = loader.SpeakerFrames(prepared, split, source)
        for _ in loader.make_loader(dataset, plan, num_workers=0):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_common_arguments(parser)
    args = parser.parse_args()
    benchlib.check_repeats(parser, args, 3)
    data = benchlib.corpus(args)
    facts = benchlib.machine()

    epochs: dict[str, list[dict[str, Any]]] = {source: [] for source in SOURCES}
    pipeline: dict[str, list[float]] = {source: [] for source in SOURCES}
    with (
        benchlib.scratch_dir("features") as scratch,
        benchlib.warm_server(Path(scratch)) as (env, _),
    ):
        for repeat in range(args.repeats):
            for source in SOURCES:
                workdir = Path(scratch) / f"{source}-{repeat}"
                epochs[source].append(recipe_epoch(source, data, workdir, env, args.smoke))
    for _ in range(args.repeats):
        for source in SOURCES:
            pipeline[source].append(pipeline_epoch(source, data))
    objectives = {run["objective"] for runs in epochs.values() for run in runs}
    if len(objectives) != 1:
        raise SystemExit(f"cache and audio runs reported different objectives: {objectives}")

    epoch_s = {s: statistics.median(run["training_s"] for run in epochs[s]) for s in SOURCES}
    pipeline_s = {s: statistics.median(pipeline[s]) for s in SOURCES}
    benchlib.write_result(
        args,
        "features",
        {
            "machine": facts,
            "data": benchlib.prepared_summary(data),
            "repeats": args.repeats,
            "epoch_s": {s: benchlib.spread([r["training_s"] for r in epochs[s]]) for s in SOURCES},
            "pipeline_epoch_s": {s: benchlib.spread(pipeline[s]) for s in SOURCES},
            "epoch_speedup": epoch_s["audio"] / epoch_s["cache"],
            "pipeline_speedup": pipeline_s["audio"] / pipeline_s["cache"],
            "target_speedup": TARGET_SPEEDUP,
            "objective": objectives.pop(),
            "samples": epochs,
        },
    )
    print(
        f"epoch (train + valid): cache {epoch_s['cache']:.2f} s, audio {epoch_s['audio']:.2f} s "
        f"(x{epoch_s['audio'] / epoch_s['cache']:.2f}); data pipeline alone: cache "
        f"{pipeline_s['cache']:.2f} s, audio {pipeline_s['audio']:.2f} s "
        f"(x{pipeline_s['audio'] / pipeline_s['cache']:.1f}); median of {args.repeats}"
    )


if __name__ == "__main__":
    main()

"""What the portable numerics profile costs: the default retrain under `portable` and `native`.

One full-budget run of train.yaml as shipped (the final stage's untuned arm, at the recipe's
seed, one thread, checkpoints off) under each profile, alternately, in one invocation, so both
see the same machine and load. The figure is the wall-time ratio portable / native; each run's
valid and test error are kept too, since `native` on this CPU trains to other numbers.

    .venv/train/bin/python bench/bench_numerics.py            # default corpus, full budget
    .venv/train/bin/python bench/bench_numerics.py --smoke    # toy corpus and model
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import benchlib

from reprohunt import numerics


def train(profile: str, data: Path, out: Path, smoke: bool) -> dict[str, Any]:
    """One run of the recipe under `profile`; its wall time and metrics."""
    env = dict(os.environ)
    numerics.apply(profile, "bench_numerics", env)
    command = [benchlib.PYTHON, str(benchlib.TRAIN_SCRIPT), str(benchlib.TRAIN_YAML)]
    command += ["--data_folder", str(data), "--output_folder", str(out), "--ckpt_enable", "false"]
    command += ["--seed", str(benchlib.RECIPE_SEED), "--device", "cpu"]
    if smoke:
        model = benchlib.SMOKE_MODEL | {"number_of_epochs": 2}
        command += [arg for key, value in model.items() for arg in (f"--{key}", str(value))]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    return {"profile": profile, "wall_s": wall, "valid": metrics["valid"], "test": metrics["test"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlib.add_common_arguments(parser, repeats=False)
    args = parser.parse_args()
    data = benchlib.corpus(args)
    machine = benchlib.machine()  # the load average at the start
    runs = []
    with benchlib.scratch_dir("numerics") as scratch:
        for profile in (numerics.PORTABLE, numerics.NATIVE):
            runs.append(train(profile, data, Path(scratch) / profile, args.smoke))
            print(f"{profile}: {runs[-1]['wall_s']:.1f} s", flush=True)
    walls = {run["profile"]: run["wall_s"] for run in runs}
    benchlib.write_result(
        args,
        "numerics",
        {
            "machine": machine,
            "corpus": benchlib.prepared_summary(data),
            "runs": runs,
            "ratio_portable_to_native": walls[numerics.PORTABLE] / walls[numerics.NATIVE],
            "same_numbers": runs[0]["test"] == runs[1]["test"],
        },
    )


if __name__ == "__main__":
    main()

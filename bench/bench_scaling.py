"""Figure 4: hunt wall time and trials per hour with 1 and with 2 trials at once on 2 cores.

Two comparisons, each a pair of real hunts run by the workflow (``snakemake … hunt.json``, so the
hunt rule's own wrapper, the warm launcher and Orion's workers) on the default corpus, prepared
once beforehand, back to back:

- **equal trials** (``--trials``, default 6): trials of equal cost, so that the rate measures the
  launcher and Orion's workers alone. The searched space keeps the default priors of lr and
  dropout but not the architecture (train.yaml's default model), and random search with a fixed
  seed proposes the same parameters to 1 and to 2 workers (``hunt.n_workers``);
- **the default hunt** (``--default-hunt``): the workflow's own search at its own budget
  (config/config.yaml: optuna, 20 trials) sequential (``batch: 1``, 1 worker) against its
  default ``batch: 2`` with 2 workers. The two propose different trials (another batch, another
  sequence) of different costs; the figure is what a user waits for either way.

Two rates per hunt:

- per hunt: completed trials / the hunt rule's wall time (Snakemake's benchmark record),
  which includes the hunt's fixed start-up (Orion's imports, the warm server);
- steady state: completed trials / (last trial end - first trial start), from Orion's records;

and the share of the hunt's worker-seconds (its wall time x workers) spent inside training: the
epochs' own seconds, from each trial's train_log.txt (start-up, reporting, Orion's bookkeeping
and a worker waiting for a result it is proposed from are the rest).

One hunt per variant (a repeat costs a whole hunt).

    .venv/train/bin/python bench/bench_scaling.py --trials 6 --default-hunt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import benchlib
import snakemake_run

WORKERS = (1, 2)


def equal_trials(workers: int, trials: int, smoke: bool) -> dict[str, Any]:
    """Config overrides of the equal-trials hunt with `workers` workers."""
    space = {key: benchlib.CONFIG["hunt"]["space"][key] for key in ("lr", "dropout")}
    overrides: dict[str, Any] = {
        "hunt": {
            "algorithm": {"random": {"seed": 1}},
            "max_trials": trials,
            "n_workers": workers,
            "space": space,
        }
    }
    if smoke:
        overrides["hunt"]["space"] |= {
            key: f"choices([{value}])" for key, value in benchlib.SMOKE_MODEL.items()
        }
    return overrides


def default_hunt(batch: int, trials: int, smoke: bool) -> dict[str, Any]:
    """Config overrides of the default hunt at `batch`, as many workers as the batch (--smoke:
    `trials` trials of the toy model)."""
    ((name, options),) = benchlib.CONFIG["hunt"]["algorithm"].items()
    hunt = {"algorithm": {name: options | {"batch": batch}}, "n_workers": batch}
    if smoke:
        space = benchlib.CONFIG["hunt"]["space"] | {
            key: f"choices([{value}])" for key, value in benchlib.SMOKE_MODEL.items()
        }
        hunt |= {"max_trials": trials, "space": space}
    return {"hunt": hunt}


def hunt(label: str, overrides: dict[str, Any], data: Path, scratch: Path) -> dict[str, Any]:
    workdir = scratch / label
    workers = overrides["hunt"]["n_workers"]
    snakemake_run.write_config(workdir, overrides)
    snakemake_run.install_data(data, workdir)
    target = f"results/{snakemake_run.EXPERIMENT}/hunt/hunt.json"
    run = snakemake_run.run(
        workdir, target, "--allowed-rules", "hunt_spec", "hunt", log=scratch / f"{label}.log"
    )
    hunt_s = snakemake_run.rule_benchmarks(workdir)["hunt"]["s"]
    records = snakemake_run.hunt_trials(workdir)
    completed = [t for t in records if t["status"] == "completed"]
    busy_s = max(t["end"] for t in completed) - min(t["start"] for t in completed)
    training_s = sum(t["training_s"] for t in completed)
    return {
        "workers": workers,
        "completed": len(completed),
        "hunt_s": hunt_s,
        "snakemake_wall_s": run["wall_s"],
        "trials_per_hour": 3600 * len(completed) / hunt_s,
        "steady_trials_per_hour": 3600 * len(completed) / busy_s,
        "trial_s": [t["end"] - t["start"] for t in completed],
        # Of the hunt's worker-seconds (wall x workers), the share spent in the trials' epochs.
        "training_share": training_s / (hunt_s * workers),
        "trials": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_common_arguments(parser, repeats=False)
    parser.add_argument("--trials", type=int, default=6, help="max_trials of each hunt")
    parser.add_argument(
        "--default-hunt",
        action="store_true",
        help="also the default hunt, sequential against batch 2 (two hunts of 20 trials)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.trials = min(args.trials, 2)
    data = benchlib.corpus(args)
    facts = benchlib.machine()
    variants = {str(w): equal_trials(w, args.trials, args.smoke) for w in WORKERS}
    if args.default_hunt:
        variants |= {
            f"default-batch-{b}": default_hunt(b, args.trials, args.smoke) for b in WORKERS
        }
    with benchlib.scratch_dir("scaling") as scratch:
        runs = {label: hunt(label, o, data, Path(scratch)) for label, o in variants.items()}
    one, two = runs["1"], runs["2"]
    result = {
        "machine": facts,
        "data": benchlib.prepared_summary(data),
        "trial": "default model, 2 epochs (hpopt.yaml); random lr/dropout, seed 1",
        "max_trials": args.trials,
        "runs": runs,
        "speedup_per_hunt": two["trials_per_hour"] / one["trials_per_hour"],
        "speedup_steady": two["steady_trials_per_hour"] / one["steady_trials_per_hour"],
    }
    if args.default_hunt:
        sequential, batched = runs["default-batch-1"], runs["default-batch-2"]
        result["default_hunt_wall_ratio"] = batched["hunt_s"] / sequential["hunt_s"]
    benchlib.write_result(args, "scaling", result)
    for label, run in runs.items():
        print(
            f"{label}: {run['workers']} worker(s), {run['completed']} trials, "
            f"{run['trials_per_hour']:.0f}/h per hunt ({run['hunt_s']:.0f} s), "
            f"{run['steady_trials_per_hour']:.0f}/h steady, "
            f"{100 * run['training_share']:.0f} % of worker time in training"
        )
    if args.default_hunt:
        ratio = result["default_hunt_wall_ratio"]
        print(f"default hunt, batch 2 / sequential wall time: x{ratio:.2f}")


if __name__ == "__main__":
    main()

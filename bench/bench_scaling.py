"""Figure 4: completed trials per hour with 1 and with 2 workers (``hunt.n_workers``) on 2 cores.

Each variant is a real hunt run by the workflow (``snakemake … hunt.json``, so the hunt rule's
own wrapper, the warm launcher and Orion's workers) on the default corpus, prepared once
beforehand. To make trials of equal cost, the searched space keeps the default priors of lr and
dropout but not the architecture (train.yaml's default model), and random search with a fixed
seed proposes the same parameters to both variants. Two rates per variant:

- per hunt: completed trials / the hunt rule's wall time (Snakemake's benchmark record),
  which includes the hunt's fixed start-up (Orion's imports, the warm server);
- steady state: completed trials / (last trial end - first trial start), from Orion's records.

One hunt per variant (a repeat costs a whole hunt); the variants run back to back.

    .venv/train/bin/python bench/bench_scaling.py --trials 6
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import benchlib
import snakemake_run

WORKERS = (1, 2)


def hunt(workers: int, trials: int, data: Path, scratch: Path, smoke: bool) -> dict[str, Any]:
    workdir = scratch / f"workers-{workers}"
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
    snakemake_run.write_config(workdir, overrides)
    snakemake_run.install_data(data, workdir)
    target = f"results/{snakemake_run.EXPERIMENT}/hunt/hunt.json"
    run = snakemake_run.run(
        workdir, target, "--allowed-rules", "hunt_spec", "hunt", log=scratch / f"{workers}.log"
    )
    hunt_s = snakemake_run.rule_benchmarks(workdir)["hunt"]["s"]
    records = snakemake_run.hunt_trials(workdir)
    completed = [t for t in records if t["status"] == "completed"]
    busy_s = max(t["end"] for t in completed) - min(t["start"] for t in completed)
    return {
        "workers": workers,
        "completed": len(completed),
        "hunt_s": hunt_s,
        "snakemake_wall_s": run["wall_s"],
        "trials_per_hour": 3600 * len(completed) / hunt_s,
        "steady_trials_per_hour": 3600 * len(completed) / busy_s,
        "trial_s": [t["end"] - t["start"] for t in completed],
        "trials": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_common_arguments(parser, repeats=False)
    parser.add_argument("--trials", type=int, default=6, help="max_trials of each hunt")
    args = parser.parse_args()
    if args.smoke:
        args.trials = min(args.trials, 2)
    data = benchlib.corpus(args)
    facts = benchlib.machine()
    with benchlib.scratch_dir("scaling") as scratch:
        runs = {w: hunt(w, args.trials, data, Path(scratch), args.smoke) for w in WORKERS}
    one, two = runs[1], runs[2]
    benchlib.write_result(
        args,
        "scaling",
        {
            "machine": facts,
            "data": benchlib.prepared_summary(data),
            "trial": "default model, 2 epochs (hpopt.yaml); random lr/dropout, seed 1",
            "max_trials": args.trials,
            "runs": {str(w): run for w, run in runs.items()},
            "speedup_per_hunt": two["trials_per_hour"] / one["trials_per_hour"],
            "speedup_steady": two["steady_trials_per_hour"] / one["steady_trials_per_hour"],
        },
    )
    for workers, run in runs.items():
        print(
            f"{workers} worker(s): {run['completed']} trials, {run['trials_per_hour']:.0f}/h per "
            f"hunt ({run['hunt_s']:.0f} s), {run['steady_trials_per_hour']:.0f}/h steady"
        )


if __name__ == "__main__":
    main()

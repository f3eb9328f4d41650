"""Figure 3: compute each search algorithm needs to come within 1 % of the grid's optimum.

Ground truth needs every point of the space trained, so the benchmark searches a discretised
version of the workflow's default space (config/config.yaml ``hunt.space``):

- ``choices`` dimensions (emb_dim, tdnn_channels) keep all their values;
- each ``loguniform`` dimension (lr) stays continuous for the algorithms, but a trial trains at
  the nearest of ``LOG_POINTS`` grid values (log-spaced bin centres, 2 significant digits): the
  objective is piecewise constant in lr. Orion's TPE proposes the same point over and over on
  an all-``choices`` space (its categorical proposal is the argmax of expected improvement) and
  stops, so a categorical lr would measure that artefact instead of the algorithm;
- ``uniform`` dimensions (dropout) are left out and stay at train.yaml's value: each would
  multiply the grid's cost;
- a ``fidelity`` dimension is replaced by the benchmark's own (see below).

Every grid point is trained once by the real recipe, as a hunt trial is (hpopt mode,
the workflow's recipe arguments, the warm launcher; two at a time on two cores, which does not
change results: the recipe's thread count is fixed), at the hunt's budget E (a trial's
number_of_epochs: hpopt.yaml's, else train.yaml's; 2 with --smoke). The recipe is
deterministic, so a trial's objective is a function of its parameters (it also evaluates after
every epoch, which a trial skips: see fidelity below): each algorithm then
runs through Orion's Python API (``suggest``/``observe``, one worker, in-memory storage),
every trial answered from the table. Two checks make that sound:

- fidelity: ASHA and Hyperband search ``number_of_epochs ~ fidelity(1, E, 2)``. A 1-epoch run
  is the first epoch of an E-epoch run (same seed, same first-epoch learning rate), so its
  objective is read from the E-epoch run's history; one real 1-epoch run must reproduce it bit
  for bit, or the benchmark fails;
- identity: the workflow's default algorithm (seed as configured) is also run by a real
  ``orion hunt`` whose trial (``search_lookup_trial.py``) answers from the same table; it must
  propose the same trials in the same order as the in-process run, or the benchmark fails.

Compute is counted in trial-epochs (every proposed trial trains, also when it snaps to a point
already trained; a promoted ASHA trial is a new trial and trains from scratch). An algorithm
reaches the target with its first full-budget trial whose objective is within 0.01 (absolute)
of the grid optimum; the exhaustive grid costs |grid| x E. Each algorithm runs with seeds 1,
2, 3 and stops at the target, when it proposes nothing new, or after twice the grid's compute.
Target: the workflow's default algorithm needs at most 25 % of the grid's compute.

The table is cached in ``<results-dir>/search_table.json`` under a key covering the data, the
recipe's code and settings and torch; a rerun with the same key reuses it.

    .venv/train/bin/python bench/bench_search.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import itertools
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import search_lookup_trial as lookup

LOG_POINTS = 4
# --smoke: a toy model and grid, so that every step runs in seconds.
SMOKE_EPOCHS = 2
SMOKE_CHOICES = {"emb_dim": [8, 16], "tdnn_channels": [16]}
SMOKE_LOG_POINTS = 2
SEEDS = (1, 2, 3)
TOLERANCE = 0.01  # absolute, on the objective (classification error)
TARGET_FRACTION = 0.25
BUDGET_OVER_GRID = 2
# After this many empty proposals in a row a run counts as exhausted (orion hunt would retry
# until its worker.idle_timeout, then stop).
EMPTY_PROPOSALS = 10
MULTI_FIDELITY = ("asha", "hyperband")
# Trials compared between the in-process run and `orion hunt` (past TPE's initial points).
IDENTITY_TRIALS = 20
SMOKE_IDENTITY_TRIALS = 4
TABLE_FILES = [
    benchlib.TRAIN_SCRIPT,
    benchlib.TRAIN_YAML,
    benchlib.HPOPT_YAML,
    *sorted(benchlib.RECIPE_DIR.glob("*.py")),
    *sorted((benchlib.ROOT / "src" / "hpopt" / "data").glob("*.py")),
]


class Discretised:
    """The benchmark's version of the default space: priors for Orion, points for the grid."""

    def __init__(self, space_config: dict[str, str], smoke: bool) -> None:
        from orion.core.io.space_builder import SpaceBuilder

        self.priors: dict[str, str] = {}
        self.choices: dict[str, list[Any]] = {}
        self.snap_log: dict[str, list[float]] = {}
        self.left_out: list[str] = []
        points = SMOKE_LOG_POINTS if smoke else LOG_POINTS
        for name, dimension in SpaceBuilder().build(space_config).items():
            if dimension.type == "fidelity":
                continue  # multi-fidelity algorithms get fidelity(1, E, 2), the others E
            if dimension.prior_name == "choices":
                values = SMOKE_CHOICES.get(name) if smoke else None
                self.choices[name] = values or [
                    v.item() if hasattr(v, "item") else v for v in dimension.interval()
                ]
                self.priors[name] = f"choices({json.dumps(self.choices[name])})"
            elif dimension.prior_name == "reciprocal":
                low, high = (math.log10(float(bound)) for bound in dimension.interval())
                width = (high - low) / points
                centres = [low + width * (i + 0.5) for i in range(points)]
                self.snap_log[name] = [float(f"{10**c:.2g}") for c in centres]
                self.priors[name] = space_config[name]
            else:
                self.left_out.append(name)

    def points(self) -> list[dict[str, Any]]:
        axes = self.choices | self.snap_log
        return [
            dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())
        ]

    def search_space(self, algorithm: str, epochs: int) -> dict[str, str]:
        if algorithm in MULTI_FIDELITY:
            return self.priors | {"number_of_epochs": f"fidelity(1, {epochs}, 2)"}
        return dict(self.priors)


class Table:
    """Objectives of the real recipe by grid point and epochs, computed once and kept on disk."""

    def __init__(self, path: Path, data: Path, epochs: int, space: Discretised) -> None:
        import torch

        self.path, self.data, self.epochs = path, data, epochs
        self.identity = {
            "features_sha256": json.loads((data / "prepared.json").read_text())["features_sha256"],
            "code_sha256": hashlib.sha256(
                b"".join(p.read_bytes() for p in TABLE_FILES)
            ).hexdigest(),
            "recipe_args": benchlib.recipe_args(Path("DATA"), Path("OUT"), {})[1:],
            "torch": torch.__version__,
            "snap_log": space.snap_log,
        }
        stored = json.loads(path.read_text()) if path.is_file() else {}
        self.reused = stored.get("identity") == self.identity
        self.entries: dict[str, dict[str, Any]] = stored.get("entries", {}) if self.reused else {}
        self.document = {"full_epochs": epochs, "snap_log": space.snap_log, "entries": self.entries}

    def save(self) -> None:
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps({"identity": self.identity, **self.document}, indent=2))
        partial.replace(self.path)

    def train(self, point: dict[str, Any], epochs: int, env: dict[str, str], scratch: Path) -> dict:
        """Run the recipe as a hunt trial would; its objective, per-epoch errors and wall time."""
        name = hashlib.md5(lookup.table_key(point | {"epochs": epochs}).encode()).hexdigest()
        workdir = scratch / name
        workdir.mkdir()
        results_file = workdir / "results.log"
        # Evaluated after every epoch (hpopt.yaml's trials only after the last): the fidelity
        # entries are read from this history. Evaluation changes no trained bit.
        overrides = point | {"number_of_epochs": epochs, "valid_each_epoch": True}
        command = [benchlib.HPOPT_EXEC, *benchlib.recipe_args(self.data, workdir, overrides)]
        trial_env = benchlib.orion_trial_env(results_file, workdir, env)
        started = time.perf_counter()
        benchlib.run_checked(command, workdir / "trial.log", env=trial_env)
        wall = time.perf_counter() - started
        history = json.loads((workdir / "metrics.json").read_text())["history"]
        if len(history) != epochs:
            raise RuntimeError(f"{command}: trained {len(history)} epochs, expected {epochs}")
        return {
            "objective": benchlib.reported_objective(results_file),
            "valid_error_by_epoch": [epoch["valid_error"] for epoch in history],
            "wall_s": wall,
        }

    def fill(self, points: list[dict], env: dict[str, str], scratch: Path, jobs: int) -> float:
        """Train every missing point at full budget (``jobs`` at a time); the wall seconds.

        The 1-epoch entry of a point is the first epoch of its full run (see check_fidelity).
        """
        missing = [p for p in points if self.full_key(p) not in self.entries]
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(self.train, p, self.epochs, env, scratch): p for p in missing}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                point = futures[future]
                self.entries[self.full_key(point)] = future.result()
                self.save()
                print(f"grid {done}/{len(missing)} {point}: {future.result()}", flush=True)
        for point in points:
            first_epoch = self.entries[self.full_key(point)]["valid_error_by_epoch"][0]
            self.entries[lookup.table_key(point | {"number_of_epochs": 1})] = {
                "objective": first_epoch,
                "from": self.full_key(point),
            }
        self.save()
        return time.perf_counter() - started

    def full_key(self, point: dict[str, Any]) -> str:
        return lookup.table_key(point | {"number_of_epochs": self.epochs})

    def objective(self, params: dict[str, Any]) -> float:
        return lookup.objective(self.document, params)


def check_fidelity(table: Table, point: dict[str, Any], env: dict, scratch: Path) -> dict:
    """A real 1-epoch run must give exactly the epoch-1 error of the full run."""
    real = table.train(point, 1, env, scratch)["objective"]
    derived = table.objective(point | {"number_of_epochs": 1})
    if real != derived:
        raise SystemExit(
            f"fidelity check failed for {point}: a 1-epoch run reports {real!r}, the first epoch "
            f"of the {table.epochs}-epoch run {derived!r}; the 1-epoch rung cannot be read from "
            "the full runs"
        )
    return {"point": point, "one_epoch_run": real, "first_epoch_of_full_run": derived}


def algorithm_configs(seed: int) -> dict[str, dict[str, Any]]:
    """The compared algorithms (Orion defaults); the workflow's default keeps its options."""
    default_name, default_options = next(iter(benchlib.CONFIG["hunt"]["algorithm"].items()))
    options: dict[str, dict[str, Any]] = {name: {} for name in ("random", "tpe", *MULTI_FIDELITY)}
    options[default_name] = dict(default_options or {})
    return {name: {name: opts | {"seed": seed}} for name, opts in options.items()}


def run_search(
    algorithm: dict,
    space: dict[str, str],
    table: Table,
    target: float,
    cap: int,
    max_trials: int | None = None,
) -> dict[str, Any]:
    """Suggest/observe until a full-budget trial is within ``target``, or the run gives up:
    nothing new proposed, ``cap`` trial-epochs spent, or ``max_trials`` trials run."""
    from orion.client import build_experiment
    from orion.core.utils.exceptions import CompletedExperiment, WaitingForTrials

    name = next(iter(algorithm))
    experiment = build_experiment(
        f"bench-{name}-{time.monotonic_ns()}",
        space=space,
        algorithm=algorithm,
        storage={"type": "legacy", "database": {"type": "EphemeralDB"}},
    )
    trials: list[dict[str, Any]] = []
    compute, empty, reached, stopped = 0, 0, False, "compute cap"
    while not reached and compute < cap and len(trials) < (max_trials or cap):
        try:
            trial = experiment.suggest()
        except WaitingForTrials:
            empty += 1
            if empty == EMPTY_PROPOSALS:
                stopped = "no new trial proposed"
                break
            continue
        except CompletedExperiment:
            stopped = "algorithm done"
            break
        empty = 0
        params = dict(trial.params)
        epochs = params.get("number_of_epochs", table.epochs)
        objective = table.objective(params)
        experiment.observe(trial, [{"name": "objective", "type": "objective", "value": objective}])
        compute += epochs
        reached = epochs == table.epochs and objective <= target
        trials.append({"params": params, "objective": objective})
    return {
        "reached": reached,
        "trials_to_target": len(trials) if reached else None,
        "trial_epochs_to_target": compute if reached else None,
        "trial_epochs_spent": compute,
        "stopped": "target reached" if reached else stopped,
        "trials": trials,
    }


def orion_hunt_trials(
    algorithm: dict, space: dict[str, str], table: Table, max_trials: int, scratch: Path
) -> list[dict[str, Any]]:
    """The trials a real `orion hunt` of the algorithm proposes, in order, answered by the table."""
    import yaml
    from orion.client import get_experiment

    workdir = scratch / "identity-hunt"
    workdir.mkdir()
    config = workdir / "orion.yaml"
    config.write_text(yaml.safe_dump({"experiment": {"algorithm": algorithm}}))
    database = str(workdir / "db.pkl")
    command = [benchlib.ORION, "hunt", "-n", "identity", "-c", str(config)]
    command += ["--exp-max-trials", str(max_trials), "--working-dir", str(workdir / "trials")]
    command += [sys.executable, str(benchlib.BENCH / "search_lookup_trial.py"), str(table.path)]
    command += [f"--{key}~{prior}" for key, prior in space.items()]
    env = os.environ | {"ORION_DB_TYPE": "pickleddb", "ORION_DB_ADDRESS": database}
    benchlib.run_checked(command, workdir / "hunt.log", env=env, cwd=workdir)
    storage = {"type": "legacy", "database": {"type": "pickleddb", "host": database}}
    trials = sorted(
        get_experiment("identity", storage=storage).fetch_trials(), key=lambda t: t.submit_time
    )
    return [
        {
            "params": {key.lstrip("/"): value for key, value in t.params.items()},
            "objective": t.objective.value,
        }
        for t in trials
    ]


def summarise(runs: list[dict[str, Any]], grid_compute: int) -> dict[str, Any]:
    costs = [run["trial_epochs_to_target"] for run in runs if run["reached"]]
    mean = statistics.mean(costs) if costs else None
    return {
        "seeds_reached": len(costs),
        "reached_in_every_seed": len(costs) == len(runs),
        "mean_trial_epochs_to_target": mean,
        "mean_fraction_of_grid": mean / grid_compute if mean is not None else None,
        "trial_epochs_to_target_by_seed": [run["trial_epochs_to_target"] for run in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_common_arguments(parser, repeats=False)
    parser.add_argument(
        "--jobs", type=int, default=len(os.sched_getaffinity(0)), help="grid trials at once"
    )
    args = parser.parse_args()
    data = benchlib.corpus(args)
    facts = benchlib.machine()
    space = Discretised(benchlib.CONFIG["hunt"]["space"], args.smoke)
    points = space.points()
    epochs = min(benchlib.trial_epochs(), SMOKE_EPOCHS) if args.smoke else benchlib.trial_epochs()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    table = Table(args.results_dir / "search_table.json", data, epochs, space)
    default_name = next(iter(benchlib.CONFIG["hunt"]["algorithm"]))
    started = time.perf_counter()
    with benchlib.scratch_dir("search") as scratch:
        with benchlib.warm_server(Path(scratch)) as (env, _):
            grid_fill_s = table.fill(points, env, Path(scratch), args.jobs)
            cheapest = min(points, key=lambda p: (p.get("tdnn_channels"), p.get("emb_dim")))
            fidelity = check_fidelity(table, cheapest, env, Path(scratch))
        values = [table.objective(p) for p in points]
        optimum = min(values)
        grid_compute = len(points) * epochs

        runs: dict[str, list[dict[str, Any]]] = {}
        for seed in SEEDS:
            for name, algorithm in algorithm_configs(seed).items():
                search_space = space.search_space(name, epochs)
                cap = BUDGET_OVER_GRID * grid_compute
                run = run_search(algorithm, search_space, table, optimum + TOLERANCE, cap)
                runs.setdefault(name, []).append({"seed": seed, "algorithm": algorithm, **run})
                print(
                    f"{name} seed {seed}: {run['stopped']} after {len(run['trials'])} trials, "
                    f"{run['trial_epochs_spent']} trial-epochs",
                    flush=True,
                )
        # The identity check: the default algorithm with its configured seed, past its random
        # initial points, in process and by `orion hunt`.
        default_algorithm = {default_name: benchlib.CONFIG["hunt"]["algorithm"][default_name]}
        default_space = space.search_space(default_name, epochs)
        identity_trials = SMOKE_IDENTITY_TRIALS if args.smoke else IDENTITY_TRIALS
        reference = run_search(
            default_algorithm, default_space, table, -math.inf, math.inf, identity_trials
        )
        hunt_trials = orion_hunt_trials(
            default_algorithm, default_space, table, len(reference["trials"]), Path(scratch)
        )
    in_process = [{"params": t["params"], "objective": t["objective"]} for t in reference["trials"]]
    if hunt_trials != in_process:
        raise SystemExit(
            "identity check failed: `orion hunt` proposed\n"
            f"{json.dumps(hunt_trials)}\nbut the in-process run\n{json.dumps(in_process)}"
        )

    summary = {name: summarise(seed_runs, grid_compute) for name, seed_runs in runs.items()}
    ranked = sorted(
        (row["mean_trial_epochs_to_target"], name)
        for name, row in summary.items()
        if row["reached_in_every_seed"]
    )
    benchlib.write_result(
        args,
        "search",
        {
            "machine": facts,
            "data": benchlib.prepared_summary(data),
            "space": space.priors,
            "grid": space.choices | space.snap_log,
            "left_out": {name: "train.yaml's value" for name in space.left_out},
            "grid_points": len(points),
            "full_epochs": epochs,
            "grid_trial_epochs": grid_compute,
            "grid_fill_wall_s": grid_fill_s,
            "grid_trial_wall_s_sum": sum(
                table.entries[table.full_key(p)]["wall_s"] for p in points
            ),
            "grid_jobs": args.jobs,
            "table_reused": table.reused,
            "optimum": optimum,
            "optimal_points": [p for p, v in zip(points, values, strict=True) if v == optimum],
            "points_within_tolerance": sum(v <= optimum + TOLERANCE for v in values),
            "tolerance": TOLERANCE,
            "fidelity_check": fidelity,
            "identity_check": {
                "algorithm": default_algorithm,
                "trials_compared": len(hunt_trials),
                "identical": True,
            },
            "default_algorithm": default_name,
            "winner": ranked[0][1] if ranked else None,
            "target_fraction": TARGET_FRACTION,
            "summary": summary,
            "runs": runs,
            "wall_s": time.perf_counter() - started,
        },
    )
    for name, row in summary.items():
        mean = row["mean_trial_epochs_to_target"]
        cost = f"{mean:.1f} trial-epochs ({row['mean_fraction_of_grid']:.0%} of the grid)"
        print(
            f"{name:>10}: {cost if mean is not None else 'never'}, "
            f"reached in {row['seeds_reached']}/{len(SEEDS)} seeds"
        )


if __name__ == "__main__":
    main()

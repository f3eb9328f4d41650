"""Config validation and the values every rule shares."""

import json
import os
import shlex
import sys
from pathlib import Path

from snakemake_interface_executor_plugins.settings import DeploymentMethod
from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

EXPERIMENT = config["experiment"]
RESULTS = f"results/{EXPERIMENT}"
TRAIN_ENV = os.environ.get("REPROHUNT_TRAIN_ENV") or config["train_env"]
# Under --sdm apptainer the rules run inside the image (set REPROHUNT_TRAIN_ENV to its
# /opt/venv/train), so the train env need not exist on the host.
IN_IMAGE = DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
TRAIN_PYTHON = f"{TRAIN_ENV}/bin/python"
# The workflow env's interpreter: provenance records its `pip freeze` too.
WORKFLOW_PYTHON = sys.executable
RECIPE = config["recipe"]
RECIPE_DIR = RECIPE["dir"]
# This run's --cores. A cluster executor (profiles/slurm) runs without --cores, and reading
# workflow.cores would then stop the run: each job's CPUs come from the profile there.
try:
    CORES = workflow.cores
except WorkflowError:
    CORES = 1

if not IN_IMAGE and not Path(TRAIN_PYTHON).exists():
    raise WorkflowError(
        f"train env not found: {TRAIN_PYTHON} does not exist. Create it with `make setup`, or set "
        "`train_env:` in config/config.yaml (or REPROHUNT_TRAIN_ENV) to an existing virtualenv."
    )
for key in ("train_yaml", "hpopt_yaml"):
    if not Path(RECIPE_DIR, RECIPE[key]).is_file():
        raise WorkflowError(
            f"config key recipe.{key}: {Path(RECIPE_DIR, RECIPE[key])} does not exist "
            f"(recipe.dir is {RECIPE_DIR!r})."
        )


def cli_flags(options: dict) -> str:
    """`{"n_speakers": 8}` -> `--n-speakers 8`, skipping unset (None) options."""
    return " ".join(
        f"--{key.replace('_', '-')} {shlex.quote(str(value))}"
        for key, value in options.items()
        if value is not None
    )


def prepare_args() -> str:
    data = config["data"]
    source = data["source"]
    flags = cli_flags(data.get(source) or {})
    return f"--source {source} --n-mels {data['n_mels']} {flags}"


def hunt_spec() -> dict:
    """Everything the hunt depends on, as one JSON-able dict (a Snakemake params trigger)."""
    hunt = config["hunt"]
    recipe_args = [
        f"{RECIPE_DIR}/train.py",
        f"{RECIPE_DIR}/{RECIPE['train_yaml']}",
        "--hpopt",
        f"{RECIPE_DIR}/{RECIPE['hpopt_yaml']}",
        "--hpopt_mode",
        "orion",
        "--data_folder",
        f"{RESULTS}/data",
        "--output_folder",
        "{trial.working_dir}",
        "--device",
        RECIPE["device"],
        "--seed",
        str(RECIPE["seed"]),
    ]
    spec = {
        "experiment": EXPERIMENT,
        "results": RESULTS,
        "train_env": TRAIN_ENV,
        "storage": config["orion"]["storage"],
        "algorithm": hunt["algorithm"],
        "max_trials": hunt["max_trials"],
        "max_broken": hunt["max_broken"],
        "n_workers": hunt["n_workers"],
        "parallel_hunts": hunt.get("parallel_hunts", 1),
        "heartbeat": hunt.get("heartbeat", 120),
        "trial_timeout": hunt.get("trial_timeout"),
        "min_free_mb": hunt.get("min_free_mb"),
        "gpus": hunt.get("gpus", []),
        "warm_launcher": hunt.get("warm_launcher", True),
        "space": hunt["space"],
        "recipe_args": recipe_args,
    }
    # trial.gpus_per_trial > 1: each trial is a torchrun job of that many processes. Absent
    # from the spec at its default, so that existing hunts' spec.json stays as it was.
    gpus_per_trial = config.get("trial", {}).get("gpus_per_trial", 1)
    gpus = spec["gpus"]
    if isinstance(gpus, list) and gpus and gpus_per_trial > len(gpus):
        raise WorkflowError(
            f"config key trial.gpus_per_trial is {gpus_per_trial}, but hunt.gpus lists only "
            f"{len(gpus)} device(s) {gpus}: no trial could ever lease its GPUs. List more "
            "devices or lower trial.gpus_per_trial."
        )
    if gpus_per_trial > 1:
        spec["gpus_per_trial"] = gpus_per_trial
    return spec


def best_params_args(best_json: str) -> str:
    """The best trial's params as recipe overrides (`--lr 0.003 …`), read when the job starts."""
    params = json.loads(Path(best_json).read_text())["params"]
    return " ".join(
        f"--{key} {shlex.quote(str(value))}" for key, value in sorted(params.items())
    )

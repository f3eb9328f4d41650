"""Config validation, the recipe contract check, and the values every rule shares."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from snakemake_interface_executor_plugins.settings import DeploymentMethod
from snakemake.utils import validate

# The recipe contract (stdlib-only module of the pipeline package), checked before any job.
# This file's own checkout, not workflow.basedir: used as a module (snakedeploy), the main
# Snakefile lies in the deployment, which has no src/.
SRC = str(Path(workflow.current_basedir).parents[1] / "src")
sys.path.insert(0, SRC)
from hpopt.files import write_text_atomically
from reprohunt.config_errors import ConfigError, check as check_config
from reprohunt.recipe import (
    RecipeContractError,
    check_space,
    describe,
    prepare_command,
    prepare_flags,
)
from reprohunt.numerics import NumericsError, check as check_numerics
from reprohunt.runlock import RunLockError, check_free as check_run_free
from reprohunt.speechbrain_recipe import SPEAKER_ID_RECIPE
from reprohunt.runlock import hold as hold_run_lock

# The config file actually used: a --configfile replaces config/config.yaml (see Snakefile).
CONFIG_FILE = str((workflow.config_settings.configfiles or ["config/config.yaml"])[-1])
CONFIG_SCHEMA = Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"
# Every violation with its key, the file and the fix; Snakemake's validate then sets defaults.
try:
    check_config(config, CONFIG_SCHEMA, CONFIG_FILE, keys_doc="config/README.md")
except ConfigError as error:
    raise WorkflowError(str(error))
validate(config, schema=str(CONFIG_SCHEMA), set_default=True)

EXPERIMENT = config["experiment"]
RESULTS = f"results/{EXPERIMENT}"
TRAIN_ENV = os.environ.get("REPROHUNT_TRAIN_ENV") or config["train_env"]
# Under --sdm apptainer the rules run inside the image (set REPROHUNT_TRAIN_ENV to its
# /opt/venv/train), so the train env need not exist on the host.
IN_IMAGE = DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
TRAIN_PYTHON = f"{TRAIN_ENV}/bin/python"
# The workflow env's interpreter: provenance records its `pip freeze` too.
WORKFLOW_PYTHON = sys.executable
# This run's --cores. A cluster executor (profiles/slurm) runs without --cores, and reading
# workflow.cores would then stop the run: each job's CPUs come from the profile there.
try:
    CORES = workflow.cores
except WorkflowError:
    CORES = 1

if not IN_IMAGE and not Path(TRAIN_PYTHON).exists():
    raise WorkflowError(
        f"train env not found: {TRAIN_PYTHON} does not exist. Create it with `make setup`, or set "
        f"`train_env:` in {CONFIG_FILE} (or REPROHUNT_TRAIN_ENV) to an existing virtualenv."
    )
try:
    check_numerics(config["numerics"], f"{CONFIG_FILE}: numerics")
except NumericsError as error:
    raise WorkflowError(str(error))
try:
    # The profile is part of what a run is: a portable and a native run never share a result.
    RECIPE = describe(config["recipe"], config["data"], CONFIG_FILE) | {
        "numerics": config["numerics"]
    }
    check_space(config["hunt"]["space"], RECIPE, CONFIG_FILE)
except RecipeContractError as error:
    raise WorkflowError(str(error))
RECIPE_DIR = Path(RECIPE["dir"])


def check_results_writable(folder: str) -> None:
    """Refuse an unwritable results folder with its path and the fix (not a traceback later)."""
    import tempfile

    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise WorkflowError(
            f"results folder {folder} is not writable ({error.strerror}): fix its permissions "
            f"or mount, or change `experiment:` in {CONFIG_FILE} / run from another folder"
        )


if not workflow.dryrun and Path(RESULTS).is_dir():
    check_results_writable(RESULTS)
# The recipe's data options, checked by the recipe's own schema when it ships one.
PREPARE_SCHEMA = RECIPE_DIR / "prepare.schema.yaml"
if PREPARE_SCHEMA.is_file():
    try:
        check_config(config["data"], PREPARE_SCHEMA, CONFIG_FILE, prefix="data")
    except ConfigError as error:
        raise WorkflowError(str(error))
    validate(config["data"], schema=str(PREPARE_SCHEMA.resolve()))


def check_priors_with_orion() -> None:
    """Parse every prior with Orion's own parser before any job. Orion lives in the train env
    only, so its python parses them (about 2 s), with this checkout's src first on its path
    (the code this Snakefile imports). Skipped where the train env is only in the image, and in
    the Snakemake processes that run a job (a cluster job, a local `run:` rule's subprocess):
    the main process checked them already, and the hunt checks them too.
    """
    if IN_IMAGE or not workflow.is_main_process:
        return
    command = [TRAIN_PYTHON, "-m", "reprohunt.preflight", "--config-file", CONFIG_FILE]
    command += ["--space", json.dumps(config["hunt"]["space"])]
    path = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
    checked = subprocess.run(
        command, env=os.environ | {"PYTHONPATH": path}, capture_output=True, text=True
    )
    if checked.returncode != 0:
        raise WorkflowError(checked.stderr.strip())


check_priors_with_orion()


def hunt_spec() -> dict:
    """Everything the hunt depends on, as one JSON-able dict (a Snakemake params trigger)."""
    hunt = config["hunt"]
    spec = {
        "experiment": EXPERIMENT,
        "config_file": CONFIG_FILE,
        "results": RESULTS,
        "train_env": TRAIN_ENV,
        "storage": config["orion"]["storage"],
        "algorithm": hunt["algorithm"],
        "max_trials": hunt["max_trials"],
        "max_broken": hunt["max_broken"],
        "n_workers": hunt_workers(),
        "parallel_hunts": hunt["parallel_hunts"],
        "heartbeat": hunt["heartbeat"],
        "trial_timeout": hunt.get("trial_timeout"),
        "min_free_mb": hunt.get("min_free_mb"),
        "gpus": hunt.get("gpus", []),
        "warm_launcher": hunt["warm_launcher"],
        "start_with_train_yaml": hunt["start_with_train_yaml"],
        "space": hunt["space"],
        "recipe": RECIPE,
        "data_folder": f"{RESULTS}/data",
    }
    # trial.gpus_per_trial > 1: each trial is a torchrun job of that many processes. Absent
    # from the spec at its default, so that existing hunts' spec.json stays as it was.
    gpus_per_trial = config.get("trial", {}).get("gpus_per_trial", 1)
    gpus = spec["gpus"]
    if isinstance(gpus, list) and gpus and gpus_per_trial > len(gpus):
        raise WorkflowError(
            f"{CONFIG_FILE}: trial.gpus_per_trial is {gpus_per_trial}, but hunt.gpus lists only "
            f"{len(gpus)} device(s) {gpus}: no trial could ever lease its GPUs. List more "
            "devices or lower trial.gpus_per_trial."
        )
    if gpus_per_trial > 1:
        spec["gpus_per_trial"] = gpus_per_trial
    return spec


def logged(command: str) -> str:
    """`command` run through reprohunt.logged, as every computing step runs: it applies the
    numerics profile, writes the step's log and names a full disk first. Each caller's params
    give `python` (the train env's) and `numerics`, so a changed profile reruns the step.
    """
    return (
        "{params.python} -m reprohunt.logged --numerics {params.numerics} {log} -- "
        + command
    )


# The final stage (workflow/rules/retrain.smk): tuned and untuned runs at each of these seeds.
FINAL_SEEDS = config["final"]["seeds"]
BEST = f"{RESULTS}/hunt/best.json"
TRIAL_SEED = config["recipe"]["seed"]
if TRIAL_SEED in FINAL_SEEDS and not config["final"]["allow_trial_seed"]:
    raise WorkflowError(
        f"{CONFIG_FILE}: final.seeds holds {TRIAL_SEED}, which is recipe.seed, the seed every "
        "hunt trial trains with. There the tuned run is the very trial that won the selection, "
        "the best of hunt.max_trials noisy results, and it flatters the tuned arm (the winner's "
        f"curse). Fix: drop {TRIAL_SEED} from final.seeds, or set final.allow_trial_seed: true "
        "to keep it knowingly."
    )


def final_result(arm: str, seed: int) -> str:
    return f"{RESULTS}/final/{arm}/seed{seed}/metrics.json"


def final_threads() -> int:
    """Cores one final run uses, so that parallel runs never oversubscribe the machine:
    recipe.args.num_threads when it fixes a count, every core when it passes another value
    (`"null"`: the recipe then uses every core it may), else 1, what both shipped recipes'
    train.yaml set."""
    if "speechbrain" in RECIPE:
        return RECIPE["speechbrain"]["num_threads"]
    threads = str(RECIPE["args"].get("num_threads", 1))
    return max(1, int(threads)) if threads.isdigit() else CORES


def hunt_workers() -> int:
    """hunt.n_workers, `auto` resolved: the `optuna` algorithm's batch (a parallel hunt that
    replays: src/reprohunt/orion_optuna.py) shared by the hunt processes, capped by the trials
    the listed GPUs or this run's --cores hold at once; 1 for any other algorithm, whose
    parallel trials would depend on timing, and for GPU or multi-process trials without
    hunt.gpus to lease from. A cluster executor has no --cores here (CORES is
    1): set n_workers there."""
    hunt = config["hunt"]
    if hunt["n_workers"] != "auto":
        return hunt["n_workers"]
    ((name, options),) = hunt["algorithm"].items()
    if name != "optuna":
        return 1
    batch = (options or {}).get("batch", 1)
    wanted = -(-batch // hunt["parallel_hunts"])
    gpus = hunt.get("gpus")
    per_trial = config.get("trial", {}).get("gpus_per_trial", 1)
    if isinstance(gpus, list) and gpus:
        return max(1, min(wanted, len(gpus) // per_trial))
    if not gpus and (config["recipe"]["device"] == "cuda" or per_trial > 1):
        return 1  # no leases: every trial would use the same devices
    return max(1, min(wanted, CORES // final_threads()))


def rebuilt(path: str, since: float) -> bool:
    """Whether `path` was (re)written at or after `since` (the run's start; see Snakefile)."""
    return Path(path).is_file() and Path(path).stat().st_mtime >= since


def refuse_a_second_run() -> None:
    """Stop here, before any job, when another run of this experiment is live: every kind of
    invocation (--unlock included) but a job of this run (a cluster job, a `run:` job).
    """
    if not workflow.is_main_process:
        return
    try:
        check_run_free(Path(RESULTS), CONFIG_FILE)
    except RunLockError as error:
        raise WorkflowError(str(error))


# Held from `onstart` (Snakefile) to the end of the run's process.
RUN_LOCK_HANDLES = []


def take_run_lock() -> None:
    """The experiment's run lock (reprohunt.runlock), taken when Snakemake is about to start
    jobs (`onstart`: not for a dry run, lint, --unlock or a run with nothing to do). Two runs
    started at once both pass refuse_a_second_run; only one gets here."""
    try:
        RUN_LOCK_HANDLES.append(hold_run_lock(Path(RESULTS), CONFIG_FILE))
    except RunLockError as error:
        raise WorkflowError(str(error))

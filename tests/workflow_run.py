"""Run the real Snakemake workflow in an isolated working directory (shared by workflow tests).

Each run gets its own folder with a `config/config.yaml` derived from the repository's, with
absolute paths to the recipe and the train env, so nothing is written into the checkout.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = REPO / ".venv" / "workflow" / "bin" / "snakemake"
TRAIN_ENV = REPO / ".venv" / "train"


def without_coverage(environment: dict[str, str]) -> dict[str, str]:
    """`environment` without the variables that make a Python process measure its coverage
    (make test's): for processes whose code other tests measure already, or that coverage
    would slow many times over (emulated CPUs), or disturb (a signal landing in its start-up)."""
    return {name: value for name, value in environment.items() if not name.startswith("COVERAGE_")}


# Small enough for CI: a handful of trials on a tiny corpus, and the fewest final seeds the
# schema allows (2: the comparison needs a spread), so the final stage is 4 retrains, not 6.
TINY = {
    "data": {"synthetic": {"seed": 7, "n_speakers": 4, "utts_per_speaker": 8}},
    "final": {"seeds": [1987, 1988]},
    "hunt": {
        # The default's algorithm and batch, so that every tiny run's hunt is a parallel one
        # that must replay (2 workers with --cores 2).
        "algorithm": {
            "optuna": {
                "seed": 3,
                "options": {"multivariate": True, "n_startup_trials": 2},
                "batch": 2,
            }
        },
        "max_trials": 3,
        "max_broken": 2,
        "warm_launcher": True,
        "space": {"emb_dim": "choices([16, 32])", "lr": "loguniform(1e-3, 1e-2)"},
    },
}


# Values that are one setting each: an override replaces them whole instead of adding keys.
WHOLE_VALUES = {"algorithm", "space"}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update; a value of None in `extra` removes the key."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if value is None:
            merged.pop(key, None)
        elif (
            isinstance(value, dict)
            and isinstance(merged.get(key), dict)
            and key not in WHOLE_VALUES
        ):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_config(workdir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["train_env"] = str(TRAIN_ENV)
    config["recipe"]["dir"] = str(REPO / config["recipe"]["dir"])
    config = merge(config, overrides)
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def snakemake_command(workdir: Path, *args: str, profile: Path | None = None) -> list[str]:
    """`snakemake --cores 2 ARGS` in `workdir` with the repository's Snakefile and profile.

    With `profile` (a SLURM workflow profile, see tests/test_slurm.py): `snakemake --executor
    slurm --workflow-profile PROFILE ARGS`, without --cores, as a user runs it.
    """
    where = ["--snakefile", str(REPO / "Snakefile")]
    if profile is None:
        where += ["--workflow-profile", str(REPO / "profiles" / "default")]
        run_on = ["--cores", "2"]
    else:
        where += ["--workflow-profile", str(profile)]
        run_on = ["--executor", "slurm"]
    return [str(SNAKEMAKE), *where, "--directory", str(workdir), *run_on, *args]


def snakemake(
    workdir: Path,
    *args: str,
    timeout: float = 1200,
    profile: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `snakemake_command` to completion, capturing its output."""
    return subprocess.run(
        snakemake_command(workdir, *args, profile=profile),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_with_configfile(
    workdir: Path, config_file: Path, *args: str
) -> subprocess.CompletedProcess:
    """`snakemake --configfile FILE` from `workdir`, as a user types it (plus --cores): the
    file replaces config/config.yaml, so none of the default search space leaks into it."""
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--cores", "2"]
    command += ["--configfile", str(config_file), *args]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=1200)


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path

"""The recipe contract: what the workflow needs from a recipe folder, and how it calls it.

A recipe is a folder (SpeechBrain's layout) holding a training script, its ``train.yaml`` (the
full-budget run), an ``hpopt.yaml`` (the per-trial overrides) and its own data-preparation
script. The workflow describes it once, as the ``recipe`` dict of ``hunt/spec.json`` built by
:func:`describe`, and every step that runs the recipe (each trial of the hunt, the retraining,
the audit) builds its command from that description with :func:`command`, so the three can never
call it differently. The whole contract is documented in README.md, "Bring your own recipe".

Stdlib only: the Snakefile imports this module in the workflow env (to check a recipe and hash
its code before any job), the pipeline steps in the train env.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hpopt.files import digest_of, sha256_file
from reprohunt import speechbrain_recipe

# Keys every recipe's train.yaml must have at the top level: the workflow overrides them.
REQUIRED_KEYS = ("data_folder", "output_folder", "seed")
# hpopt adds `--trial_id` in a trial (as SpeechBrain's hpopt does): train.yaml or hpopt.yaml
# must declare it, or HyperPyYAML refuses the override.
TRIAL_ID_KEY = "trial_id"
# Files of a recipe folder that are not its code: results of by-hand runs, caches, editor files,
# and its documentation (editing a README must not start a new experiment).
IGNORED_PARTS = {"results", "__pycache__", ".ipynb_checkpoints"}
IGNORED_SUFFIXES = {".pyc", ".md"}


class RecipeContractError(Exception):
    """The recipe folder or the config's recipe section breaks the contract; says what to fix."""


def top_level_keys(yaml_file: Path) -> set[str]:
    """The top-level keys of a (Hyper)YAML file, read as text (no YAML library in either env
    agrees on HyperPyYAML's tags, and the workflow env must not execute recipe YAML)."""
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", yaml_file.read_text(), re.M))


def code_files(folder: Path) -> list[Path]:
    """Every file of the recipe's code (not its docs), in a stable order; symlinks followed
    (shared `*_prepare.py` files are symlinks in SpeechBrain's recipes)."""
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [name for name in dirs if name not in IGNORED_PARTS and not name.startswith(".")]
        files += [Path(root, name) for name in names if not name.startswith(".")]
    return sorted(path for path in files if path.suffix not in IGNORED_SUFFIXES)


def code_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of the recipe's code files."""
    return {path.relative_to(folder).as_posix(): sha256_file(path) for path in code_files(folder)}


def describe(
    config: Mapping[str, Any], data: Mapping[str, Any], config_file: str
) -> dict[str, Any]:
    """The recipe as the workflow runs it, checked against the contract (before any job).

    ``args`` holds the fixed overrides every run gets: the config's ``recipe.args`` plus every
    ``data`` option that is also a top-level key of train.yaml (e.g. ``n_mels``, which both the
    data preparation and the model read), so a data setting can never reach only one of them.
    """
    folder = Path(config["dir"])
    where = f"{config_file}: recipe"
    if not folder.is_dir():
        raise RecipeContractError(f"{where}.dir: {folder} is not a folder")
    paths = {key: folder / config[key] for key in ("script", "train_yaml", "hpopt_yaml", "prepare")}
    for key, path in paths.items():
        if not path.is_file():
            raise RecipeContractError(
                f"{where}.{key}: {path} does not exist (recipe.dir is {str(folder)!r})"
            )
    train_keys = top_level_keys(paths["train_yaml"])
    missing = [key for key in REQUIRED_KEYS if key not in train_keys]
    if missing:
        raise RecipeContractError(
            f"{paths['train_yaml']} lacks the top-level key(s) {', '.join(missing)}: the workflow "
            "passes --data_folder, --output_folder and --seed to every run; declare them "
            "(e.g. `data_folder: null`)"
        )
    if TRIAL_ID_KEY not in train_keys | top_level_keys(paths["hpopt_yaml"]):
        raise RecipeContractError(
            f"neither {paths['train_yaml']} nor {paths['hpopt_yaml']} declares `{TRIAL_ID_KEY}`: "
            "hpopt passes --trial_id to every trial; add `trial_id: null` to train.yaml"
        )
    fixed = dict(config.get("args") or {})
    unknown = [key for key in fixed if key not in train_keys]
    if unknown:
        raise RecipeContractError(
            f"{where}.args: {', '.join(unknown)} not top-level key(s) of {paths['train_yaml']}"
        )
    for key, value in data.items():
        if key in train_keys and not isinstance(value, dict):
            if key in fixed and fixed[key] != value:
                raise RecipeContractError(
                    f"{config_file}: data.{key} is {value!r} but recipe.args.{key} is "
                    f"{fixed[key]!r}; the data and the recipe must agree (set it in data only)"
                )
            fixed[key] = value
    speechbrain = None
    if config.get("speechbrain") is not None:
        speechbrain = speechbrain_recipe.settings(config["speechbrain"])
        problems = speechbrain_recipe.check(
            speechbrain, paths["prepare"], train_keys, f"{where}.speechbrain"
        ) + speechbrain_recipe.check_data(data, config_file)
        if problems:
            raise RecipeContractError("\n".join(problems))
    hashes = code_hashes(folder)
    described = {
        "dir": str(folder),
        "script": config["script"],
        "train_yaml": config["train_yaml"],
        "hpopt_yaml": config["hpopt_yaml"],
        "prepare": config["prepare"],
        "result": config["result"],
        "args": dict(sorted(fixed.items())),
        "device": config["device"],
        "seed": config["seed"],
        "code": hashes,
        "code_sha256": digest_of(hashes),
    }
    # Only where set, so that the description (and the experiment named after it) of every
    # recipe without the section stays what it was.
    return described | ({"speechbrain": speechbrain} if speechbrain else {})


def check_space(space: Iterable[str], recipe: Mapping[str, Any], config_file: str) -> None:
    """Every searched key is a top-level key of train.yaml and not a fixed argument."""
    train_yaml = Path(recipe["dir"]) / recipe["train_yaml"]
    keys = top_level_keys(train_yaml)
    problems = [
        f"hunt.space.{key}: '{key}' is not a top-level key of {train_yaml}; only top-level keys "
        "can be searched (lift nested values to the top level and !ref them)"
        for key in space
        if key not in keys
    ]
    problems += [
        f"hunt.space.{key}: Orion passes a one-letter name to the script as `-{key} VALUE`, "
        "which the recipe does not read as --key; give the key two letters or more in train.yaml"
        for key in space
        if len(key) == 1
    ]
    problems += [
        f"hunt.space.{key}: '{key}' is also fixed by recipe.args or data.{key}; search it or fix "
        "it, not both"
        for key in space
        if key in recipe["args"]
    ]
    if problems:
        raise RecipeContractError(
            f"invalid search space in {config_file}:\n  " + "\n  ".join(problems)
        )


def prepare_flags(options: Mapping[str, Any]) -> list[str]:
    """The workflow's ``data:`` section as the prepare script's argv (the prepare rule, the bench).

    ``{"split_ratio": [40, 30, 30], "source": "synthetic", "synthetic": {"seed": 1}}`` gives
    ``--split-ratio 40 30 30 --source synthetic --seed 1``: nested options (one group per data
    source) only for the selected ``source``, a list as one flag with several values (argparse
    ``nargs``), None left out.
    """
    argv: list[str] = []
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, Mapping):
            if key == options.get("source"):
                argv += prepare_flags(value)
        elif isinstance(value, list):
            argv += [flag, *(str(item) for item in value)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def prepare_command(recipe: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """The data preparation's argv after the interpreter, but for `--out DIR --overwrite`: the
    recipe's `*_prepare.py` with the `data` options as flags, or, for a SpeechBrain recipe as
    it is, the workflow's step that calls its prepare function (speechbrain_prepare.py)."""
    if not recipe.get("speechbrain"):
        return [str(Path(recipe["dir"]) / recipe["prepare"]), *prepare_flags(data)]
    return [
        speechbrain_recipe.script(speechbrain_recipe.PREPARE),
        *("--recipe", recipe["dir"], "--prepare", recipe["prepare"]),
        *("--settings", json.dumps(recipe["speechbrain"], sort_keys=True)),
        *("--data", json.dumps(dict(data), sort_keys=True)),
    ]


def overrides(values: Mapping[str, Any]) -> list[str]:
    """``{"lr": 0.01}`` as ``["--lr", "0.01"]``, in key order, for the recipe's command line."""
    return [item for key, value in sorted(values.items()) for item in (f"--{key}", str(value))]


def command(
    recipe: Mapping[str, Any],
    *,
    data_folder: str,
    output_folder: str,
    trial: bool = False,
    params: Mapping[str, Any] | None = None,
) -> list[str]:
    """The recipe's argv after the interpreter: ``script train.yaml [--hpopt …] --key value…``.

    ``trial``: an Orion trial (``--hpopt hpopt.yaml --hpopt_mode orion``); ``params``: the
    searched values (a retraining's best params; a trial gets them from Orion instead).
    """
    folder = Path(recipe["dir"])
    argv = [str(folder / recipe["script"]), str(folder / recipe["train_yaml"])]
    speechbrain = recipe.get("speechbrain")
    if speechbrain:
        # A SpeechBrain recipe as it is runs under the runner, which writes its result file.
        argv = [
            speechbrain_recipe.script(speechbrain_recipe.RUNNER),
            *("--result", recipe["result"], "--threads", str(speechbrain["num_threads"])),
            *("--numerics", recipe.get("numerics", "portable")),
            *argv,
        ]
    if trial:
        argv += ["--hpopt", str(folder / recipe["hpopt_yaml"]), "--hpopt_mode", "orion"]
    argv += ["--data_folder", data_folder, "--output_folder", output_folder]
    argv += ["--device", recipe["device"], "--seed", str(recipe["seed"])]
    if speechbrain:
        argv += speechbrain_recipe.run_overrides(speechbrain, data_folder)
    return argv + overrides(recipe["args"]) + overrides(params or {})

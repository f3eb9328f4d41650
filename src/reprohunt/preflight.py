"""Checks that run before a hunt touches the database or starts a trial.

Each finds a mistake that would otherwise surface minutes later inside a trial log, or would
break every trial (the budget of max_broken spent on a typo); each message names the file or
config key and the fix. Nothing here writes outside a probe file, so a failed check loses
nothing already computed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reprohunt.orion_storage import redact

DEFAULT_MIN_FREE_MB = 200
# `hunt.gpus: visible`: lease among the devices the scheduler gave this job.
VISIBLE_GPUS = "visible"
PRIOR_FIX = (
    "write each prior as Orion parses it, e.g. loguniform(1e-4, 1e-2), uniform(0, 1), "
    "choices([16, 32])"
)


class HuntError(Exception):
    """A problem the user must fix; the message says what and where."""


def check_priors(space: dict[str, str], config_file: str) -> None:
    """Every prior parses in Orion's own parser (the pattern of the config schema lets
    `loguniform(1e-4,, 1e-2)` through)."""
    from orion.core.io.space_builder import SpaceBuilder

    problems = []
    for key, prior in space.items():
        try:
            SpaceBuilder().build({f"/{key}": prior})
        except (TypeError, ValueError, SyntaxError) as error:
            problems.append(f"hunt.space.{key}: invalid Orion prior {prior!r}: {error}")
    if problems:
        raise HuntError(f"invalid search space in {config_file}:\n  " + "\n  ".join(problems))


def validate_search(space: dict[str, str], algorithm: dict[str, Any], config_file: str) -> None:
    """Every prior parses in Orion, and Orion builds the algorithm with its options on that
    space (the keys were checked against train.yaml before any job, by recipe.check_space)."""
    from orion.algo.base import algo_factory
    from orion.core.io.space_builder import SpaceBuilder
    from orion.core.worker.primary_algo import create_algo

    check_priors(space, config_file)
    ((name, options),) = algorithm.items()
    try:
        built = SpaceBuilder().build({f"/{key}": prior for key, prior in space.items()})
        create_algo(algo_factory.get_class(name), built, **(options or {}))
    except Exception as error:  # Orion raises TypeError, RuntimeError, NotImplementedError…
        reason = " ".join(str(error).split())[:400]
        raise HuntError(
            f"hunt.algorithm in {config_file}: Orion cannot build {name!r} with options "
            f"{options} on this search space: {reason}"
        ) from error


def check_device(device: str, config_file: str) -> None:
    """A CUDA device exists when the recipe is to run on one (else every trial would break)."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise HuntError(
            f"recipe.device is {device!r} in {config_file}, but torch {torch.__version__} sees "
            "no CUDA device on this host: every trial would break. Run on a GPU host (the "
            "container with --gpus), or set recipe.device: cpu"
        )


def check_data(data_folder: Path, config_file: str) -> None:
    """Every file of the prepared data still has the hash recorded when it was prepared."""
    from reprohunt.dataverify import differences

    found, _ = differences(data_folder)
    if found:
        listed = "\n  ".join(found[:5]) + (f"\n  … {len(found) - 5} more" if len(found) > 5 else "")
        raise HuntError(
            f"the prepared data in {data_folder} changed since it was prepared:\n  {listed}\n"
            "Prepare it again (`snakemake --forcerun prepare`, same config), or fix data: in "
            f"{config_file}"
        )


def check_inputs(recipe: dict[str, Any], data_folder: str, data: Path, config_file: str) -> None:
    """The recipe files and the prepared data (`data`, the prepared record, in `data_folder`)
    exist."""
    for key in ("script", "train_yaml", "hpopt_yaml"):
        path = Path(recipe["dir"]) / recipe[key]
        if not path.is_file():
            raise HuntError(f"{path} does not exist: check recipe.{key} in {config_file}")
    missing = [path for path in (data, Path(data_folder)) if not path.exists()]
    if missing:
        raise HuntError(
            f"missing data: {missing[0]} does not exist. Prepare it first "
            f"(`snakemake {data}` runs the prepare rule), or fix data: in {config_file}"
        )
    try:
        summary = json.loads(data.read_text())
    except ValueError as error:
        summary, reason = None, f"not valid JSON ({error})"
    else:
        reason = "not a JSON object"
    if not isinstance(summary, dict):
        raise HuntError(
            f"{data} is {reason}: the data preparation did not finish cleanly. Prepare it "
            "again (`snakemake --forcerun prepare`)"
        )


def check_writable(folders: list[Path], min_free_mb: int) -> None:
    """Each folder can be created and written to, and its filesystem has `min_free_mb` free."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise HuntError(
                f"results folder {folder} is not writable ({error.strerror}): fix its "
                "permissions, or run from a folder where results/ can be written"
            ) from error
    free_mb = shutil.disk_usage(folders[0]).free // 2**20
    if free_mb < min_free_mb:
        raise HuntError(
            f"only {free_mb} MB free on the filesystem of {folders[0]} (hunt.min_free_mb is "
            f"{min_free_mb}): free some space, or move results/ to a larger disk"
        )


def trial_gpus(spec_gpus: Sequence[int | str] | str, environ: Mapping[str, str]) -> list[str]:
    """The device ids trials lease from: `hunt.gpus`, or the job's visible devices."""
    if spec_gpus != VISIBLE_GPUS:
        return [str(gpu) for gpu in spec_gpus]
    visible = [gpu.strip() for gpu in environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [gpu for gpu in visible if gpu]
    if not visible:
        raise HuntError(
            "hunt.gpus is 'visible' but CUDA_VISIBLE_DEVICES is empty or unset for the hunt: "
            "the scheduler gave this job no GPU. Request them (e.g. the `gpu` resource in "
            "profiles/slurm/config.yaml), or list device ids in hunt.gpus"
        )
    return visible


def check_mongodb(database: dict[str, Any], host: str) -> None:
    """The MongoDB server at `host` answers and lets this user read the database (5 s at most).

    `database` is Orion's storage config (its address may hold credentials), `host` the
    configured host name that error messages show.
    """
    import pymongo
    from pymongo.errors import PyMongoError

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        host=database["host"],
        port=database["port"],
        authSource=database["name"],
        serverSelectionTimeoutMS=5000,
    )
    try:
        client[database["name"]].list_collection_names()
    except PyMongoError as error:
        reason = redact(str(error)).split(" (configured timeouts")[0][:300]
        raise HuntError(
            f"cannot use MongoDB database {database['name']!r} at {host}:{database['port']}: "
            f"{reason}. Check orion.storage (host, port, name) in the config, that the "
            "server runs, and the credentials in ORION_DB_USER / ORION_DB_PASSWORD"
        ) from error
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m reprohunt.preflight --space JSON --config-file FILE`: the priors checked by
    Orion's own parser, for the Snakefile, which runs in the workflow env (no Orion there) and
    calls this once at start-up, before any job. The algorithm is checked by the hunt (building
    it imports its library: seconds on every Snakemake start)."""
    import argparse
    import sys

    from reprohunt import orion_noise

    parser = argparse.ArgumentParser(description="check the priors with Orion's own parser")
    parser.add_argument("--space", type=json.loads, required=True, help="hunt.space as JSON")
    parser.add_argument("--config-file", required=True, help="the config file, for messages")
    args = parser.parse_args(argv)
    orion_noise.install()
    try:
        check_priors(args.space, args.config_file)
    except HuntError as error:
        print(f"{error}\nfix: {PRIOR_FIX}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

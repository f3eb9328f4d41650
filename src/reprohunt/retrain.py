"""The retrain step: one full-budget run (train.yaml) of the final stage, then its result.

The final stage trains each seed of `final.seeds` twice: *tuned* (the best trial's params) and
*untuned* (train.yaml as shipped, nothing overridden), one job per run, so that the comparison
(reprohunt.compare) can tell what tuning changed from what the seed changed. Each run trains
into `final/runs/<key>/`, the key a hash of everything the run depends on (params, seed, recipe
code and arguments, data), so a new best trial or an edited recipe never resumes from another
run's checkpoints, while a killed run of the same training resumes from its own. Its result file
is checked against the result contract (reprohunt.result) and copied to the rule's output; a
result of another shape stops the rule, naming the file and the missing key. The audit reruns
the same command through :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, TextIO

from hpopt.files import sha256_text, write_json_atomically
from reprohunt import final_progress
from reprohunt import recipe as recipes
from reprohunt.dataverify import data_identity
from reprohunt.result import Result, ResultError, load


def run_key(recipe: dict[str, Any], params: dict[str, Any], data: str) -> str:
    """Hash of what a training run depends on (its folder's name)."""
    identity = {
        "params": params,
        "seed": recipe["seed"],
        "device": recipe["device"],
        "numerics": recipe.get("numerics"),
        "args": recipe["args"],
        "code_sha256": recipe["code_sha256"],
        "data": data,
    }
    return sha256_text(json.dumps(identity, sort_keys=True, default=str))[:16]


def run(
    recipe: dict[str, Any],
    params: dict[str, Any],
    data_folder: Path,
    out: Path,
    log: TextIO,
    env: dict[str, str] | None = None,
) -> Result:
    """Train `recipe` with `params` into `out`, then load and check its result file.

    `env`: the recipe's environment (default: this process's), e.g. another numerics profile."""
    command = [sys.executable] + recipes.command(
        recipe, data_folder=str(data_folder), output_folder=str(out), params=params
    )
    log.write(f"command: {' '.join(command)}\n")
    log.flush()
    code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise ResultError(f"the recipe exited with {code}: {' '.join(command)}")
    return load(out / recipe["result"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipe", type=Path, required=True, help="final/recipe.json (the recipe description)"
    )
    parser.add_argument("--seed", type=int, required=True, help="the training seed of this run")
    parser.add_argument(
        "--best", type=Path, help="hunt/best.json: train its params (absent: train.yaml as is)"
    )
    parser.add_argument("--data", type=Path, required=True, help="the data's prepared.json")
    parser.add_argument("--runs", type=Path, required=True, help="folder of the run folders")
    parser.add_argument("--out", type=Path, required=True, help="final/<arm>/seed<S>/metrics.json")
    args = parser.parse_args(argv)
    recipe = json.loads(args.recipe.read_text()) | {"seed": args.seed}
    params = json.loads(args.best.read_text())["params"] if args.best else {}
    folder = args.runs / run_key(recipe, params, data_identity(args.data.parent))
    print(f"training into {folder}", flush=True)
    since = final_progress.started(args.out)
    try:
        result = run(recipe, params, args.data.parent, folder, sys.stdout)
    except ResultError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_json_atomically(args.out, result.document | {"run_folder": str(folder)}, indent=2)
    print(f"result: {result.compared_values()}")
    final_progress.finished(args.out, since, result.compared_values())
    return 0


if __name__ == "__main__":
    sys.exit(main())

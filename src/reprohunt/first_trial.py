"""The hunt's first trial: the recipe as shipped (train.yaml's values), where the space holds them.

Why: a search that never measures the recipe's own configuration can deliver something worse
than it, and a model-based algorithm (TPE) that happens to draw no good point among its random
first trials keeps refining a poor region. SMAC puts the default configuration into its initial
design; Optuna's `enqueue_trial` and Ray Tune's `points_to_evaluate` do the same. The point is
inserted once, into an experiment that has no trial yet, before `orion hunt` runs: its worker
runs it first (Orion reserves a waiting trial before asking the algorithm); the algorithm
registers it at once as its first trial and observes its result like any other trial's. A key
whose train.yaml value is not a plain number or string, or lies outside its prior, leaves the
hunt without it (said in the log).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml


class _Tagged:
    """A train.yaml value written with a YAML tag (`!ref`, `!new:` …): not a point value."""


class _Loader(yaml.SafeLoader):
    """Reads train.yaml's top level without resolving hyperpyyaml's tags (no objects built)."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: _Tagged())


def train_yaml_point(train_yaml: Path, space: dict[str, str]) -> tuple[dict[str, Any] | None, str]:
    """train.yaml's values of the searched keys, or None and the reason they cannot be a trial."""
    from orion.core.io.space_builder import SpaceBuilder

    values = yaml.load(train_yaml.read_text(), Loader=_Loader) or {}
    built = SpaceBuilder().build({f"/{key}": prior for key, prior in space.items()})
    point = {}
    for key in sorted(space):
        if space[key].startswith("fidelity("):
            point[key] = built[f"/{key}"].high  # the full budget, as the recipe runs it
            continue
        value = values.get(key)
        if isinstance(value, (_Tagged, bool)) or value is None:
            return None, f"train.yaml's {key} is not a plain value"
        if value not in built[f"/{key}"]:
            return None, f"train.yaml's {key} {value!r} lies outside hunt.space.{key} {space[key]}"
        point[key] = value
    return point, "train.yaml's values " + ", ".join(f"{k}={v}" for k, v in point.items())


def insert(
    command: list[str], env: dict[str, str], storage: dict[str, Any], name: str, point: dict
) -> bool:
    """Create the experiment as `command` (an `orion hunt` command line) would, then insert
    `point` as its first trial; False (nothing done) when the experiment already has trials."""
    from orion.client import get_experiment
    from orion.core.utils.exceptions import NoConfigurationError

    try:
        existing = get_experiment(name, mode="r", storage=storage).fetch_trials()
    except NoConfigurationError:
        existing = []
        subprocess.run([*command[:2], "--init-only", *command[2:]], env=env, check=True)
    if existing:
        return False
    experiment = get_experiment(name, mode="w", storage=storage)
    trial = experiment.insert({f"/{key}": value for key, value in point.items()})
    # The algorithm registers it now, as trial 0: otherwise it learns of it only when its
    # result comes, after the trials other workers asked for meanwhile, and the trials'
    # numbering (which a batched search is seeded and windowed by) would depend on timing.
    # Orion's producer is the client's own way to have the algorithm observe a trial.
    experiment._producer.observe(trial)  # pylint: disable=protected-access
    return True

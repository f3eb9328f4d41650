"""A real `orion hunt` of the fixture trial (tests/fixtures/orion_fidelity_trial.py) over a
PickledDB, for the tests of our Orion algorithms: what the hunt stored, in submission order;
and the fixture's ``objective``, to answer the same trials in process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from reprohunt.orion_storage import storage_config, storage_env

TRIAL_SCRIPT = Path(__file__).parent / "fixtures" / "orion_fidelity_trial.py"
ORION = Path(sys.executable).with_name("orion")

_spec = importlib.util.spec_from_file_location("orion_fidelity_trial", TRIAL_SCRIPT)
assert _spec is not None and _spec.loader is not None
_trial_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_trial_script)
objective = _trial_script.objective


def run(
    tmp_path: Path,
    name: str,
    algorithm: dict[str, Any],
    space: dict[str, str],
    max_trials: int,
    n_workers: int = 1,
    sleep_s: float = 0.0,
) -> tuple[dict[str, Any], list[Any]]:
    """Run `orion hunt` (the orion script under this interpreter, whatever its shebang says,
    with none of an enclosing trial's variables) with `n_workers`, each trial sleeping up to
    `sleep_s`; the experiment's configuration and trials."""
    from orion.client import get_experiment

    config = tmp_path / "orion.yaml"
    config.write_text(yaml.safe_dump({"experiment": {"algorithm": algorithm, "max_broken": 1}}))
    storage = storage_config({"type": "pickleddb"}, tmp_path)
    env = os.environ | storage_env(storage) | {"TRIAL_SLEEP_S": str(sleep_s)}
    for variable in [n for n in env if n.startswith(("HPOPT_", "ORION_EXP", "ORION_TRIAL"))]:
        del env[variable]
    command = [sys.executable, str(ORION), "hunt", "-n", name, "-c", str(config)]
    command += ["--exp-max-trials", str(max_trials), "--working-dir", str(tmp_path / "work")]
    command += ["--n-workers", str(n_workers)]
    command += [sys.executable, str(TRIAL_SCRIPT)]
    command += [f"--{key}~{prior}" for key, prior in space.items()]
    finished = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    experiment = get_experiment(name, storage=storage)
    trials = sorted(experiment.fetch_trials(), key=lambda trial: trial.submit_time)
    return experiment.configuration, trials


def params(trial: Any) -> dict[str, Any]:
    """A stored trial's params as the algorithm proposed them (Orion prefixes names with /)."""
    return {key.lstrip("/"): value for key, value in trial.params.items()}

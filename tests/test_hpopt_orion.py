"""hpopt under a real ``orion hunt`` (PickledDB in tmp_path), read back through Orion's API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPT = FIXTURES / "hpopt_quadratic.py"
HPARAMS = FIXTURES / "hpopt_quadratic.yaml"
HPOPT_FILE = FIXTURES / "hpopt_quadratic_hpopt.yaml"
ORION = Path(sys.executable).with_name("orion")

pytestmark = pytest.mark.slow


def hunt(
    tmp_path: Path, name: str, *script_args: str, max_trials: int
) -> tuple[dict, subprocess.CompletedProcess]:
    """Run ``orion hunt`` on the fixture script; return the storage config and the run."""
    database = tmp_path / "orion.pkl"
    config = tmp_path / "orion.yaml"
    config.write_text("experiment:\n  algorithm:\n    random:\n      seed: 7\n  max_broken: 1\n")
    env = {**os.environ, "ORION_DB_TYPE": "pickleddb", "ORION_DB_ADDRESS": str(database)}
    for name_ in [n for n in env if n.startswith(("HPOPT_", "ORION_EXP", "ORION_TRIAL"))]:
        del env[name_]
    command = [
        str(ORION),
        "hunt",
        "-n",
        name,
        "-c",
        str(config),
        "--exp-max-trials",
        str(max_trials),
        "--working-dir",
        str(tmp_path / "work"),
        # The interpreter by full path: Orion looks `python` up on PATH (orion-facts.md).
        sys.executable,
        str(SCRIPT),
        str(HPARAMS),
        "--device",
        "cpu",
        "--hpopt",
        str(HPOPT_FILE),
        "--hpopt_mode",
        "orion",
        "--record_file",
        str(tmp_path / "computed.jsonl"),
        "--x~uniform(-1, 1, precision=6)",
        *script_args,
    ]
    finished = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    # Orion's exit status says little (0 even for a broken experiment): the tests read the trials.
    assert finished.returncode in (0, 1), finished.stdout + finished.stderr
    storage = {"type": "legacy", "database": {"type": "pickleddb", "host": str(database)}}
    return storage, finished


def computed_by_the_script(tmp_path: Path) -> dict[str, dict]:
    lines = (tmp_path / "computed.jsonl").read_text().splitlines()
    return {record["trial_id"]: record for record in map(json.loads, lines)}


def test_four_trials_report_what_the_script_computed(tmp_path):
    from orion.client import get_experiment

    storage, _ = hunt(tmp_path, "hpopt-quadratic", max_trials=4)
    experiment = get_experiment("hpopt-quadratic", storage=storage)
    trials = experiment.fetch_trials()
    computed = computed_by_the_script(tmp_path)

    assert [trial.status for trial in trials] == ["completed"] * 4
    assert len(computed) == 4
    for trial in trials:
        trial_id = f"hpopt-quadratic-{experiment.version}-{trial.id}"
        record = computed[trial_id]
        assert record["tag"] == f"trial-{trial_id}"  # the hpopt file saw the real trial id
        assert trial.objective.value == record["error"]
        assert record["error"] == pytest.approx((trial.params["/x"] - 0.3) ** 2 + 0.5)
        statistics = {result.name: result.value for result in trial.statistics}
        assert statistics == {"error": record["error"], "x": trial.params["/x"]}


def test_a_trial_that_reports_nothing_is_broken_not_zero(tmp_path):
    from orion.client import get_experiment

    storage, finished = hunt(tmp_path, "hpopt-silent", "--skip_report", "True", max_trials=1)
    trials = get_experiment("hpopt-silent", storage=storage).fetch_trials()

    assert [trial.status for trial in trials] == ["broken"]
    assert trials[0].objective is None
    assert len(computed_by_the_script(tmp_path)) == 1  # the script did run to its end
    assert "the hpopt block ended without hp.report_result" in finished.stderr

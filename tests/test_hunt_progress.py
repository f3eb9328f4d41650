"""Live hunt progress (reprohunt.hunt_progress) and the Orion warnings no user needs (orion_noise).

The progress test polls a real `orion hunt` whose trials take a second each, so the lines must
come while it runs (1/3, then 2/3, then 3/3), with a broken trial counted, the best objective
and its trial as Orion records them, and a remaining-time estimate once a trial has completed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from reprohunt import hunt_progress, orion_noise

ORION = Path(sys.executable).with_name("orion")
# A trial of one second; the second one started fails (a broken trial).
TRIAL_SCRIPT = """\
import json, os, sys, time
from pathlib import Path
count = Path(sys.argv[1])
number = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(number))
time.sleep(1.0)
if number == 2:
    sys.exit(1)
x = float(sys.argv[3])
Path(os.environ["ORION_RESULTS_PATH"]).write_text(
    json.dumps([{"name": "objective", "type": "objective", "value": (x - 0.3) ** 2}]))
"""
SUMMARY = re.compile(
    r"^\[progress\] hunt (?P<name>\S+): (?P<done>\d+)/3 trials completed, (?P<broken>\d+) broken, "
    r"(?P<best>no best yet|best (?P<value>\S+) \(trial (?P<trial>\w{8})\)), elapsed \d+:\d\d:\d\d, "
    r"(?P<left>.*)$"
)


@pytest.mark.slow
def test_progress_of_a_running_hunt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "trial.py"
    script.write_text(TRIAL_SCRIPT)
    database = tmp_path / "orion.pkl"
    storage = {"type": "legacy", "database": {"type": "pickleddb", "host": str(database)}}
    config = tmp_path / "orion.yaml"
    config.write_text(
        "experiment:\n  algorithm:\n    random:\n      seed: 5\n  max_broken: 3\n"
        "worker:\n  max_broken: 3\n"
    )
    env = {**os.environ, "ORION_DB_TYPE": "pickleddb", "ORION_DB_ADDRESS": str(database)}
    for name in [n for n in env if n.startswith(("HPOPT_", "ORION_EXP", "ORION_TRIAL"))]:
        del env[name]
    command = [str(ORION), "hunt", "-n", "progress", "-c", str(config), "--exp-max-trials", "3"]
    command += ["--working-dir", str(tmp_path / "work"), sys.executable, str(script)]
    command += [str(tmp_path / "count"), "--x~uniform(-1, 1)"]  # the trial gets -x VALUE
    with hunt_progress.watching("progress", storage, max_trials=3, every=0.2):
        finished = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    lines = capsys.readouterr().out.splitlines()

    from orion.client import get_experiment

    trials = get_experiment("progress", storage=storage).fetch_trials()
    completed = [t for t in trials if t.status == "completed"]
    assert len(completed) == 3 and [t.status for t in trials].count("broken") == 1
    for trial in trials:
        outcome = f"objective {trial.objective.value:.6g}" if trial.objective else "broken"
        assert any(line.startswith(f"trial {trial.id[:8]} {outcome} (x=") for line in lines), (
            trial.id,
            lines,
        )
    summaries = [match for line in lines if (match := SUMMARY.match(line))]
    assert [int(m["done"]) for m in summaries] == sorted(int(m["done"]) for m in summaries)
    assert {1, 2, 3} <= {int(m["done"]) for m in summaries}, lines
    assert any(int(m["broken"]) == 1 and int(m["done"]) < 3 for m in summaries), lines
    assert all(re.fullmatch(r"~\d+:\d\d:\d\d left", m["left"]) for m in summaries[1:-1]), lines
    last, best = summaries[-1], min(completed, key=lambda t: t.objective.value)
    assert (last["done"], last["broken"], last["left"]) == ("3", "1", "done")
    assert (float(last["value"]), last["trial"]) == (
        pytest.approx(best.objective.value, rel=1e-5),
        best.id[:8],
    )


@pytest.mark.slow
def test_the_workflow_hunt_log_has_each_trial_and_no_orion_noise(tiny_run: Path) -> None:
    config = yaml.safe_load((tiny_run / "config" / "config.yaml").read_text())
    results = tiny_run / "results" / config["experiment"]
    log = (results / "logs" / "hunt.log").read_text()
    trials = json.loads((results / "hunt" / "trials.json").read_text())
    for trial in trials:
        assert f"trial {trial['id'][:8]} objective {trial['objective']:.6g} (" in log, trial
    final = f"{len(trials)}/{config['hunt']['max_trials']} trials completed, 0 broken, best "
    assert re.search(rf"^\[progress\] hunt \S+: {final}", log, re.M), log
    assert "pkg_resources" not in log and "profet" not in log and "GPy" not in log, log


def test_orion_noise_filters_only_its_warnings_from_their_module() -> None:
    (category, message, module), *_ = orion_noise.NOISE
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        orion_noise.install()
        for origin in (module, "some.recipe"):
            warnings.warn_explicit(f"{message} (…)", category, "x.py", 1, module=origin)
        warnings.warn_explicit("another warning", category, "x.py", 1, module=module)
    assert [(str(w.message), w.category) for w in caught] == [
        (f"{message} (…)", category),
        ("another warning", category),
    ]


def test_orion_hunt_gets_the_same_filters_and_keeps_the_callers() -> None:
    combined = orion_noise.python_warnings("error::DeprecationWarning")
    assert combined.startswith("error::DeprecationWarning,")
    code = (
        "import warnings\n"
        "import orion.core.utils, orion.benchmark.task.profet.model_utils\n"
        "warnings.warn('kept', UserWarning)\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": orion_noise.python_warnings(None)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "pkg_resources" not in run.stderr and "profet" not in run.stderr, run.stderr
    assert "UserWarning: kept" in run.stderr

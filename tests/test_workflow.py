"""The real Snakemake workflow: config validation, failure reporting, end to end, kill + rerun."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from workflow_run import REPO, TINY, merge, snakemake, snakemake_command, write_config

from hpopt.files import sha256_file


def test_unknown_config_key_stops_before_any_job(tmp_path: Path) -> None:
    write_config(tmp_path, merge(TINY, {"hunt": {"max_trails": 3}}))
    run = snakemake(tmp_path, "-n")
    assert run.returncode != 0
    assert "max_trails" in run.stderr + run.stdout
    assert not (tmp_path / "results").exists()


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    write_config(tmp_path, merge(TINY, {"hunt": {"max_trials": "many"}}))
    run = snakemake(tmp_path, "-n")
    assert run.returncode != 0
    assert "max_trials" in run.stderr + run.stdout
    assert "'many' is not of type 'integer'" in run.stderr + run.stdout


def test_one_letter_space_key_is_refused(tmp_path: Path) -> None:
    # Orion would pass `--x~…` to the script as `-x VALUE`; refused before any job, saying why.
    write_config(tmp_path, merge(TINY, {"hunt": {"space": {"x": "uniform(0, 1)"}}}))
    run = snakemake(tmp_path, "-n")
    assert run.returncode != 0
    assert "hunt.space.x: Orion passes a one-letter name to the script as `-x VALUE`" in run.stdout
    assert not (tmp_path / "results").exists()


def test_invalid_prior_fails_before_any_trial(tmp_path: Path) -> None:
    write_config(tmp_path, merge(TINY, {"hunt": {"space": {"lr": "logunifrom(1e-3, 1e-2)"}}}))
    run = snakemake(tmp_path, "results/speaker_id/hunt/hunt.json")
    assert run.returncode != 0
    log = (tmp_path / "results/speaker_id/logs/hunt.log").read_text()
    assert "hunt.space.lr" in log and "logunifrom" in log
    assert not list((tmp_path / "results/speaker_id/hunt").glob("*/trials"))


def test_space_key_missing_from_train_yaml_stops_before_any_job(tmp_path: Path) -> None:
    space = {"emb_dim": "choices([16, 32])", "no_such_key": "uniform(0, 1)"}
    write_config(tmp_path, merge(TINY, {"hunt": {"space": space}}))
    run = snakemake(tmp_path, "-n")
    assert run.returncode != 0
    assert "hunt.space.no_such_key" in run.stdout and "top-level key" in run.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_crashing_recipe_fails_the_rule_and_names_the_trial_log(tmp_path: Path) -> None:
    recipe = {
        "dir": str(REPO / "tests/fixtures/crashing_recipe"),
        "prepare": str(REPO / "recipes/speaker_id/speaker_id_prepare.py"),
    }
    write_config(tmp_path, merge(TINY, {"recipe": recipe}))
    run = snakemake(tmp_path, "results/speaker_id/hunt/hunt.json")
    assert run.returncode != 0
    log = (tmp_path / "results/speaker_id/logs/hunt.log").read_text()
    match = re.search(r"First failing trial's log: (\S+)", log)
    assert match, log[-2000:]
    trial_log = Path(match.group(1))
    assert "this recipe always crashes" in trial_log.read_text()
    assert "2 trial(s) broke (max_broken is 2); 0 completed" in log
    assert not (tmp_path / "results/speaker_id/hunt/hunt.json").exists()


@pytest.mark.slow
def test_end_to_end_then_rerun_does_nothing(tiny_run: Path) -> None:
    results = tiny_run / "results/speaker_id"

    best = json.loads((results / "hunt/best.json").read_text())
    assert best["trials_completed"] >= 3
    assert set(best["params"]) == {"emb_dim", "lr"}
    assert yaml.safe_load((results / "hunt/best.yaml").read_text()) == best
    info = (results / "hunt/orion_info.txt").read_text()
    stats = info[info.index("Stats") :]
    assert f"id: {best['trial_id']}" in stats
    assert re.search(r"evaluation: (\S+)", stats).group(1) == repr(best["objective"])
    for name, value in best["params"].items():
        assert f"/{name}: {value}" in stats

    trials = json.loads((results / "hunt/trials.json").read_text())
    completed = [t for t in trials if t["status"] == "completed"]
    assert best["objective"] == min(t["objective"] for t in completed)
    assert "warm server" in (results / "logs/hunt.log").read_text()
    for trial_log in (results / "hunt").glob("*/trials/*/trial.log"):
        assert "running the trial cold" not in trial_log.read_text(), trial_log

    metrics = json.loads((results / "final/metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["test"]["error"] <= 1.0
    assert metrics["params"]["emb_dim"] == best["params"]["emb_dim"]
    assert list((results / "final/runs").glob("*/save/*.ckpt")), "retraining wrote no checkpoint"

    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["orion"]["experiment"] == best["experiment"]
    assert len(provenance["orion"]["trials"]) == len(trials)
    assert provenance["environments"]["train"]["pip_freeze"]
    assert "retrain" in provenance["rule_costs"]
    assert "reprohunt.retrain" in provenance["commands"]["retrain"]
    assert provenance["recipe"]["code"]["train.py"] == sha256_file(
        REPO / "recipes/speaker_id/train.py"
    )

    report = (results / "report.html").read_text()
    assert best["trial_id"] in report and "data:image/png;base64," in report
    for plot in ("regret.png", "params.png"):
        assert (results / "plots" / plot).read_bytes()[:4] == b"\x89PNG"

    again = snakemake(tiny_run)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def completed_count(hunt_log: Path) -> int:
    return len(re.findall(r": exit 0$", hunt_log.read_text(), re.M)) if hunt_log.exists() else 0


@pytest.mark.slow
def test_killed_hunt_resumes_without_losing_trials(tmp_path: Path) -> None:
    write_config(tmp_path, merge(TINY, {"hunt": {"max_trials": 4}}))
    results = tmp_path / "results/speaker_id"
    hunt_log = results / "logs/hunt.log"
    command = snakemake_command(tmp_path, "results/speaker_id/hunt/hunt.json")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 600
    while completed_count(hunt_log) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, "the workflow ended before it could be killed"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = completed_count(hunt_log)
    assert done_before >= 2

    # SIGKILL leaves Snakemake's own directory lock behind; the documented first step.
    assert snakemake(tmp_path, "--unlock").returncode == 0
    run = snakemake(tmp_path, "results/speaker_id/hunt/best.json")
    assert run.returncode == 0, run.stderr[-4000:]
    assert "recovery:" in (results / "logs/hunt.log").read_text()
    trials = json.loads((results / "hunt/trials.json").read_text())
    completed = [t for t in trials if t["status"] == "completed"]
    assert len(completed) >= 4
    assert len({t["id"] for t in trials}) == len(trials)
    # The trials completed before the kill were kept, not run again.
    finished_first = sorted(completed, key=lambda t: t["end_time"])[:done_before]
    assert all(t["end_time"] < completed[-1]["end_time"] for t in finished_first)


@pytest.mark.slow
def test_a_new_best_retrains_in_its_own_folder_and_the_old_run_stays(
    tiny_run: Path, tmp_path: Path
) -> None:
    """A changed search space (or a raised budget) picks another best: its retraining gets a
    folder of its own, so it never meets the old run's checkpoints (which it refused to resume
    from, for good, when both trained into final/), and the old run's result stays."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    results = workdir / "results/speaker_id"
    old_best = json.loads((results / "hunt/best.json").read_text())
    (old_run,) = (results / "final/runs").iterdir()
    old_result = (old_run / "metrics.json").read_bytes()
    other_emb_dim = 48 if old_best["params"]["emb_dim"] != 48 else 24
    space = {"emb_dim": f"choices([{other_emb_dim}])", "lr": TINY["hunt"]["space"]["lr"]}

    write_config(workdir, merge(TINY, {"hunt": {"space": space}}))
    run = snakemake(workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    best = json.loads((results / "hunt/best.json").read_text())
    assert best["params"]["emb_dim"] == other_emb_dim
    metrics = json.loads((results / "final/metrics.json").read_text())
    assert metrics["params"]["emb_dim"] == other_emb_dim
    new_run = workdir / metrics["run_folder"]  # relative to the working directory
    assert new_run.parent == old_run.parent and new_run != old_run
    assert list(new_run.glob("save/*.ckpt"))
    assert (old_run / "metrics.json").read_bytes() == old_result


def test_a_read_only_results_folder_is_refused_with_its_path(tmp_path: Path) -> None:
    write_config(tmp_path, TINY)
    results = tmp_path / "results/speaker_id"
    results.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(results)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        run = snakemake(tmp_path)
    finally:
        subprocess.run(["umount", str(results)], check=True)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "results folder results/speaker_id is not writable (Read-only file system)" in output
    assert "Traceback" not in output

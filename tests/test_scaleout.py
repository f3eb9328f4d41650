"""Scaling out (README "Scaling out"): parallel trials, several hunt processes on one experiment,
one GPU per trial, credentials kept out of every written file, and the SLURM profile.

Real `orion hunt`, real processes and file locks; the quadratic fixture recipe stands in for the
speaker-id recipe so that a trial takes milliseconds. GPUs are fake device ids on CPU machines.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from hunt_harness import (  # noqa: E402
    REPO,
    assert_parallel_hunts_joined,
    clean_env,
    make_hunt,
    result_files,
    write_workflow_config,
)
from workflow_run import SNAKEMAKE, snakemake  # noqa: E402

SECRET_USER, SECRET_PASSWORD = "hunter-user-7f3a", "pa:ss@word-91c2"


def assert_consistent(trials: list, hunt_dir: Path, max_trials: int, slots: int) -> None:
    """The promises of a parallel hunt (see docs/scaling-out.md): no duplicate, none lost, and
    between max_trials and max_trials + slots - 1 completed trials."""
    completed = [t for t in trials if t.status == "completed"]
    assert max_trials <= len(completed) <= max_trials + slots - 1, [t.status for t in trials]
    assert len({t.id for t in trials}) == len(trials)
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), "two trials with the same parameters"
    by_dir = {Path(t.working_dir).name: t.status for t in trials}
    written = {path.parent.name for path in result_files(hunt_dir)}
    assert written, "no trial wrote a result file"
    assert all(by_dir.get(name) == "completed" for name in written), (written, by_dir)
    assert not [t for t in trials if t.status == "reserved"], "a trial was left reserved"


@pytest.mark.slow
def test_two_workers_run_trials_at_once_each_on_its_own_gpu(tmp_path: Path) -> None:
    # Each trial waits (up to 5 s) to see another one running: with 2 workers it does.
    options = {"wait_for_peer_seconds": 5}
    hunt = make_hunt(tmp_path, options, n_workers=2, max_trials=6, gpus=[0, 1])
    run = hunt.run()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "trials lease GPUs 0,1" in run.stdout

    assert_consistent(hunt.trials(), hunt.hunt_dir, max_trials=6, slots=2)
    records = hunt.records()
    assert not (hunt.shared / "overlap").exists(), (hunt.shared / "overlap").read_text()
    print("device seen by each trial:", {r["trial_id"][-8:]: r["devices"] for r in records})
    assert all(len(r["devices"]) == 1 and r["devices"][0] in {"0", "1"} for r in records)
    assert any(r["saw_peer"] for r in records), "no two trials ever ran at the same time"
    assert {r["devices"][0] for r in records} == {"0", "1"}
    summary = json.loads((hunt.hunt_dir / "hunt.json").read_text())
    assert summary["trial_slots"] == 2 and summary["completed"] == len(records)


@pytest.mark.slow
def test_parallel_hunts_join_one_experiment_through_snakemake(tmp_path: Path) -> None:
    write_workflow_config(tmp_path, {"hunt": {"parallel_hunts": 2, "max_trials": 5}})
    run = snakemake(tmp_path, "results/speaker_id/hunt/best.json", timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    assert_parallel_hunts_joined(tmp_path / "results" / "speaker_id", workers=2, max_trials=5)


def test_gpus_visible_takes_the_jobs_devices() -> None:
    from reprohunt.preflight import HuntError, trial_gpus

    assert trial_gpus([0, 1], {"CUDA_VISIBLE_DEVICES": "5"}) == ["0", "1"]
    assert trial_gpus("visible", {"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    with pytest.raises(HuntError, match="gave this job no GPU"):
        trial_gpus("visible", {})


def secret_env() -> dict[str, str]:
    return clean_env() | {"ORION_DB_USER": SECRET_USER, "ORION_DB_PASSWORD": SECRET_PASSWORD}


def files_containing(root: Path, *secrets: str) -> list[Path]:
    needles = [secret.encode() for secret in secrets]
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]


@pytest.mark.slow
def test_credentials_never_reach_trials_or_results(tmp_path: Path) -> None:
    # Credentials exported for the hunt; every trial dumps its environment into its folder.
    hunt = make_hunt(tmp_path, max_trials=2)
    run = hunt.run(env=secret_env())
    assert run.returncode == 0, run.stderr[-3000:]
    environments = list(hunt.hunt_dir.glob("*/trials/*/environment.json"))
    assert len(environments) >= 2
    assert all("ORION_DB_ADDRESS" not in json.loads(p.read_text()) for p in environments)
    assert files_containing(tmp_path, SECRET_USER, SECRET_PASSWORD) == []
    assert SECRET_PASSWORD not in run.stdout + run.stderr


def test_mongodb_credentials_stay_out_of_spec_config_and_errors(tmp_path: Path) -> None:
    # No MongoDB server here: a closed port gives the check's error, which must be clear and
    # must not repeat the credentials; nothing of the experiment is written.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = {"type": "mongodb", "host": "127.0.0.1", "port": port, "name": "reprohunt"}
    hunt = make_hunt(tmp_path, storage=storage)
    run = hunt.run(env=secret_env())
    assert run.returncode == 2
    assert f"cannot use MongoDB database 'reprohunt' at 127.0.0.1:{port}" in run.stderr
    assert SECRET_PASSWORD not in run.stdout + run.stderr
    assert SECRET_USER not in run.stdout + run.stderr
    assert not (hunt.hunt_dir / "orion.yaml").exists()
    assert files_containing(tmp_path, SECRET_USER, SECRET_PASSWORD) == []


def test_mongodb_address_and_its_public_description(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprohunt.hunt import write_orion_config
    from reprohunt.orion_storage import public_description, storage_config, storage_env
    from reprohunt.records import HuntSpec

    monkeypatch.setenv("ORION_DB_USER", SECRET_USER)
    monkeypatch.setenv("ORION_DB_PASSWORD", SECRET_PASSWORD)
    spec = {"type": "mongodb", "host": "db.cluster", "port": 27018, "name": "hpo"}
    config = storage_config(spec, Path("."))
    env = storage_env(config)
    # The password reaches Orion (URL-quoted, since it holds ':' and '@') only through env vars.
    assert env["ORION_DB_ADDRESS"] == "mongodb://hunter-user-7f3a:pa%3Ass%40word-91c2@db.cluster"
    assert env["ORION_DB_PORT"] == "27018" and env["ORION_DB_NAME"] == "hpo"
    public = json.dumps(public_description(config))
    assert SECRET_USER not in public and "pa%3Ass" not in public and "db.cluster" in public
    # orion.yaml (the `-c` file) never holds the storage.
    hunt_spec = HuntSpec.load(make_hunt(tmp_path, storage=spec).spec)
    text = write_orion_config(hunt_spec, tmp_path, "mongo-experiment").read_text()
    assert "storage" not in text and "db.cluster" not in text and SECRET_USER not in text


def test_mongodb_host_with_credentials_is_refused_by_the_schema(tmp_path: Path) -> None:
    storage = {"type": "mongodb", "host": "user:pw@db.cluster", "port": 27017, "name": "hpo"}
    write_workflow_config(tmp_path, {"orion": {"storage": storage}})
    run = subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n"],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "orion.storage.host: 'user:pw@db.cluster' does not match" in out


def test_slurm_profile_plans_one_gpu_job_per_hunt_process(tmp_path: Path) -> None:
    config = write_workflow_config(tmp_path, {"hunt": {"parallel_hunts": 3, "gpus": "visible"}})
    # The command of README "Scaling out" (run from the repository root there).
    run = subprocess.run(
        [
            str(SNAKEMAKE),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--executor",
            "slurm",
            "--workflow-profile",
            str(REPO / "profiles" / "slurm"),
            "-n",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    out = run.stdout + run.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert jobs["hunt_worker"] == "3" and jobs["hunt"] == "1"
    # tuned and untuned at each of the config's final seeds
    assert jobs["retrain"] == str(2 * len(config["final"]["seeds"]))
    worker_jobs = re.findall(r"rule hunt_worker:.*?resources: ([^\n]*)", out, re.S)
    assert len(worker_jobs) == 3
    assert all("gpu=2" in r and "cpus_per_gpu=4" in r for r in worker_jobs), worker_jobs
    assert "--judge" in out
    assert not (tmp_path / "results").exists()

"""The real Snakemake workflow: config validation, failure reporting, end to end, kill + rerun."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_run import REPO, TINY, TRAIN_ENV, merge, snakemake, write_config

from hpopt.files import sha256_file
from reprohunt.orion_storage import storage_config, storage_env


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


# Issue 36's bad configs: each refused before any job, naming the file, the key and a fix.
BAD_CONFIGS = {
    "budget": ({"hunt": {"max_trials": -3}}, "hunt.max_trials", "fix: set it to 1 or more"),
    "seeds": ({"final": {"seeds": [1, 1]}}, "final.seeds", "fix: list each value once"),
    "trial_seed_in_final_seeds": (
        {"final": {"seeds": [1986, 1987]}},
        "final.seeds holds 1986, which is recipe.seed",
        "Fix: drop 1986 from final.seeds, or set final.allow_trial_seed: true",
    ),
    "n_workers": (
        {"hunt": {"n_workers": "all"}},
        "hunt.n_workers",
        "auto: the `optuna` algorithm's batch",
    ),
    "unclosed_prior": (
        {"hunt": {"space": {"lr": "loguniform(1e-4"}}},
        "hunt.space.lr",
        "fix: write it like loguniform(1e-4, 1e-2)",
    ),
    "recipe_data_option": (
        {"data": {"n_mels": 100000}},
        "data.n_mels",
        "fix: set it to 128 or less",
    ),
    "prior_orion_cannot_parse": (
        {"hunt": {"space": {"lr": "loguniform(1e-4,, 1e-2)"}}},
        "hunt.space.lr: invalid Orion prior",
        "fix: write each prior as Orion parses it",
    ),
    "misspelt_prior": (
        {"hunt": {"space": {"lr": "logunifrom(1e-3, 1e-2)"}}},
        "hunt.space.lr: invalid Orion prior",
        "fix: write each prior as Orion parses it",
    ),
}


@pytest.mark.parametrize(("override", "key", "fix"), BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_a_bad_config_is_refused_before_any_job_with_file_key_and_fix(
    tmp_path: Path, override: dict, key: str, fix: str
) -> None:
    space = {"space": {"emb_dim": "choices([16, 32])"} | override.get("hunt", {}).get("space", {})}
    write_config(tmp_path, merge(TINY, merge(override, {"hunt": space})))
    run = snakemake(tmp_path)  # a real run, not a dry one: nothing may start
    shown = run.stdout + run.stderr
    assert run.returncode != 0
    assert "config/config.yaml" in shown and key in shown and fix in shown, shown[-3000:]
    if key.startswith("data."):
        assert "recipes/speaker_id/prepare.schema.yaml" in shown
    assert not (tmp_path / "results").exists()


def test_n_workers_auto_is_the_optuna_batch_within_the_cores(tmp_path: Path) -> None:
    """auto: the batch, capped by --cores; 1 for an algorithm whose parallel trials would not
    replay. final.allow_trial_seed lets final.seeds hold recipe.seed."""
    ((name, options),) = TINY["hunt"]["algorithm"].items()
    batch_of_4 = {"hunt": {"algorithm": {name: options | {"batch": 4}}}}
    cases = {
        "cores-2": (batch_of_4, ["--cores", "2"], 2),
        "cores-1": (batch_of_4, ["--cores", "1"], 1),
        "random": (
            {
                "hunt": {"algorithm": {"random": {"seed": 1}}},
                "final": {"seeds": [1986, 1987], "allow_trial_seed": True},
            },
            [],
            1,
        ),
    }
    spec = "results/speaker_id/hunt/spec.json"
    for label, (override, cores, workers) in cases.items():
        write_config(tmp_path / label, merge(TINY, override))
        run = snakemake(tmp_path / label, spec, *cores)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert json.loads((tmp_path / label / spec).read_text())["n_workers"] == workers, label


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
    # The step prints Orion's own format in-process: the file is what `orion info` prints.
    database = storage_env(storage_config({"type": "pickleddb"}, results / "hunt"))
    cli = [
        str(TRAIN_ENV / "bin/orion"),
        "info",
        "-n",
        best["experiment"],
        "-v",
        str(best["version"]),
    ]
    printed = subprocess.run(cli, capture_output=True, text=True, env=os.environ | database)
    assert printed.returncode == 0, printed.stderr
    assert info == printed.stdout

    trials = json.loads((results / "hunt/trials.json").read_text())
    completed = [t for t in trials if t["status"] == "completed"]
    assert best["objective"] == min(t["objective"] for t in completed)
    assert "warm server" in (results / "logs/hunt.log").read_text()
    for trial_log in (results / "hunt").glob("*/trials/*/trial.log"):
        assert "running the trial cold" not in trial_log.read_text(), trial_log

    # The final stage: each seed's tuned (best params) and untuned (train.yaml) run, in a run
    # folder of its own; the delivered model is the tuned run at the first seed.
    runs = {
        (arm, seed): json.loads((results / f"final/{arm}/seed{seed}/metrics.json").read_text())
        for arm in ("tuned", "untuned")
        for seed in FINAL_SEEDS
    }
    for (arm, seed), metrics in runs.items():
        assert 0.0 <= metrics["metrics"]["test"]["error"] <= 1.0
        assert metrics["seed"] == seed
        expected_emb_dim = best["params"]["emb_dim"] if arm == "tuned" else TRAIN_YAML_EMB_DIM
        assert metrics["params"]["emb_dim"] == expected_emb_dim
        assert list((tiny_run / metrics["run_folder"]).glob("save/*.ckpt")), (arm, seed)
    assert len({metrics["run_folder"] for metrics in runs.values()}) == len(runs)
    delivered = json.loads((results / "final/metrics.json").read_text())
    assert delivered == runs["tuned", FINAL_SEEDS[0]]

    comparison = json.loads((results / "final/comparison.json").read_text())
    assert comparison["seeds"] == FINAL_SEEDS and comparison["metric"] == "error"
    assert_comparison_by_hand(comparison, runs)

    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["orion"]["experiment"] == best["experiment"]
    assert len(provenance["orion"]["trials"]) == len(trials)
    assert provenance["environments"]["train"]["pip_freeze"]
    assert {f"retrain_{arm}_seed{seed}" for arm, seed in runs} <= set(provenance["rule_costs"])
    assert "--seed 1987 --best" in provenance["commands"]["retrain"]["tuned/seed1987"]
    assert "--best" not in provenance["commands"]["retrain"]["untuned/seed1987"]
    assert provenance["final"]["comparison"] == comparison
    last = FINAL_SEEDS[-1]
    assert provenance["final"]["runs"]["untuned"][str(last)] == runs["untuned", last]
    assert provenance["seeds"]["final"] == FINAL_SEEDS
    assert provenance["recipe"]["code"]["train.py"] == sha256_file(
        REPO / "recipes/speaker_id/train.py"
    )

    report = (results / "report.html").read_text()
    assert best["trial_id"] in report and "data:image/png;base64," in report
    assert html.escape(comparison["verdict_text"]) in report
    for plot in ("regret.png", "params.png", "comparison.png"):
        assert (results / "plots" / plot).read_bytes()[:4] == b"\x89PNG"

    again = snakemake(tiny_run)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


# TINY's final.seeds and train.yaml's own emb_dim and lr.
FINAL_SEEDS = TINY["final"]["seeds"]
TRAIN_YAML_EMB_DIM, TRAIN_YAML_LR = 128, 0.003
# Student-t 0.975 quantile for 1 degree of freedom (the Cauchy's), tan(pi (p - 1/2)) at p = 0.975.
T_975_DF1 = math.tan(math.pi * 0.475)


def assert_comparison_by_hand(comparison: dict, runs: dict) -> None:
    """comparison.json's statistics, recomputed with plain arithmetic from the per-seed files."""
    n = len(FINAL_SEEDS)
    assert n == 2  # T_975_DF1 is for 2 seeds
    for split in ("test", "valid"):
        arms = {
            arm: [runs[arm, seed]["metrics"][split]["error"] for seed in FINAL_SEEDS]
            for arm in ("tuned", "untuned")
        }
        recorded = comparison["splits"][split]
        for arm, values in arms.items():
            mean = sum(values) / n
            assert recorded[arm]["values"] == values
            assert recorded[arm]["mean"] == pytest.approx(mean, abs=1e-12)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
            assert recorded[arm]["std"] == pytest.approx(std, abs=1e-12)
        differences = [a - b for a, b in zip(arms["tuned"], arms["untuned"], strict=True)]
        mean = sum(differences) / n
        spread = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
        half = T_975_DF1 * spread / math.sqrt(n)
        assert recorded["difference"]["values"] == differences
        assert recorded["difference"]["mean"] == pytest.approx(mean, abs=1e-12)
        assert recorded["difference"]["ci"] == pytest.approx([mean - half, mean + half], abs=1e-9)
        untuned_mean = sum(arms["untuned"]) / n
        if untuned_mean:
            assert recorded["ratio"] == pytest.approx(sum(arms["tuned"]) / n / untuned_mean)
        if split == "test":
            low, high = mean - half, mean + half
            expected = "helped" if high < 0 else "hurt" if low > 0 else "did not help"
            assert comparison["verdict"] == expected
            assert comparison["verdict_text"].startswith(f"tuning {expected}: test error ")


@pytest.mark.slow
def test_a_search_of_train_yaml_alone_did_not_help_and_retrains_only_the_tuned_arm(
    tiny_run: Path, tmp_path: Path
) -> None:
    """A search space of one point, train.yaml's own values: the verdict must be "did not help"
    (tuned and untuned train identically at every seed), so the verdict can fail. The new best
    retrains in folders of its own (never meeting the old runs' checkpoints, which it refused to
    resume from, for good, when both trained into final/), the old runs stay, and the untuned
    runs, which do not depend on the hunt, are not rerun."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    results = workdir / "results/speaker_id"
    old_best = json.loads((results / "hunt/best.json").read_text())
    assert old_best["params"]["emb_dim"] != TRAIN_YAML_EMB_DIM
    old_runs = {
        path: (path / "metrics.json").read_bytes() for path in (results / "final/runs").iterdir()
    }
    untuned = {seed: results / f"final/untuned/seed{seed}/metrics.json" for seed in FINAL_SEEDS}
    untuned_before = {
        seed: (path.read_bytes(), path.stat().st_mtime_ns) for seed, path in untuned.items()
    }
    space = {
        "emb_dim": f"choices([{TRAIN_YAML_EMB_DIM}])",
        "lr": f"choices([{TRAIN_YAML_LR}])",
    }

    write_config(workdir, merge(TINY, {"hunt": {"space": space, "max_trials": 1}}))
    run = snakemake(workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    best = json.loads((results / "hunt/best.json").read_text())
    assert best["params"] == {"emb_dim": TRAIN_YAML_EMB_DIM, "lr": TRAIN_YAML_LR}
    # Only the tuned arm retrains (one job per seed); the untuned files stay as they were.
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout + run.stderr, re.M))
    assert jobs["retrain"] == str(len(FINAL_SEEDS)), jobs
    assert {
        seed: (path.read_bytes(), path.stat().st_mtime_ns) for seed, path in untuned.items()
    } == untuned_before

    comparison = json.loads((results / "final/comparison.json").read_text())
    assert comparison["verdict"] == "did not help"
    for split in ("test", "valid"):
        arms = comparison["splits"][split]
        assert arms["tuned"]["values"] == arms["untuned"]["values"]
        assert arms["difference"]["values"] == [0.0] * len(FINAL_SEEDS)
        assert arms["difference"]["ci"] == [0.0, 0.0]
    # The run ends by printing the verdict.
    assert comparison["verdict_text"].startswith("tuning did not help: test error")
    assert comparison["verdict_text"] in run.stdout + run.stderr

    metrics = json.loads((results / "final/metrics.json").read_text())
    assert metrics["params"]["emb_dim"] == TRAIN_YAML_EMB_DIM
    new_run = workdir / metrics["run_folder"]  # relative to the working directory
    assert new_run.parent == results / "final/runs" and new_run not in old_runs
    assert list(new_run.glob("save/*.ckpt"))
    assert {path: (path / "metrics.json").read_bytes() for path in old_runs} == old_runs


@pytest.mark.slow
def test_the_first_trial_is_train_yaml_as_shipped_and_is_inserted_once(
    tiny_run: Path, tmp_path: Path
) -> None:
    """hunt.start_with_train_yaml (the default): the experiment's first trial is train.yaml's
    own values when the space holds them, run by the hunt's own worker and counted in its
    budget; a raised budget continues the experiment without a second copy of it."""
    results = tmp_path / "results/speaker_id"
    space = {"emb_dim": f"choices([16, {TRAIN_YAML_EMB_DIM}])", "lr": "loguniform(1e-3, 1e-2)"}
    shipped = {"emb_dim": TRAIN_YAML_EMB_DIM, "lr": TRAIN_YAML_LR}
    for max_trials in (3, 4):
        write_config(tmp_path, merge(TINY, {"hunt": {"space": space, "max_trials": max_trials}}))
        run = snakemake(tmp_path, "results/speaker_id/hunt/best.json")
        assert run.returncode == 0, run.stderr[-4000:]
        trials = json.loads((results / "hunt/trials.json").read_text())
        assert [t["status"] for t in trials] == ["completed"] * max_trials
        first = min(trials, key=lambda t: t["submit_time"])
        assert first["params"] == shipped
        assert [t["params"] for t in trials].count(shipped) == 1
    log = (results / "logs/hunt.log").read_text()
    assert "first trial:" not in log  # the second run found the experiment started

    # TINY's space cannot hold train.yaml's emb_dim: the shared run's hunt ran without it and
    # said why.
    log = (tiny_run / "results/speaker_id/logs/hunt.log").read_text()
    assert f"train.yaml's emb_dim {TRAIN_YAML_EMB_DIM} lies outside hunt.space.emb_dim" in log


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

"""SpeechBrain recipes as they are: a recipe written in SpeechBrain's idiom (recipes/speaker_id_sb,
real SpeechBrain 1.1.2 in the SpeechBrain env) through the workflow by config file alone, its
audit and the refusals.

The recipe's files are never edited: the workflow calls its prepare function, passes its own
keys (`skip_prep`, the manifests, the noise folder) and reads what it reports through
SpeechBrain's train logger and hpopt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_run import REPO
from workflow_run import run_with_configfile as run_workflow
from workflow_run import write_yaml as write

from reprohunt.recipe import RecipeContractError, code_hashes, describe
from reprohunt.result import ResultError
from reprohunt.speechbrain_result import LoggedStats, Records, result_document

RECIPE = REPO / "recipes" / "speaker_id_sb"
SPEECHBRAIN_ENV = REPO / ".venv" / "speechbrain"
WORKFLOW_PYTHON = REPO / ".venv" / "workflow" / "bin" / "python"
N_SPEAKERS = 4
SPACE = {"lr_start": "loguniform(1e-3, 1e-2)", "emb_dim": "choices([16, 32])"}


def config(recipe_dir: Path = RECIPE, **section: object) -> dict:
    """What a SpeechBrain user writes: the recipe, its prepare function, a tiny budget."""
    return {
        "experiment": "sb",
        "train_env": str(SPEECHBRAIN_ENV),
        "recipe": {
            "dir": str(recipe_dir),
            "prepare": "speaker_id_sb_prepare.py",
            "speechbrain": {"prepare_function": "prepare_speaker_id"} | section,
            "args": {
                "n_classes": N_SPEAKERS,
                "number_of_epochs": 2,
                "tdnn_channels": 16,
                "tdnn_channels_out": 32,
                "batch_size": 8,
            },
        },
        "data": {
            "source": "synthetic",
            "split_ratio": [50, 25, 25],
            "synthetic": {"seed": 7, "n_speakers": N_SPEAKERS, "utts_per_speaker": 8},
            "noise": {"files": 2, "seconds": 1.0},
        },
        "hunt": {
            "algorithm": {"random": {"seed": 3}},
            "max_trials": 3,
            "max_broken": 1,
            "n_workers": 1,
            "space": SPACE,
        },
        "final": {"seeds": [101, 102]},
    }


def audit(workdir: Path, hunt: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "reprohunt.audit", "--results", "results/sb"]
    command += ["--workflow-python", str(WORKFLOW_PYTHON)]
    environment = os.environ | {"AUDIT_HUNT": "1" if hunt else "0"}
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=environment)


def test_a_speechbrain_recipe_runs_by_config_alone_replays_and_its_audit_compares(
    tmp_path: Path,
) -> None:
    """Hunt, retrains, comparison and report; the recipe folder and the working directory
    untouched; the result at full precision; then `AUDIT_HUNT=1 make audit`, which reruns the
    hunt from nothing and the first seed's retrains and requires the same bits, and a tampered
    result that fails it."""
    before = code_hashes(RECIPE)
    config_file = write(tmp_path / "sb.yaml", config())
    run = run_workflow(tmp_path, config_file)
    assert run.returncode == 0, run.stderr[-4000:]
    assert code_hashes(RECIPE) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == [".snakemake", "results", "sb.yaml"]
    results = tmp_path / "results/sb"

    # The data: the recipe's own function wrote the manifests, once, beside corpus and noise.
    prepared = json.loads((results / "data/prepared.json").read_text())
    assert prepared["prepare"]["function"] == "prepare_speaker_id"
    assert sum(prepared["counts"].values()) == N_SPEAKERS * 8
    hashes = json.loads((results / "data/hashes.json").read_text())
    assert len(hashes["audio"]) == N_SPEAKERS * 8
    assert "noise/data.zip" in hashes["noise"]

    # Each trial reported its last validation error to Orion, at full precision, and the
    # retrains ran the test stage; the result names the epoch whose checkpoint was tested.
    trials = json.loads((results / "hunt/trials.json").read_text())
    assert len(trials) == 3 and all(t["status"] == "completed" for t in trials)
    assert all(t["objective"] == t["statistics"]["error"] for t in trials)
    assert all(t["statistics"]["loss"] != round(t["statistics"]["loss"], 3) for t in trials)
    metrics = json.loads((results / "final/metrics.json").read_text())
    assert metrics["objective"] == {"split": "valid", "metric": "error"}
    assert set(metrics["metrics"]) == {"valid", "test"}
    assert metrics["selected_by"] == "the epoch the test stage loaded"
    loss = metrics["metrics"]["test"]["loss"]
    assert loss != round(loss, 3)  # not the train log's three digits
    run_folders = list((results / "final/runs").iterdir())
    assert all((folder / "train_log.txt").is_file() for folder in run_folders)
    assert (results / "report.html").is_file()

    checked = audit(tmp_path, hunt=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr[-3000:]
    assert "running in the result's train env" in checked.stdout
    assert "PASS  hunt re-run gives the same trials and best" in checked.stdout
    assert "PASS  retraining reproduces the final runs" in checked.stdout

    tampered_path = results / "final/untuned/seed101/metrics.json"
    tampered = json.loads(tampered_path.read_text())
    tampered["metrics"]["test"]["loss"] += 1e-9
    tampered_path.write_text(json.dumps(tampered))
    checked = audit(tmp_path)
    assert checked.returncode == 1
    assert "test.loss: recorded" in checked.stdout


# -- refusals, before any job -------------------------------------------------------------


def copy_recipe(tmp_path: Path) -> Path:
    copy = tmp_path / "recipe"
    shutil.copytree(RECIPE, copy)
    return copy


def contract(tmp_path: Path, **section: object) -> dict:
    """The recipe section with the schema's defaults filled in, as describe() gets it."""
    defaults = {"script": "train.py", "train_yaml": "train.yaml", "hpopt_yaml": "hpopt.yaml"}
    defaults |= {"result": "metrics.json", "device": "cpu", "seed": 1}
    return config(copy_recipe(tmp_path), **section)["recipe"] | defaults


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"prepare_function": "prepare_mini_librispeech"},
            "recipe.speechbrain.prepare_function: .* defines no function 'prepare_mini_libri",
        ),
        (
            {"manifests": {"train_json": "save_json_train"}},
            "recipe.speechbrain.manifests.train_json: 'train_json' is not a top-level key",
        ),
        (
            {"noise_folder": "noise_dir"},
            "recipe.speechbrain.noise_folder: 'noise_dir' is not a top-level key",
        ),
    ],
)
def test_a_speechbrain_section_that_does_not_fit_the_recipe_is_refused_naming_the_key(
    tmp_path: Path, section: dict, message: str
) -> None:
    with pytest.raises(RecipeContractError, match=message):
        describe(contract(tmp_path, **section), {"source": "synthetic"}, "sb.yaml")


def test_the_workflow_stops_before_any_job_when_the_prepare_function_is_missing(
    tmp_path: Path,
) -> None:
    document = config(copy_recipe(tmp_path), prepare_function="prepare_librispeech")
    run = run_workflow(tmp_path, write(tmp_path / "sb.yaml", document))
    assert run.returncode != 0
    assert "defines no function 'prepare_librispeech'" in run.stderr
    assert not (tmp_path / "results").exists()


def test_a_speechbrain_recipe_on_another_data_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecipeContractError, match="data.source is 'minilibrispeech'"):
        describe(contract(tmp_path), {"source": "minilibrispeech"}, "sb.yaml")


# -- the result, from what the recipe reported ----------------------------------------------


def logged(epoch: int, error: float) -> LoggedStats:
    return LoggedStats({"Epoch": epoch}, {"train": {"loss": 1.0}, "valid": {"error": error}})


def test_the_objective_is_taken_at_the_epoch_whose_checkpoint_the_test_stage_loaded() -> None:
    test = LoggedStats({"Epoch loaded": 2}, {"test": {"error": 0.25, "loss": 0.5}})
    records = Records([logged(1, 0.5), logged(2, 0.125), logged(3, 0.375), test], "error")
    document = result_document(records)
    assert document["metrics"] == {"valid": {"error": 0.125}, "test": {"error": 0.25, "loss": 0.5}}
    assert document["selected_epoch"] == 2


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (Records([logged(1, 0.5)], "error"), "no test statistics"),
        (
            Records([logged(1, 0.5), LoggedStats({}, {"test": {"error": 0.1}})], "loss"),
            "no finite 'loss'",
        ),
        (Records([logged(1, 0.5)], None), "objective_key"),
    ],
)
def test_a_recipe_that_did_not_report_what_the_contract_needs_is_named(
    records: Records, message: str
) -> None:
    with pytest.raises(ResultError, match=message):
        result_document(records)


# -- the portable profile's math, for SpeechBrain's own ops ---------------------------------


def test_portable_math_gives_the_correctly_rounded_float32_values_and_ieee_special_cases() -> None:
    """sqrt, log10, sin and cos under the mode equal the float64 result rounded once to float32
    (what no vendor's vector math promises) on a sample, and keep IEEE's special values."""
    import torch

    from reprohunt.portable_ops import PortableMath

    generator = torch.Generator().manual_seed(0)
    positive = torch.rand(100_000, generator=generator) * 1000
    angles = (torch.rand(100_000, generator=generator) - 0.5) * 200
    special = torch.tensor([0.0, -1.0, float("inf"), float("-inf"), float("nan")])
    with PortableMath():
        got = {
            "sqrt": torch.sqrt(positive),
            "log10": torch.log10(positive),
            "sin": torch.sin(angles),
            "cos": angles.clone().cos_(),  # the in-place form too
            "special_sqrt": torch.sqrt(special),
            "special_log10": torch.log10(special),
        }
    assert torch.equal(got["sqrt"], positive.double().sqrt().float())
    assert torch.equal(got["log10"], positive.double().log10().float())
    assert torch.equal(got["sin"], angles.double().sin().float())
    assert torch.equal(got["cos"], angles.double().cos().float())
    nan = float("nan")
    expected_sqrt = torch.tensor([0.0, nan, float("inf"), nan, nan])
    expected_log10 = torch.tensor([float("-inf"), nan, float("inf"), nan, nan])
    assert torch.equal(got["special_sqrt"].nan_to_num(7.0), expected_sqrt.nan_to_num(7.0))
    assert torch.equal(got["special_log10"].nan_to_num(7.0), expected_log10.nan_to_num(7.0))

"""The recipe contract: a second recipe, outside the repo, by config file alone.

The config files of these tests live outside the repository and are given with `--configfile`
only (no other Snakemake flag): they replace config/config.yaml, so none of its search space
leaks into theirs. The recipe is the MLP one (recipes/speaker_mlp), whose hyperparameters and
objective (`error_rate`) differ from the speaker-id recipe's, on the tiny embedded corpus.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_run import REPO, TRAIN_ENV
from workflow_run import run_with_configfile as run_workflow
from workflow_run import write_yaml as write

from reprohunt.recipe import RecipeContractError, check_space, code_hashes, describe
from reprohunt.result import ResultError, load

MLP = REPO / "recipes" / "speaker_mlp"
WORKFLOW_PYTHON = REPO / ".venv" / "workflow" / "bin" / "python"
TINY_DATA = {
    "source": "synthetic",
    "n_mels": 40,
    "synthetic": {"seed": 7, "n_speakers": 4, "utts_per_speaker": 8},
}
MLP_SPACE = {"hidden_units": "choices([8, 32])", "learning_rate": "loguniform(1e-3, 3e-2)"}


def user_config(recipe_dir: Path, **extra: object) -> dict:
    """A complete config a user would write for the MLP recipe (schema defaults for the rest)."""
    return {
        "experiment": "mlp",
        "train_env": str(TRAIN_ENV),
        "recipe": {"dir": str(recipe_dir), "prepare": "speaker_mlp_prepare.py"},
        "data": TINY_DATA,
        "hunt": {
            "algorithm": {"random": {"seed": 3}},
            "max_trials": 3,
            "max_broken": 1,
            "n_workers": 1,
            "space": MLP_SPACE,
        },
        # the fewest final seeds the schema allows: 4 retrains per run, not 6
        "final": {"seeds": [1987, 1988]},
    } | extra


def audit(workdir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "reprohunt.audit", "--results", "results/mlp"]
    command += ["--workflow-python", str(WORKFLOW_PYTHON)]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True)


# -- the contract, checked before any job -------------------------------------------------


def contract(tmp_path: Path, **changes: object) -> dict:
    """The MLP recipe's config section, pointing at a copy of the recipe in `tmp_path`."""
    copy = tmp_path / "recipe"
    if not copy.exists():
        shutil.copytree(MLP, copy)  # symlinks followed: a self-contained folder
    return {
        "dir": str(copy),
        "script": "train.py",
        "train_yaml": "train.yaml",
        "hpopt_yaml": "hpopt.yaml",
        "prepare": "speaker_mlp_prepare.py",
        "result": "metrics.json",
        "args": {},
        "device": "cpu",
        "seed": 1,
    } | changes


def test_a_data_option_that_the_recipe_reads_reaches_every_run(tmp_path: Path) -> None:
    recipe = describe(contract(tmp_path), {"n_mels": 64, "source": "synthetic"}, "my.yaml")
    assert recipe["args"] == {"n_mels": 64}  # `source` is no key of train.yaml: prepare only


@pytest.mark.parametrize(
    ("changes", "data", "message"),
    [
        ({"script": "missing.py"}, {}, "my.yaml: recipe.script: "),
        ({"args": {"no_such_key": 1}}, {}, "recipe.args: no_such_key not top-level key"),
        ({"args": {"n_mels": 40}}, {"n_mels": 64}, "data.n_mels is 64 but recipe.args.n_mels"),
    ],
)
def test_a_config_that_breaks_the_contract_is_refused_naming_the_file(
    tmp_path: Path, changes: dict, data: dict, message: str
) -> None:
    with pytest.raises(RecipeContractError, match=message.replace(".", r"\.")):
        describe(contract(tmp_path, **changes), data, "my.yaml")


def test_a_recipe_yaml_without_the_keys_the_workflow_passes_is_refused(tmp_path: Path) -> None:
    config = contract(tmp_path)
    train_yaml = Path(config["dir"]) / "train.yaml"
    train_yaml.write_text(train_yaml.read_text().replace("data_folder: null", ""))
    with pytest.raises(RecipeContractError, match="lacks the top-level key.*data_folder"):
        describe(config, {}, "my.yaml")


def test_searching_a_fixed_or_unknown_key_is_refused(tmp_path: Path) -> None:
    recipe = describe(contract(tmp_path), {"n_mels": 40}, "my.yaml")
    with pytest.raises(RecipeContractError, match="hunt.space.n_mels.*also fixed"):
        check_space({"n_mels": "choices([40, 64])"}, recipe, "my.yaml")
    with pytest.raises(RecipeContractError, match="hunt.space.emb_dim: 'emb_dim' is not a top"):
        check_space({"emb_dim": "choices([8])"}, recipe, "my.yaml")


def test_the_code_hash_follows_every_recipe_file(tmp_path: Path) -> None:
    config = contract(tmp_path)
    before = describe(config, {}, "my.yaml")["code_sha256"]
    hpopt_yaml = Path(config["dir"]) / "hpopt.yaml"
    hpopt_yaml.write_text(hpopt_yaml.read_text().replace("steps: 100", "steps: 50"))
    assert describe(config, {}, "my.yaml")["code_sha256"] != before
    # The shared data package of the MLP recipe is a symlink; its files are hashed too.
    assert "speaker_data/prepared.py" in code_hashes(MLP)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"valid": {"error": 0.1}, "test": {"error": 0.2}}, "result_format: expected 1"),
        (
            {"result_format": 1, "objective": {"split": "valid", "metric": "error"},
             "metrics": {"valid": {"error": 0.1}}},
            "metrics.test: missing",
        ),
        (
            {"result_format": 1, "objective": {"split": "valid", "metric": "wer"},
             "metrics": {"valid": {"error": 0.1}, "test": {"error": 0.2}}},
            "objective: metrics.valid.wer is missing",
        ),
        (
            {"result_format": 1, "objective": {"split": "valid", "metric": "error"},
             "metrics": {"valid": {"error": "low"}, "test": {"error": 0.2}}},
            "metrics.valid.error: 'low' is not a finite number",
        ),
    ],
)  # fmt: skip
def test_a_result_of_another_shape_is_refused_naming_file_and_key(
    tmp_path: Path, document: dict, message: str
) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ResultError, match=str(path)) as error:
        load(path)
    assert message in str(error.value)


# -- through the workflow ---------------------------------------------------------------------


def user_recipe(folder: Path) -> Path:
    """A copy of the MLP recipe outside the repo whose shared parts stay symlinks (absolute,
    into the repo's speaker_id recipe), as a user's recipe that reuses another's code would."""
    shutil.copytree(MLP, folder, symlinks=True)
    for path in folder.iterdir():
        if path.is_symlink():
            target = (MLP / path.readlink()).resolve()
            path.unlink()
            path.symlink_to(target)
    return folder


@pytest.mark.slow
def test_second_recipe_outside_the_repo_runs_by_config_alone_edit_reruns_and_audit_compares(
    tmp_path: Path,
) -> None:
    """One workflow run covers: another recipe, outside the repo, whose data package is a
    symlink; a config file outside the repo; a data option that both the preparation and the
    recipe read (n_mels 64, not train.yaml's 40); then the audit, tampering and an edit."""
    recipe = user_recipe(tmp_path / "my_recipe")
    config = write(tmp_path / "my.yaml", user_config(recipe, data=TINY_DATA | {"n_mels": 64}))
    results = tmp_path / "results/mlp"

    run = run_workflow(tmp_path, config)
    assert run.returncode == 0, run.stderr[-4000:]
    spec = json.loads((results / "hunt/spec.json").read_text())
    assert spec["space"] == MLP_SPACE  # replaced, not merged with config/config.yaml's
    assert spec["config_file"] == str(config)
    assert json.loads((results / "data/prepared.json").read_text())["n_mels"] == 64
    result = load(results / "final/metrics.json")
    assert result.objective == ("valid", "error_rate")
    assert set(result.metrics["test"]) == {"error_rate", "nll"}
    assert "error_rate" in (results / "report.html").read_text()
    first = json.loads((results / "hunt/hunt.json").read_text())["name"]
    provenance = json.loads((results / "provenance.json").read_text())
    hashes = code_hashes(recipe)
    assert provenance["recipe"]["code"]["train.py"] == hashes["train.py"]
    assert "speaker_data/prepared.py" in hashes  # through the symlink
    # What every trial (the hunt's spec) and every final run (final/recipe.json) is given.
    final_recipe = json.loads((results / "final/recipe.json").read_text())
    assert spec["recipe"]["args"] == final_recipe["args"] == {"n_mels": 64}
    assert audit(tmp_path).returncode == 0

    # A tampered objective in this differently shaped result fails the audit, naming it, and
    # the audit leaves the record as it was.
    metrics_path = results / "final/metrics.json"
    original = metrics_path.read_text()
    tampered = json.loads(original)
    tampered["metrics"]["test"]["error_rate"] = 0.99
    metrics_path.write_text(json.dumps(tampered))
    record = (results / "provenance.json").read_bytes(), (results / "report.html").read_bytes()
    checked = audit(tmp_path)
    assert checked.returncode == 1, checked.stdout
    assert "test.error_rate: recorded 0.99" in checked.stdout
    assert record == (
        (results / "provenance.json").read_bytes(),
        (results / "report.html").read_bytes(),
    )
    metrics_path.write_text(original)

    # Editing the recipe's code reruns the hunt as a new experiment, in its own trial folders;
    # a result file without the contract's shape then stops the retraining, naming the file.
    script = recipe / "train.py"
    script.write_text(
        script.read_text().replace(
            'write_json_atomically(output / "metrics.json", result, indent=2)',
            'write_json_atomically(output / "metrics.json", metrics, indent=2)',
        )
    )
    # --keep-going: the untuned runs need no hunt, so one of them may fail before the hunt ends.
    run = run_workflow(tmp_path, config, "--keep-going")
    assert run.returncode != 0
    second = json.loads((results / "hunt/hunt.json").read_text())["name"]
    assert second != first
    assert (results / "hunt" / first / "trials").is_dir()
    assert (results / "hunt" / second / "trials").is_dir()
    # Both arms run the same script: whichever retrain job ran first names the file.
    logs = [path.read_text() for path in (results / "logs").glob("retrain_*_seed*.log")]
    assert any(
        "does not follow the result contract" in log
        and "result_format" in log
        and "metrics.json" in log
        for log in logs
    )

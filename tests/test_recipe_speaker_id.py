"""The speaker-id recipe on the tiny prepared corpus: real training runs, real checkpoints.

Runs that must be separate processes (determinism, Orion's result file, kill + resume) are
subprocesses; input checks call the recipe's ``main`` in-process, which is the same code path
without paying torch's import again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reprohunt.result import load as load_result

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/speaker_id"
# Small model and budget so that a run takes a few seconds; tests override single keys.
SMALL = {
    "tdnn_channels": 16,
    "emb_dim": 16,
    "batch_size": 8,
    "number_of_epochs": 2,
    "num_threads": 1,
    "device": "cpu",
}


def _command(prepared: Path, out: Path | None, **changes: object) -> list[str]:
    """The recipe's command line; ``out=None`` leaves --output_folder to the YAML files."""
    settings = {"data_folder": prepared, "output_folder": out, **SMALL, **changes}
    flags = [
        x for key, value in settings.items() if value is not None for x in (f"--{key}", str(value))
    ]
    return [sys.executable, str(RECIPE / "train.py"), str(RECIPE / "train.yaml"), *flags]


def _train(
    prepared: Path,
    out: Path | None,
    env: dict | None = None,
    cwd: Path | None = None,
    **changes: object,
):
    return subprocess.run(
        _command(prepared, out, **changes),
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reference_run(prepared_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One default (small) training run, shared by the tests that compare against it."""
    out = tmp_path_factory.mktemp("reference") / "out"
    run = _train(prepared_tiny, out)
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture
def recipe_main(monkeypatch: pytest.MonkeyPatch):
    """The recipe's ``main(argv)``, imported as ``python recipes/speaker_id/train.py`` would."""
    monkeypatch.syspath_prepend(str(RECIPE))
    import train

    return train.main


def test_outputs_follow_the_contract(reference_run: Path, prepared_tiny: Path) -> None:
    metrics = _metrics(reference_run)
    # The workflow's result contract (reprohunt.result), version 1.
    assert load_result(reference_run / "metrics.json").objective == ("valid", "error")
    assert set(metrics) >= {"result_format", "objective", "metrics", "epochs", "seed", "params"}
    for split in ("valid", "test"):
        values = metrics["metrics"][split]
        assert set(values) == {"error", "loss"}
        assert 0 <= values["error"] <= 1 and values["loss"] > 0
    assert metrics["epochs"] == 2 and metrics["seed"] == 1986
    assert metrics["params"] == {
        "emb_dim": 16,
        "tdnn_channels": 16,
        "lr": 0.003,
        "dropout": 0.1,
        "batch_size": 8,
        "number_of_epochs": 2,
    }
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert metrics["metrics"]["valid"]["error"] == history[-1]["valid_error"]
    log = (reference_run / "train_log.txt").read_text()
    assert log.count("epoch: ") == 2 and "test (model of epoch" in log
    hparams = yaml.safe_load((reference_run / "hyperparams.yaml").read_text())
    assert hparams["tdnn_channels_out"] == 32  # resolved !ref
    assert hparams["data_folder"] == str(prepared_tiny)
    assert len(list((reference_run / "save").glob("epoch-*.ckpt"))) in (1, 2)
    assert not list(reference_run.glob(".*tmp*"))


def test_same_seed_gives_bit_identical_metrics(
    reference_run: Path, prepared_tiny: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    assert _train(prepared_tiny, again).returncode == 0
    assert (again / "metrics.json").read_bytes() == (reference_run / "metrics.json").read_bytes()
    other = tmp_path / "other_seed"
    assert _train(prepared_tiny, other, seed=2).returncode == 0
    assert _metrics(other)["history"] != _metrics(reference_run)["history"]


def test_features_from_audio_train_exactly_like_the_cache(
    reference_run: Path, prepared_tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "audio"
    run = _train(prepared_tiny, out, feature_source="audio", num_workers=1)
    assert run.returncode == 0, run.stderr
    assert _metrics(out) == _metrics(reference_run)


def test_hpopt_mode_writes_the_orion_result_file(prepared_tiny: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.touch()  # Orion creates it before starting the trial
    env = {
        **os.environ,
        "ORION_EXPERIMENT_NAME": "spkid",
        "ORION_EXPERIMENT_VERSION": "1",
        "ORION_TRIAL_ID": "abc123",
        "ORION_WORKING_DIR": str(tmp_path),
        "ORION_RESULTS_PATH": str(results),
    }
    hpopt_args = {"hpopt": RECIPE / "hpopt.yaml", "hpopt_mode": "orion"}
    out = tmp_path / "trial"
    run = _train(prepared_tiny, out, env=env, **hpopt_args)
    assert run.returncode == 0, run.stderr
    metrics = _metrics(out)
    assert "test" not in metrics["metrics"] and metrics["epochs"] == 2
    # hpopt.yaml: valid only after the last epoch, and skipping the first one's evaluation
    # changes no trained bit: the same trial evaluated after every epoch reports the same.
    assert [h["valid_error"] is None for h in metrics["history"]] == [True, False]
    every = tmp_path / "every_epoch"
    run = _train(prepared_tiny, every, env=env, **hpopt_args, valid_each_epoch=True)
    assert run.returncode == 0, run.stderr
    evaluated = _metrics(every)
    assert evaluated["history"][0]["valid_error"] is not None
    assert evaluated["metrics"] == metrics["metrics"]
    assert [h["train_loss"] for h in evaluated["history"]] == [
        h["train_loss"] for h in metrics["history"]
    ]
    assert evaluated["history"][-1] == metrics["history"][-1]
    assert metrics["trial_id"] == "spkid-1-abc123"
    reported = json.loads(results.read_text())
    assert reported[0] == {
        "name": "objective",
        "type": "objective",
        "value": metrics["metrics"]["valid"]["error"],
    }
    loss = metrics["metrics"]["valid"]["loss"]
    assert {"name": "loss", "type": "statistic", "value": loss} in reported
    assert not (out / "save").exists()  # hpopt.yaml: ckpt_enable false
    # Without --output_folder, hpopt.yaml puts the trial under results/speaker_id/<trial_id>;
    # it does not shorten the budget: a trial trains train.yaml's number_of_epochs.
    run = _train(prepared_tiny, None, env=env, cwd=tmp_path, **hpopt_args, number_of_epochs=None)
    assert run.returncode == 0, run.stderr
    assert _metrics(tmp_path / "results/speaker_id/spkid-1-abc123")["epochs"] == 15


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data_folder": "null"}, "data_folder is not set"),
        ({"n_mels": 23}, "n_mels: the recipe asks for 23 but"),
        ({"dropout": 1.5}, "dropout must be in [0, 1), got 1.5"),
        ({"lr": -1}, "lr must be a positive number"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"feature_source": "disk"}, "feature_source must be cache or audio"),
        ({"no_such_key": 3}, "Override 'no_such_key' not found"),
        ({"precision": "bf16"}, "--precision bf16 needs a CUDA device"),
        ({"valid_each_epoch": "false"}, "ckpt_enable: true needs valid_each_epoch: true"),
    ],
)
def test_bad_settings_are_named_before_training(
    recipe_main, prepared_tiny: Path, tmp_path: Path, capsys, change: dict, message: str
) -> None:
    out = tmp_path / "out"
    assert recipe_main(_command(prepared_tiny, out, **change)[2:]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_incomplete_prepared_folder_is_named(
    recipe_main, prepared_tiny: Path, tmp_path: Path, capsys
) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(prepared_tiny, partial)
    (partial / "prepared.json").unlink()
    assert recipe_main(_command(partial, tmp_path / "out")[2:]) == 2
    assert f"{partial / 'prepared.json'} is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_architecture_is_refused(
    recipe_main, prepared_tiny: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert recipe_main(_command(prepared_tiny, out, number_of_epochs=1)[2:]) == 0
    checkpoint = out / "save/epoch-001.ckpt"
    assert checkpoint.is_file()
    assert recipe_main(_command(prepared_tiny, out, number_of_epochs=1, tdnn_channels=24)[2:]) == 2
    err = capsys.readouterr().err
    assert f"{checkpoint} was written with a different architecture" in err
    assert "tdnn_channels: checkpoint 16, now 24" in err
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert recipe_main(_command(prepared_tiny, out, number_of_epochs=1)[2:]) == 2
    assert f"{checkpoint} is not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(prepared_tiny: Path, tmp_path: Path) -> None:
    uninterrupted = tmp_path / "uninterrupted"
    assert _train(prepared_tiny, uninterrupted, number_of_epochs=20).returncode == 0
    out = tmp_path / "killed"
    process = subprocess.Popen(
        _command(prepared_tiny, out, number_of_epochs=20),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not list((out / "save").glob("epoch-*.ckpt")) and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "metrics.json").exists()
    run = _train(prepared_tiny, out, number_of_epochs=20)
    assert run.returncode == 0, run.stderr
    assert "resumed from" in (out / "train_log.txt").read_text()
    assert _metrics(out) == _metrics(uninterrupted)

"""Unit tests of the hpopt API: argument parsing, hpopt files, reporting, strictness, ranks.

They run in-process (the environment is restored after each test) except where the exit status
or a fresh interpreter is the thing under test.
"""

import io
import json
import logging
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hyperpyyaml import load_hyperpyyaml

import hpopt as hp
from hpopt.arguments import parse_command_line, resolve_device
from hpopt.files import write_json_atomically

# Every test starts from an environment without Orion, torchrun or hpopt variables.
pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def hpopt_file(tmp_path):
    path = tmp_path / "hpopt.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            number_of_epochs: 1
            ckpt_enable: False
            emb_dim: 64
            trial_id: hpfit
            output_folder: !ref ./results/speaker_id/<trial_id>
            """
        )
    )
    return path


def parse(argv, **kwargs):
    """Parse without entering the block, which would demand a result in hpopt mode."""
    ctx = hp.hyperparameter_optimization(objective_key="error")
    return ctx, *ctx.parse_arguments(argv, **kwargs)


# --- command line -----------------------------------------------------------------------------


def test_run_options_and_yaml_typed_overrides_like_speechbrain():
    hparams, run_opts, overrides = parse_command_line(
        [
            "train.yaml",
            "--device=cpu",
            "--debug",
            "--debug_batches",
            "3",
            "--precision",
            "bf16",
            "--noprogressbar",
            "--emb_dim",
            "256",
            "--lr=1e-3",
            "--layers",
            "[1, 2]",
            "--note=a=b",
            "-x",
            "-0.5",
            "--dev",
            "7",
        ]
    )
    assert hparams == "train.yaml"
    assert run_opts["device"] == "cpu"
    assert run_opts["debug"] is True and run_opts["debug_batches"] == 3
    assert run_opts["debug_epochs"] == 2 and run_opts["data_parallel_backend"] is False
    assert run_opts["precision"] == "bf16" and run_opts["noprogressbar"] is True
    # No argparse prefix matching: --dev is an override, not --device.
    assert overrides == {
        "emb_dim": 256,
        "lr": 0.001,
        "layers": [1, 2],
        "note": "a=b",
        "x": -0.5,
        "dev": 7,
    }


def test_options_without_a_default_are_absent_unless_given():
    _, run_opts, overrides = parse_command_line(["train.yaml"])
    assert overrides == {}
    for absent in ("device", "noprogressbar", "precision", "max_grad_norm", "log_config"):
        assert absent not in run_opts


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["train.yaml", "--emb_dim"], "'--emb_dim' has no value"),
        (["train.yaml", "--emb_dim", "--lr", "1"], "'--emb_dim' has no value"),
        (["train.yaml", "256"], "unexpected argument '256'"),
        (["train.yaml", "--lr", "1", "2"], "unexpected argument '2'"),
        (["train.yaml", "--lr", "1", "--lr=2"], "--lr is given twice"),
        (["--lr", "1"], "got '--lr'"),
        ([], "got 'nothing'"),
        (["train.yaml", "--precision", "fp8"], "invalid choice: 'fp8'"),
        (["train.yaml", "--device"], "--device: expected one argument"),
        (["train.yaml", "--note", "a: b"], "override --note: value 'a: b'"),
    ],
)
def test_malformed_command_lines_name_the_token(argv, named):
    with pytest.raises(hp.HpoptError, match=named.replace("[", r"\[")):
        parse_command_line(argv)


def test_overrides_dict_is_accepted_by_load_hyperpyyaml(tmp_path, hpopt_file):
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(
        "number_of_epochs: 35\nckpt_enable: True\nemb_dim: 512\nlr: 0.01\n"
        "output_folder: ./results/speaker_id/1986\nsave_folder: !ref <output_folder>/save\n"
    )
    argv = [str(train_yaml), "--hpopt", str(hpopt_file), "--hpopt_mode", "generic"]
    _, hparams_file, _, overrides = parse(
        argv + ["--lr", "0.5", "--device", "cpu"], pass_trial_id=False
    )
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    assert hparams["number_of_epochs"] == 1 and hparams["lr"] == 0.5
    assert hparams["save_folder"].startswith("./results/speaker_id/")
    assert hparams["save_folder"] != "./results/speaker_id/1986/save"


@pytest.mark.parametrize(
    ("device", "local_rank", "expected"),
    [
        ("cuda:3", "1", "cuda:1"),
        ("cuda", "2", "cuda:2"),
        ("cpu", "1", "cpu"),
        ("cuda:10", None, "cuda:10"),
    ],
)
def test_device_follows_torchrun_local_rank(monkeypatch, device, local_rank, expected):
    if local_rank is not None:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert resolve_device({"device": device}) == expected


def test_default_device_is_what_torch_sees():
    import torch

    run_opts: dict = {}
    resolve_device(run_opts)
    assert run_opts["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")


# --- hpopt file, trial_id, key removal --------------------------------------------------------


def test_hpopt_file_is_merged_under_the_command_line_with_the_orion_trial_id(
    orion_trial, hpopt_file
):
    ctx, _, _, overrides = parse(
        ["train.yaml", "--hpopt", str(hpopt_file), "--hpopt_mode", "orion", "--emb_dim", "128"]
        + ["--device", "cpu"]
    )
    assert ctx.enabled and isinstance(ctx.reporter, hp.OrionHyperparameterOptimizationReporter)
    assert overrides["emb_dim"] == 128  # command line wins over the file
    assert overrides["number_of_epochs"] == 1 and overrides["ckpt_enable"] is False
    assert overrides["output_folder"] == "./results/speaker_id/speaker-id-1-0123abcd"
    assert overrides["trial_id"] == "speaker-id-1-0123abcd"  # pass_trial_id=True (default)
    assert "hpopt" not in overrides and "hpopt_mode" not in overrides


@pytest.mark.parametrize(
    "hpopt_args",
    [
        ["--hpopt", "HPOPT_FILE", "--hpopt_mode", "generic"],
        ["--hpopt=True", "--hpopt_mode=generic"],
        ["--hpopt", "True"],
        ["--hpopt_mode", "generic"],
        ["--hpopt", "False", "--hpopt_mode", "generic"],
        ["--hpopt", "null"],
        [],
    ],
)
def test_hpopt_keys_are_removed_in_every_path(hpopt_file, hpopt_args):
    argv = ["train.yaml", *(str(hpopt_file) if a == "HPOPT_FILE" else a for a in hpopt_args)]
    argv += ["--trial_id", "mine", "--device", "cpu"]
    _, _, _, overrides = parse(argv, pass_trial_id=False)
    assert not {"hpopt", "hpopt_mode", "trial_id"} & set(overrides)


@pytest.mark.parametrize(
    ("argv", "enabled"),
    [
        (["--hpopt", "True"], True),
        (["--hpopt_mode", "generic"], True),
        (["--hpopt", "False", "--hpopt_mode", "generic"], False),
        (["--hpopt", "0"], False),
        ([], False),
    ],
)
def test_what_switches_hpopt_mode_on(argv, enabled):
    ctx, _, _, overrides = parse(["train.yaml", *argv, "--device", "cpu"])
    assert ctx.enabled is enabled
    assert (ctx.reporter is not None) is enabled
    assert ("trial_id" in overrides) is enabled


def test_trial_id_is_injected_without_a_file_too_and_pass_hpopt_args_keeps_keys():
    ctx, _, _, overrides = parse(
        ["train.yaml", "--hpopt", "True", "--hpopt_mode", "generic", "--device", "cpu"],
        pass_hpopt_args=["hpopt_mode"],
    )
    assert overrides == {"hpopt_mode": "generic", "trial_id": ctx.trial_id}


def test_missing_hpopt_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope" / "hpopt.yaml"
    with pytest.raises(hp.HpoptError, match=f"--hpopt {missing}: no such file"):
        parse(["train.yaml", "--hpopt", str(missing)])


def test_broken_hpopt_file_is_an_error_naming_it(tmp_path):
    broken = tmp_path / "hpopt.yaml"
    broken.write_text("a: !ref <undefined_key>\n")
    with pytest.raises(hp.HpoptError, match=f"cannot load hpopt file {broken}"):
        parse(["train.yaml", "--hpopt", str(broken)])


def test_unknown_mode_is_an_error_listing_the_modes():
    with pytest.raises(
        hp.HpoptError, match=r"'optuna' is unknown; use one of \['generic', 'orion'\]"
    ):
        parse(["train.yaml", "--hpopt", "True", "--hpopt_mode", "optuna"])


def test_orion_mode_outside_orion_falls_back_to_generic_with_a_warning(caplog):
    ctx, *_ = parse(["train.yaml", "--hpopt", "True", "--hpopt_mode", "orion", "--device", "cpu"])
    assert isinstance(ctx.reporter, hp.GenericHyperparameterOptimizationReporter)
    assert "ORION_RESULTS_PATH is unset" in caplog.text


# --- trial ids and ranks ----------------------------------------------------------------------


def test_trial_ids(orion_trial):
    assert hp.get_trial_id() == "hpopt"  # outside a block, as SpeechBrain
    ctx, *_ = parse(["train.yaml", "--hpopt_mode", "orion", "--device", "cpu"])
    assert ctx.trial_id == "speaker-id-1-0123abcd"


def test_generic_trial_id_is_stable_and_exported_to_children():
    first, *_ = parse(["train.yaml", "--hpopt", "True", "--device", "cpu"])
    second, *_ = parse(["train.yaml", "--hpopt", "True", "--device", "cpu"])
    assert first.trial_id == second.trial_id == os.environ["HPOPT_TRIAL_ID"]
    child = subprocess.run(
        [sys.executable, "-c", "import hpopt.trial_id as t; print(t.generic_trial_id())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == first.trial_id


def test_all_ranks_share_the_torchrun_run_id(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "5f1c-uuid")
    ids = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.delenv("HPOPT_TRIAL_ID", raising=False)
        ctx, *_ = parse(["train.yaml", "--hpopt", "True", "--device", "cpu"])
        ids.append(ctx.trial_id)
    assert ids == ["torchrun-5f1c-uuid", "torchrun-5f1c-uuid"]


def test_distributed_generic_without_a_shared_id_is_an_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default without --rdzv-id
    with pytest.raises(hp.HpoptError, match="set HPOPT_TRIAL_ID"):
        parse(["train.yaml", "--hpopt", "True", "--device", "cpu"])


def test_non_main_rank_is_silent_even_without_a_result(monkeypatch, orion_trial):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not hp.is_main_process() and hp.get_rank() == 1
    with hp.hyperparameter_optimization(objective_key="error") as ctx:
        ctx.parse_arguments(["train.yaml", "--hpopt_mode", "orion", "--device", "cpu"])
    assert orion_trial.read_text() == ""


def test_main_rank_of_a_distributed_trial_reports(monkeypatch, orion_trial):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with hp.hyperparameter_optimization(objective_key="error") as ctx:
        ctx.parse_arguments(["train.yaml", "--hpopt_mode", "orion", "--device", "cpu"])
        hp.report_result({"error": 0.5})
    assert json.loads(orion_trial.read_text())[0]["value"] == 0.5


# --- reporting --------------------------------------------------------------------------------


def run_block(argv, results, **reporter_kwargs):
    with hp.hyperparameter_optimization(**{"objective_key": "error", **reporter_kwargs}) as ctx:
        ctx.parse_arguments(["train.yaml", *argv, "--device", "cpu"])
        for result in results:
            hp.report_result(result)
    return ctx


def test_orion_reporter_writes_the_last_result_as_plain_floats(orion_trial):
    import torch

    run_block(
        ["--hpopt_mode", "orion"],
        [
            {"error": 0.9, "loss": 2.0},
            {
                "error": torch.tensor(0.25),
                "loss": np.float64(1.5),
                "acc": np.float32(0.75),
                "epoch": 3,
                "name": "x",
                "nan": math.nan,
            },
        ],
    )
    assert json.loads(orion_trial.read_text()) == [
        {"name": "objective", "type": "objective", "value": 0.25},
        {"name": "error", "type": "statistic", "value": 0.25},
        {"name": "loss", "type": "statistic", "value": 1.5},
        {"name": "acc", "type": "statistic", "value": 0.75},
        {"name": "epoch", "type": "statistic", "value": 3},
    ]
    assert [p.name for p in orion_trial.parent.iterdir()] == [orion_trial.name]  # no temp files


def test_generic_reporter_prints_one_json_line_with_the_last_result():
    output = io.StringIO()
    run_block(
        ["--hpopt", "True"], [{"error": 10, "loss": 1}, {"error": 3, "loss": 0.5}], output=output
    )
    assert output.getvalue() == '{"error": 3, "loss": 0.5, "objective": 3.0}\n'


def test_maximised_objective_is_negated_and_logged(orion_trial, caplog):
    caplog.set_level(logging.INFO, logger="hpopt")
    run_block(["--hpopt_mode", "orion"], [{"accuracy": 0.93}], objective_key="accuracy", mode="max")
    payload = json.loads(orion_trial.read_text())
    assert payload[0] == {"name": "objective", "type": "objective", "value": -0.93}
    assert {"name": "accuracy", "type": "statistic", "value": 0.93} in payload
    assert "maximising 'accuracy'" in caplog.text and "Orion only minimises" in caplog.text


def test_no_report_outside_hpopt_mode(capsys):
    run_block([], [])
    run_block([], [{"loss": 1.0}])  # no objective key: fine, nothing is sent
    assert capsys.readouterr().out == ""


# --- strictness -------------------------------------------------------------------------------


def test_leaving_without_a_result_is_an_error_and_reports_nothing(orion_trial):
    with pytest.raises(hp.HpoptError, match="ended without hp.report_result"):
        run_block(["--hpopt_mode", "orion"], [])
    assert orion_trial.read_text() == ""


def test_missing_objective_key_fails_at_report_time_naming_the_keys(orion_trial):
    with pytest.raises(
        hp.HpoptError, match=r"no objective key 'error' \(reported keys: \['acc', 'loss'\]\)"
    ):
        run_block(["--hpopt_mode", "orion"], [{"loss": 1.0, "acc": 0.5}])
    assert orion_trial.read_text() == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "is nan"),
        (np.float32("inf"), "is inf"),
        ("0.1", "must be a number"),
        (True, "must be a number"),
        ([0.1], "must be a number"),
    ],
)
def test_bad_objective_values_are_refused(orion_trial, value, message):
    with pytest.raises(hp.HpoptError, match=message):
        run_block(["--hpopt_mode", "orion"], [{"error": value}])
    assert orion_trial.read_text() == ""


def test_a_statistic_that_is_not_a_scalar_is_refused_naming_it(orion_trial):
    with pytest.raises(hp.HpoptError, match=r"reported value 'per_class' = \[0.1, 0.2\]"):
        run_block(["--hpopt_mode", "orion"], [{"error": 0.1, "per_class": [0.1, 0.2]}])
    assert orion_trial.read_text() == ""


def test_an_earlier_bad_value_is_replaced_by_the_last_good_one(orion_trial):
    run_block(["--hpopt_mode", "orion"], [{"error": math.nan}, {"error": 0.1}])
    assert json.loads(orion_trial.read_text())[0]["value"] == 0.1


def test_exception_in_the_block_propagates_and_reports_nothing(orion_trial):
    with (
        pytest.raises(RuntimeError, match="diverged"),
        hp.hyperparameter_optimization(objective_key="error") as ctx,
    ):
        ctx.parse_arguments(["train.yaml", "--hpopt_mode", "orion", "--device", "cpu"])
        hp.report_result({"error": 0.2})
        raise RuntimeError("diverged")
    assert orion_trial.read_text() == ""
    assert hp.get_trial_id() == "hpopt"  # the block is closed


def test_report_result_needs_a_mapping_and_is_a_no_op_outside_a_block():
    hp.report_result({"error": 1.0})
    with pytest.raises(hp.HpoptError, match="expects a dict"), hp.hyperparameter_optimization():
        hp.report_result(0.5)


def test_blocks_cannot_be_nested():
    outer = hp.hyperparameter_optimization()
    with outer, pytest.raises(hp.HpoptError, match="nested"), hp.hyperparameter_optimization():
        pass


def test_bad_mode_is_refused_when_the_reporter_is_built():
    ctx = hp.hyperparameter_optimization(objective_key="error", mode="maximize")
    with pytest.raises(hp.HpoptError, match="'min' or 'max', got 'maximize'"):
        ctx.parse_arguments(["train.yaml", "--hpopt", "True", "--device", "cpu"])


def test_atomic_write_leaves_the_target_untouched_on_failure(tmp_path):
    target = tmp_path / "results.log"
    target.write_text("previous")
    with pytest.raises(ValueError):
        write_json_atomically(target, [{"value": math.nan}])
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]
    write_json_atomically(target, [{"value": 1.0}])
    assert json.loads(target.read_text()) == [{"value": 1.0}]


# --- whole processes --------------------------------------------------------------------------

SCRIPT = """
import sys
import hpopt as hp
with hp.hyperparameter_optimization(objective_key="error") as hp_ctx:
    hp_ctx.parse_arguments(sys.argv[1:])
    if "--report" in sys.argv:
        hp.report_result({"error": 0.125})
"""


def run_script(tmp_path, *args, env=None):
    script = tmp_path / "trial.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), "train.yaml", "--device", "cpu", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_trial_process_without_result_exits_non_zero(tmp_path, orion_trial):
    finished = run_script(tmp_path, "--hpopt_mode", "orion")
    assert finished.returncode != 0
    assert "HpoptError: the hpopt block ended without hp.report_result" in finished.stderr
    assert orion_trial.read_text() == ""


def test_trial_process_reporting_writes_the_orion_file(tmp_path, orion_trial):
    finished = run_script(tmp_path, "--hpopt_mode", "orion", "--report", "1")
    assert finished.returncode == 0, finished.stderr
    assert json.loads(orion_trial.read_text())[0]["value"] == 0.125
    assert finished.stdout == ""


def test_import_hpopt_loads_only_the_standard_library():
    code = (
        "import sys; before = set(sys.modules); import hpopt; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    third_party = [
        name
        for name in loaded.stdout.split()
        if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "hpopt"
    ]
    assert loaded.stdout and third_party == []


def test_generic_report_line_is_the_only_stdout(tmp_path):
    finished = run_script(tmp_path, "--hpopt", "True", "--report", "1")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.endswith("\n")
    assert json.loads(finished.stdout) == {"error": 0.125, "objective": 0.125}

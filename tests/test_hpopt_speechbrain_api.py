"""hpopt as a drop-in for SpeechBrain 1.x's ``speechbrain.utils.hpopt``.

The tables list every public name of SpeechBrain's module (read from its 1.1.0 source) with its
value or signature; the tests after them check the behaviour a recipe relies on, including
SpeechBrain's own unit tests and doctests where they run unchanged, and the places where hpopt
differs on purpose. A custom reporter is exercised the way a recipe uses one: registered in the
recipe file and selected with ``--hpopt_mode`` in a real process.
"""

import inspect
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import datetime

import pytest
from conftest import ORION_ENV

import hpopt as hp

Base = hp.HyperparameterOptimizationReporter
Generic = hp.GenericHyperparameterOptimizationReporter
Orion = hp.OrionHyperparameterOptimizationReporter

# Every test starts from an environment without Orion, torchrun or hpopt variables.
pytestmark = pytest.mark.usefixtures("clean_environment")

CONSTANTS = {
    "MODULE_ORION": "orion.client",
    "FORMAT_TIMESTAMP": "%Y%m%d%H%M%S%f",
    "DEFAULT_TRIAL_ID": "hpopt",
    "DEFAULT_REPORTER": "generic",
    "ORION_TRIAL_ID_ENV": ["ORION_EXPERIMENT_NAME", "ORION_EXPERIMENT_VERSION", "ORION_TRIAL_ID"],
    "KEY_HPOPT": "hpopt",
    "KEY_HPOPT_MODE": "hpopt_mode",
    "KEY_TRIAL_ID": "trial_id",
    "HPOPT_KEYS": ["hpopt", "hpopt_mode"],
}

# (dotted name, SpeechBrain's signature, parameters hpopt makes positional-only on purpose)
SIGNATURES = [
    ("hpopt_mode", "(mode)", ()),
    ("get_reporter", "(mode, *args, **kwargs)", ("mode",)),  # so mode="max" reaches kwargs
    ("hyperparameter_optimization", "(*args, **kwargs)", ()),
    ("report_result", "(result)", ()),
    ("get_trial_id", "()", ()),
    ("HyperparameterOptimizationReporter", "(objective_key)", ()),
    ("HyperparameterOptimizationReporter.report_objective", "(self, result)", ()),
    (
        "GenericHyperparameterOptimizationReporter",
        "(reference_date=None, output=None, *args, **kwargs)",
        (),
    ),
    ("GenericHyperparameterOptimizationReporter.report_objective", "(self, result)", ()),
    ("OrionHyperparameterOptimizationReporter", "(objective_key)", ()),
    ("OrionHyperparameterOptimizationReporter.report_objective", "(self, result)", ()),
    ("HyperparameterOptimizationContext", "(reporter_args=None, reporter_kwargs=None)", ()),
    (
        "HyperparameterOptimizationContext.parse_arguments",
        "(self, arg_list, pass_hpopt_args=None, pass_trial_id=True)",
        (),
    ),
]

PROPERTIES = [
    (cls, name) for cls in (Base, Generic, Orion) for name in ("is_available", "trial_id")
]

# The short names hpopt had first; each is the SpeechBrain-named class itself.
ALIASES = {"Reporter": Base, "GenericReporter": Generic, "OrionReporter": Orion}


def speechbrain_signature(text: str) -> inspect.Signature:
    namespace: dict = {}
    exec(f"def f{text}: pass", namespace)
    return inspect.signature(namespace["f"])


def resolve(dotted: str):
    value = hp
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


# --- every public name ------------------------------------------------------------------------


def test_every_speechbrain_name_is_exported():
    names = {*CONSTANTS, *(dotted.split(".")[0] for dotted, *_ in SIGNATURES), *ALIASES}
    assert names <= set(hp.__all__)


@pytest.mark.parametrize(("name", "value"), CONSTANTS.items())
def test_constant(name, value):
    assert getattr(hp, name) == value
    assert type(getattr(hp, name)) is type(value)


@pytest.mark.parametrize(
    ("dotted", "speechbrain", "positional_only"), SIGNATURES, ids=[row[0] for row in SIGNATURES]
)
def test_signature_accepts_every_speechbrain_call(dotted, speechbrain, positional_only):
    """Same parameters (name, kind, default) in the same order; hpopt may only add keyword-only
    parameters with a default (``mode="min"``), which no SpeechBrain call can collide with."""
    expected = list(speechbrain_signature(speechbrain).parameters.values())
    known = {parameter.name for parameter in expected}
    ours = [
        parameter
        for parameter in inspect.signature(resolve(dotted)).parameters.values()
        if parameter.name in known
        or parameter.kind is not inspect.Parameter.KEYWORD_ONLY
        or parameter.default is inspect.Parameter.empty
    ]
    assert [p.name for p in ours] == [p.name for p in expected]
    for mine, theirs in zip(ours, expected, strict=True):
        kind = inspect.Parameter.POSITIONAL_ONLY if mine.name in positional_only else theirs.kind
        assert (mine.kind, mine.default) == (kind, theirs.default), mine.name


@pytest.mark.parametrize(
    ("cls", "name"), PROPERTIES, ids=[f"{cls.__name__}.{name}" for cls, name in PROPERTIES]
)
def test_property(cls, name):
    assert isinstance(inspect.getattr_static(cls, name), property)


def test_reporter_classes_and_registry():
    assert issubclass(Generic, Base) and issubclass(Orion, Base)
    for alias, cls in ALIASES.items():
        assert getattr(hp, alias) is cls
    assert type(hp.get_reporter("generic", objective_key="error")) is Generic


# --- reporters --------------------------------------------------------------------------------


def test_base_reporter_is_available_reports_nothing_and_has_the_default_trial_id():
    reporter = Base("error")
    assert reporter.objective_key == "error"
    assert reporter.is_available is True
    assert reporter.trial_id == "hpopt"
    assert reporter.report_objective({"error": 0.5}) is NotImplemented


def test_generic_output_is_json_dump_with_the_objective_appended():
    """SpeechBrain's doctest; hpopt adds a newline so the JSON is one whole line."""
    output = io.StringIO()
    reporter = hp.get_reporter("generic", objective_key="error", output=output)
    assert (reporter.objective_key, reporter.output, reporter.reference_date) == (
        "error",
        output,
        None,
    )
    assert reporter.report_objective({"error": 1.2, "train_loss": 7.2}) is None
    assert output.getvalue() == '{"error": 1.2, "train_loss": 7.2, "objective": 1.2}\n'


def test_generic_objective_key_already_present_keeps_its_place():
    output = io.StringIO()
    Generic(output=output, objective_key="error").report_objective({"objective": 9, "error": 0.5})
    assert output.getvalue() == json.dumps({"objective": 0.5, "error": 0.5}) + "\n"


def test_generic_output_defaults_to_stdout(capsys):
    reporter = Generic(objective_key="error")
    assert reporter.output is sys.stdout
    reporter.report_objective({"error": 0.25})
    assert capsys.readouterr().out == '{"error": 0.25, "objective": 0.25}\n'


def test_speechbrain_unit_test_hpopt_generic():
    output = io.StringIO()
    reporter = Generic(objective_key="per", output=output)
    reporter.report_objective({"train_loss": 0.9, "valid_loss": 1.2, "per": 0.10})
    result = json.loads(output.getvalue())
    assert result == {"train_loss": 0.9, "valid_loss": 1.2, "per": 0.10, "objective": 0.10}


def test_generic_trial_id_is_the_reference_date_as_a_timestamp():
    date = datetime(2021, 1, 3)
    output = io.StringIO()
    positional = Generic(date, output, objective_key="error")  # SpeechBrain's argument order
    assert (positional.reference_date, positional.output) == (date, output)
    assert positional.trial_id == "20210103000000000000"
    assert Generic(reference_date=date, objective_key="e").trial_id == "20210103000000000000"


def test_generic_trial_id_without_a_date_is_a_timestamp_shared_by_the_process():
    trial_id = Generic(objective_key="error").trial_id
    assert re.fullmatch(r"\d{20}-\d+", trial_id)  # the timestamp, then the pid
    assert Generic(objective_key="error").trial_id == trial_id == os.environ["HPOPT_TRIAL_ID"]


def test_orion_trial_id_joins_the_three_variables(monkeypatch):
    reporter = Orion("error")
    assert reporter.trial_id == "--"
    monkeypatch.setenv("ORION_TRIAL_ID", "0123abcd")
    assert reporter.trial_id == "--0123abcd"
    for name, value in ORION_ENV.items():
        monkeypatch.setenv(name, value)
    assert reporter.trial_id == "speaker-id-1-0123abcd"


def test_orion_is_available_only_with_a_results_file_to_write(monkeypatch, tmp_path):
    """SpeechBrain asks for orion.client and any id variable; hpopt needs the path it writes."""
    for name, value in ORION_ENV.items():
        monkeypatch.setenv(name, value)
    assert Orion("error").is_available is False
    monkeypatch.setenv("ORION_RESULTS_PATH", str(tmp_path / "results.log"))
    assert Orion("error").is_available is True


def test_orion_reporter_takes_only_speechbrains_arguments():
    with pytest.raises(TypeError, match="output"):
        Orion(objective_key="error", output=io.StringIO())


def test_orion_report_returns_none_and_writes_the_objective(orion_trial):
    assert Orion("error").report_objective({"error": 0.5}) is None
    assert json.loads(orion_trial.read_text())[0] == {
        "name": "objective",
        "type": "objective",
        "value": 0.5,
    }


def test_unavailable_reporter_falls_back_to_generic_with_the_same_arguments(caplog):
    reporter = hp.get_reporter("orion", objective_key="acc", mode="max")
    assert type(reporter) is Generic
    assert (reporter.objective_key, reporter.mode) == ("acc", "max")
    assert "reverting to the generic reporter" in caplog.text


def test_mode_is_passed_to_the_reporter_and_checked_there():
    assert hp.get_reporter("generic", objective_key="acc", mode="max").mode == "max"
    with pytest.raises(hp.HpoptError, match="got 'maximize'"):
        Base("acc", mode="maximize")


# --- context ----------------------------------------------------------------------------------


def test_context_keeps_the_reporter_arguments_until_hpopt_mode_builds_it():
    output = io.StringIO()
    ctx = hp.hyperparameter_optimization(objective_key="error", output=output)
    assert type(ctx) is hp.HyperparameterOptimizationContext
    assert ctx.reporter_args == [] and ctx.reporter_kwargs == {
        "objective_key": "error",
        "output": output,
    }
    # SpeechBrain starts result at {"objective": 0.0}, which it would report; hpopt fails instead.
    assert (ctx.reporter, ctx.enabled, ctx.result) == (None, False, None)
    ctx.parse_arguments(["train.yaml", "--hpopt", "True", "--device", "cpu"])
    assert ctx.enabled and type(ctx.reporter) is Generic
    assert (ctx.reporter.objective_key, ctx.reporter.output) == ("error", output)


def test_context_built_directly_takes_args_and_kwargs_lists():
    date = datetime(2021, 1, 3)
    ctx = hp.HyperparameterOptimizationContext([date], {"objective_key": "error"})
    assert (ctx.reporter_args, ctx.reporter_kwargs) == ([date], {"objective_key": "error"})
    _, _, overrides = ctx.parse_arguments(["train.yaml", "--hpopt", "True", "--device", "cpu"])
    assert overrides == {"trial_id": "20210103000000000000"}


def test_positional_arguments_fill_the_generic_reference_date_first():
    ctx = hp.hyperparameter_optimization(datetime(2021, 1, 3), objective_key="error")
    _, _, overrides = ctx.parse_arguments(["train.yaml", "--hpopt", "True", "--device", "cpu"])
    assert ctx.reporter.trial_id == overrides["trial_id"] == "20210103000000000000"


def test_parse_arguments_returns_the_overrides_as_a_dict():
    """SpeechBrain's doctest, plus ``--device cpu`` so that torch is not asked about GPUs."""
    ctx = hp.HyperparameterOptimizationContext()
    hparams_file, run_opts, overrides = ctx.parse_arguments(
        ["hparams.yaml", "--x", "1", "--y", "2", "--device", "cpu"]
    )
    assert (hparams_file, overrides, run_opts["device"]) == (
        "hparams.yaml",
        {"x": 1, "y": 2},
        "cpu",
    )
    assert not ctx.enabled


def test_speechbrain_unit_test_hpopt_context():
    """A reporter set by hand is used at exit, with the last reported result."""
    output = io.StringIO()
    with hp.hyperparameter_optimization() as hp_ctx:
        hp_ctx.reporter = Generic(objective_key="per", output=output)
        hp.report_result({"per": 10})
        hp.report_result({"per": 3})
    assert json.loads(output.getvalue())["per"] == 3


def test_speechbrain_doctest_report_result_outside_a_block_is_a_no_op():
    hp.report_result({"error": 1.0})
    assert hp.get_trial_id() == "hpopt"


# --- a custom reporter in a recipe ------------------------------------------------------------

RECIPE = '''
import sys

from hyperpyyaml import load_hyperpyyaml

import hpopt as hp


@hp.hpopt_mode("raw")
class RawHyperparameterOptimizationReporter(hp.HyperparameterOptimizationReporter):
    """SpeechBrain's doctest reporter, plus a trial id of its own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

    @property
    def trial_id(self):
        return "raw-7"

    def report_objective(self, result):
        print(f"Objective: {result[self.objective_key]}")


@hp.hpopt_mode("unfinished")
class UnfinishedReporter(hp.HyperparameterOptimizationReporter):
    """Forgot report_objective: the base one returns NotImplemented."""


if __name__ == "__main__":
    with hp.hyperparameter_optimization(objective_key="error") as hp_ctx:
        hparams_file, run_opts, overrides = hp_ctx.parse_arguments(
            sys.argv[1:], pass_trial_id=False
        )
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)
        print(f"epochs {hparams['number_of_epochs']} in {hparams['output_folder']}")
        hp.report_result({"error": hparams["lr"], "loss": 1.5})
    # Orion's code, not the empty namespace stubs its -nspkg.pth file creates at start-up.
    loaded = [m for m, mod in sys.modules.items() if m.startswith("orion") and mod.__spec__.origin]
    print("orion modules:", sorted(loaded))
'''


def run_recipe(tmp_path, *args):
    (tmp_path / "train.py").write_text(RECIPE)
    (tmp_path / "train.yaml").write_text(
        "lr: 0.01\nnumber_of_epochs: 35\noutput_folder: results/1986\n"
    )
    (tmp_path / "hpopt.yaml").write_text(
        textwrap.dedent(
            """\
            number_of_epochs: 1
            trial_id: hpfit
            output_folder: !ref results/<trial_id>
            """
        )
    )
    return subprocess.run(
        [sys.executable, "train.py", "train.yaml", "--device", "cpu", "--lr", "0.25", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )


def test_custom_reporter_registered_in_the_recipe_is_used_for_its_hpopt_mode(tmp_path):
    finished = run_recipe(tmp_path, "--hpopt", "hpopt.yaml", "--hpopt_mode", "raw")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines() == [
        "epochs 1 in results/raw-7",  # the hpopt file saw the custom reporter's trial id
        "Objective: 0.25",
        "orion modules: []",
    ]


def test_custom_reporter_without_report_objective_fails_the_trial(tmp_path):
    finished = run_recipe(tmp_path, "--hpopt", "hpopt.yaml", "--hpopt_mode", "unfinished")
    assert finished.returncode != 0
    assert "UnfinishedReporter.report_objective is not implemented" in finished.stderr


def test_orion_mode_in_a_recipe_never_imports_orion(tmp_path, orion_trial):
    finished = run_recipe(tmp_path, "--hpopt", "hpopt.yaml", "--hpopt_mode", "orion")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines() == [
        "epochs 1 in results/speaker-id-1-0123abcd",
        "orion modules: []",
    ]
    assert json.loads(orion_trial.read_text())[:2] == [
        {"name": "objective", "type": "objective", "value": 0.25},
        {"name": "error", "type": "statistic", "value": 0.25},
    ]


def test_unknown_mode_is_an_error_naming_the_registered_ones(tmp_path):
    """SpeechBrain warns and reports generically: under orion hunt, every trial ends broken."""
    finished = run_recipe(tmp_path, "--hpopt", "True", "--hpopt_mode", "rwa")
    assert finished.returncode != 0
    assert "'rwa' is unknown; use one of ['generic', 'orion', 'raw', 'unfinished']" in (
        finished.stderr
    )

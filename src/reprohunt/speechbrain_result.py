"""What a SpeechBrain recipe reported, recorded at full precision, as a file of the result contract.

SpeechBrain's recipes log each epoch's statistics through a train logger
(`train_logger.log_stats({"Epoch": 3, "lr": …}, train_stats=…, valid_stats=…)`) and, after
loading the checkpoint they select, the test statistics (`log_stats({"Epoch loaded": 3},
test_stats=…)`); in hpopt mode they hand each validation's statistics to `hp.report_result`.
:func:`install_hooks` records both as they happen (reprohunt/speechbrain_run.py calls it before
the recipe starts); :func:`result_document` turns the records into the result contract
(reprohunt.result): the objective is the validation statistic hpopt minimises, taken at the epoch
whose checkpoint the test stage loaded, and the test statistics are the test stage's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpopt.files import write_json_atomically
from reprohunt.result import FORMAT_VERSION, TEST_SPLIT, ResultError

OBJECTIVE_SPLIT = "valid"


@dataclass(frozen=True)
class LoggedStats:
    """One `log_stats` call: its meta information and each stage's statistics, as numbers."""

    meta: dict[str, float]
    stages: dict[str, dict[str, float]]

    def epoch(self) -> int | None:
        """The epoch the call names (`Epoch`, `Epoch loaded`, any key containing "epoch")."""
        for key, value in self.meta.items():
            if "epoch" in key.lower() and float(value).is_integer():
                return int(value)
        return None


@dataclass
class Records:
    """Everything the recipe reported while it ran."""

    logged: list[LoggedStats] = field(default_factory=list)
    objective_key: str | None = None
    hpopt_enabled: bool = False


def _numbers(stats: Mapping[str, Any] | None) -> dict[str, float]:
    """The numeric items of a statistics dict as floats (tensors, numpy scalars included)."""
    values = {}
    for key, value in (stats or {}).items():
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            values[str(key)] = float(value)
    return values


def install_hooks() -> Records:
    """Record every train logger's `log_stats` and the recipe's hpopt context; route Orion
    reports through hpopt's reporter (writes Orion's result file, never imports orion.client)."""
    from speechbrain.utils import hpopt as sb_hpopt
    from speechbrain.utils import train_logger

    from hpopt.reporters import OrionReporter

    records = Records()

    def recording(log_stats: Callable[..., Any]) -> Callable[..., Any]:
        def log_and_record(
            self: Any,
            stats_meta: Mapping[str, Any],
            train_stats: Mapping[str, Any] | None = None,
            valid_stats: Mapping[str, Any] | None = None,
            test_stats: Mapping[str, Any] | None = None,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            stages = {"train": train_stats, "valid": valid_stats, "test": test_stats}
            records.logged.append(
                LoggedStats(
                    _numbers(stats_meta),
                    {stage: _numbers(stats) for stage, stats in stages.items() if stats},
                )
            )
            return log_stats(
                self, stats_meta, train_stats, valid_stats, test_stats, *args, **kwargs
            )

        return log_and_record

    pending = [train_logger.TrainLogger]
    while pending:
        logger_class = pending.pop()
        pending += logger_class.__subclasses__()
        if "log_stats" in vars(logger_class):
            logger_class.log_stats = recording(logger_class.log_stats)

    sb_hpopt._hpopt_modes["orion"] = OrionReporter
    enter = sb_hpopt.HyperparameterOptimizationContext.__enter__

    def enter_and_record(context: Any) -> Any:
        records.objective_key = context.reporter_kwargs.get("objective_key")
        return enter(context)

    exit_ = sb_hpopt.HyperparameterOptimizationContext.__exit__

    def exit_and_record(context: Any, *exc: Any) -> Any:
        records.hpopt_enabled = bool(context.enabled)
        return exit_(context, *exc)

    sb_hpopt.HyperparameterOptimizationContext.__enter__ = enter_and_record
    sb_hpopt.HyperparameterOptimizationContext.__exit__ = exit_and_record
    return records


def result_document(records: Records) -> dict[str, Any]:
    """The result contract's document; a ResultError names what the recipe did not report."""
    if not records.objective_key:
        raise ResultError(
            "the recipe never entered hp.hyperparameter_optimization(objective_key=...): "
            "without its objective key the runner cannot tell which statistic was minimised"
        )
    tests = [entry for entry in records.logged if TEST_SPLIT in entry.stages]
    if not tests:
        raise ResultError(
            "the recipe logged no test statistics through its train logger "
            "(train_logger.log_stats(..., test_stats=...)); a full-budget run must evaluate "
            "the test split"
        )
    test = tests[-1]
    epochs = [entry for entry in records.logged if OBJECTIVE_SPLIT in entry.stages]
    if not epochs:
        raise ResultError("the recipe logged no validation statistics through its train logger")
    selected = test.epoch()
    matching = [entry for entry in epochs if selected is not None and entry.epoch() == selected]
    chosen = matching[-1] if matching else epochs[-1]
    valid = chosen.stages[OBJECTIVE_SPLIT]
    key = records.objective_key
    if key not in valid or not math.isfinite(valid[key]):
        raise ResultError(
            f"the validation statistics of epoch {chosen.epoch()} have no finite {key!r} "
            f"(the objective key): {sorted(valid)}"
        )
    return {
        "result_format": FORMAT_VERSION,
        "objective": {"split": OBJECTIVE_SPLIT, "metric": key},
        "metrics": {OBJECTIVE_SPLIT: valid, TEST_SPLIT: test.stages[TEST_SPLIT]},
        "selected_epoch": chosen.epoch(),
        "selected_by": "the epoch the test stage loaded" if matching else "the last epoch",
        "epochs": [{"meta": entry.meta, **entry.stages} for entry in epochs],
        "reported_by": "SpeechBrain train logger, full precision (reprohunt.speechbrain_result)",
    }


def output_folder(args: Sequence[str]) -> Path:
    """The run's `--output_folder` (the workflow always passes one; the last one counts)."""
    folders = [
        value for flag, value in zip(args, args[1:], strict=False) if flag == "--output_folder"
    ]
    if folders:
        return Path(folders[-1])
    raise ResultError("the recipe's command has no --output_folder: nowhere to write the result")


def write(records: Records, args: Sequence[str], name: str) -> Path:
    """Write the result file into the run's output folder; returns its path."""
    path = output_folder(args) / name
    write_json_atomically(path, result_document(records), indent=2)
    return path

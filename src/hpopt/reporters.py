"""Reporters: how a trial's final result leaves the process (Orion's result file, or a JSON line).

The classes, their constructor arguments and the ``hpopt_mode`` registry are SpeechBrain's
(``speechbrain.utils.hpopt``), so a reporter written for SpeechBrain keeps working: subclass
:class:`HyperparameterOptimizationReporter`, register it with ``@hp.hpopt_mode("name")`` and
run the recipe with ``--hpopt_mode name``. Where the built-in reporters differ, and why:

* they refuse a result Orion must not see (missing key, non-number, NaN/inf) with
  :class:`~hpopt.errors.HpoptError` instead of a bare ``KeyError`` or a fake objective;
* every reporter takes a keyword-only ``mode="min"`` or ``"max"``; ``"max"`` reports ``-value``
  because Orion only minimises;
* the Orion reporter writes ``$ORION_RESULTS_PATH`` itself instead of importing ``orion.client``;
* an unknown ``--hpopt_mode`` is an error listing the modes (SpeechBrain warns and reports
  generically, so under ``orion hunt`` every trial ends broken with no hint why).
"""

import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, TextIO, TypeVar

from hpopt.distributed import is_main_process
from hpopt.errors import HpoptError
from hpopt.files import write_json_atomically
from hpopt.trial_id import DEFAULT_TRIAL_ID, FORMAT_TIMESTAMP, generic_trial_id, orion_trial_id

logger = logging.getLogger("hpopt")

DEFAULT_REPORTER = "generic"
# What SpeechBrain's Orion reporter imports; this package never imports it (see below).
MODULE_ORION = "orion.client"

_hpopt_modes: dict[str, type["HyperparameterOptimizationReporter"]] = {}
ReporterClass = TypeVar("ReporterClass", bound="type[HyperparameterOptimizationReporter]")


def hpopt_mode(mode: str) -> Callable[[ReporterClass], ReporterClass]:
    """Class decorator registering a reporter for ``--hpopt_mode MODE`` (a later one replaces)."""

    def register(reporter_class: ReporterClass) -> ReporterClass:
        _hpopt_modes[mode] = reporter_class
        return reporter_class

    return register


def require_objective_key(result: Mapping[str, Any], objective_key: str) -> None:
    """Fail when ``result`` lacks the objective, naming the key and what was reported instead."""
    if objective_key not in result:
        raise HpoptError(
            f"the reported result has no objective key {objective_key!r} "
            f"(reported keys: {sorted(map(str, result))}); report it with "
            f"hp.report_result({{{objective_key!r}: ...}}) or pass the right objective_key= "
            "to hp.hyperparameter_optimization"
        )


def objective_value(result: Mapping[str, Any], objective_key: str) -> float:
    """The objective as a finite plain float, or an error naming the key and what was reported."""
    require_objective_key(result, objective_key)
    value = result[objective_key]
    try:
        if isinstance(value, bool | str):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError) as error:
        raise HpoptError(
            f"objective {objective_key!r} must be a number, got {value!r} "
            f"(type {type(value).__name__})"
        ) from error
    if not math.isfinite(number):
        raise HpoptError(
            f"objective {objective_key!r} is {number} (not finite); refusing to report it, "
            "so the trial ends as broken instead of misleading the optimiser"
        )
    return number


def plain_values(result: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe copy: numpy/torch scalars → float, NaN/inf → None, other objects → error."""
    plain: dict[str, Any] = {}
    for key, value in result.items():
        if value is None or isinstance(value, bool | str | int):
            plain[str(key)] = value
            continue
        try:
            number = float(value)
        except (TypeError, ValueError) as error:
            raise HpoptError(
                f"reported value {key!r} = {value!r} is neither a number nor a string"
            ) from error
        plain[str(key)] = number if math.isfinite(number) else None
    return plain


class HyperparameterOptimizationReporter:
    """Base of the reporters: one final result, sent through a channel the subclass chooses.

    As in SpeechBrain, ``report_objective`` here returns ``NotImplemented``; the context treats
    that as "nothing was reported" and fails the trial.
    """

    def __init__(self, objective_key: str, *, mode: Literal["min", "max"] = "min") -> None:
        if mode not in ("min", "max"):
            raise HpoptError(f"mode must be 'min' or 'max', got {mode!r}")
        self.objective_key = objective_key
        self.mode = mode

    @property
    def is_available(self) -> bool:
        """Whether this reporter can report here; if not, ``get_reporter`` uses generic instead."""
        return True

    @property
    def trial_id(self) -> str:
        return DEFAULT_TRIAL_ID

    def report_objective(self, result: Mapping[str, Any]) -> object:
        return NotImplemented

    def minimised_objective(self, result: Mapping[str, Any]) -> float:
        """The number an optimiser that only minimises must see (negated when maximising)."""
        value = objective_value(result, self.objective_key)
        if self.mode == "min":
            return value
        logger.info(
            "hpopt: maximising %r: reporting objective = -%s = %s (Orion only minimises)",
            self.objective_key,
            value,
            -value,
        )
        return -value


@hpopt_mode("generic")
class GenericHyperparameterOptimizationReporter(HyperparameterOptimizationReporter):
    """One JSON line ``{<reported items>, "objective": v}`` on ``output`` (default stdout).

    The first two positional arguments are ``reference_date`` and ``output``, as in SpeechBrain,
    so pass ``objective_key`` by keyword. Unlike SpeechBrain's, the line ends with a newline and
    is flushed (a reader of the trial's stdout gets it whole), numpy/torch scalars are written as
    numbers instead of failing ``json.dump``, and a NaN/inf statistic is written as ``null``.
    """

    def __init__(
        self,
        reference_date: datetime | None = None,
        output: TextIO | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.reference_date = reference_date
        self.output = output or sys.stdout

    @property
    def trial_id(self) -> str:
        """``reference_date`` as SpeechBrain's 20-digit timestamp; without one, an id that every
        rank and child process of this trial shares (see :func:`hpopt.trial_id.generic_trial_id`).
        """
        if self.reference_date is not None:
            return self.reference_date.strftime(FORMAT_TIMESTAMP)
        return generic_trial_id()

    def report_objective(self, result: Mapping[str, Any]) -> None:
        payload = {**plain_values(result), "objective": self.minimised_objective(result)}
        self.output.write(json.dumps(payload, allow_nan=False) + "\n")
        self.output.flush()


@hpopt_mode("orion")
class OrionHyperparameterOptimizationReporter(HyperparameterOptimizationReporter):
    """Writes Orion's result file itself: importing ``orion.client`` to report would cost every
    trial seconds of start-up, more than a small trial's training (bench/bench_report_cost.py
    measures both ways).

    Takes SpeechBrain's arguments: ``objective_key`` only, so ``output=`` is a ``TypeError``.
    Besides the objective, every numeric item is written as a ``statistic`` for ``orion info``.
    """

    @property
    def is_available(self) -> bool:
        """Only ``orion hunt`` sets ``ORION_RESULTS_PATH``; without it there is nowhere to write.

        (SpeechBrain: ``orion.client`` imports and one of the ``ORION_TRIAL_ID_ENV`` is set.)
        """
        return bool(os.environ.get("ORION_RESULTS_PATH"))

    @property
    def trial_id(self) -> str:
        """``<experiment name>-<experiment version>-<trial id>`` from what ``orion hunt`` sets."""
        return orion_trial_id()

    def report_objective(self, result: Mapping[str, Any]) -> None:
        objective = self.minimised_objective(result)
        plain = plain_values(result)
        logger.info(
            "Hyperparameter fit: %s", ", ".join(f"{key} = {value}" for key, value in plain.items())
        )
        statistics = [
            {"name": key, "type": "statistic", "value": value}
            for key, value in plain.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "objective"
        ]
        payload = [{"name": "objective", "type": "objective", "value": objective}, *statistics]
        write_json_atomically(os.environ["ORION_RESULTS_PATH"], payload)


def get_reporter(mode: str, /, *args: Any, **kwargs: Any) -> HyperparameterOptimizationReporter:
    """The reporter registered for ``mode``, built with ``args``/``kwargs``.

    One that is not available here (Orion outside ``orion hunt``) is replaced, with a warning,
    by a generic reporter built with the same arguments, as in SpeechBrain, so the same command
    can be tried by hand. ``mode`` is positional-only (SpeechBrain's is not) so that the
    reporters' own ``mode="max"`` can pass through ``kwargs``.
    """
    if mode not in _hpopt_modes:
        raise HpoptError(f"--hpopt_mode {mode!r} is unknown; use one of {sorted(_hpopt_modes)}")
    reporter = _hpopt_modes[mode](*args, **kwargs)
    if not reporter.is_available:
        hint = {"orion": " (ORION_RESULTS_PATH is unset: not run by orion hunt)"}.get(mode, "")
        if is_main_process():
            logger.warning(
                "hpopt: the %r reporter is not available here%s; reverting to the generic "
                "reporter (JSON line on stdout)",
                mode,
                hint,
            )
        reporter = _hpopt_modes[DEFAULT_REPORTER](*args, **kwargs)
    return reporter


# The short names hpopt had before it took SpeechBrain's, kept so that existing imports work.
Reporter = HyperparameterOptimizationReporter
GenericReporter = GenericHyperparameterOptimizationReporter
OrionReporter = OrionHyperparameterOptimizationReporter

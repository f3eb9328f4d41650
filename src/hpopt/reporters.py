"""How a trial's final result leaves the process: Orion's result file or one JSON line.

Mode names and the ``hpopt_mode`` registry are SpeechBrain's, so a custom reporter written for
``speechbrain.utils.hpopt`` keeps working once it subclasses :class:`Reporter`. Unlike
SpeechBrain, every reporter refuses a result Orion must not see (missing key, non-number,
NaN/inf) instead of crashing late with a bare ``KeyError`` or sending a fake objective.
"""

import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from hpopt.distributed import is_main_process
from hpopt.errors import HpoptError
from hpopt.files import write_json_atomically
from hpopt.trial_id import generic_trial_id, orion_trial_id

logger = logging.getLogger("hpopt")

_REPORTERS: dict[str, type["Reporter"]] = {}


def hpopt_mode(name: str) -> Callable[[type["Reporter"]], type["Reporter"]]:
    """Class decorator registering a reporter under ``--hpopt_mode NAME`` (later wins)."""

    def register(reporter_class: type["Reporter"]) -> type["Reporter"]:
        _REPORTERS[name] = reporter_class
        return reporter_class

    return register


def known_modes() -> list[str]:
    """The values ``--hpopt_mode`` accepts."""
    return sorted(_REPORTERS)


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


class Reporter:
    """Sends one final result; subclasses choose the channel and the trial id."""

    def __init__(
        self, objective_key: str = "objective", maximize: bool = False, output: TextIO | None = None
    ) -> None:
        self.objective_key = objective_key
        self.maximize = maximize
        self.output = output

    @property
    def trial_id(self) -> str:
        raise NotImplementedError

    def minimised_objective(self, result: Mapping[str, Any]) -> float:
        """The number an optimiser that only minimises must see (negated when maximising)."""
        value = objective_value(result, self.objective_key)
        if not self.maximize:
            return value
        logger.info(
            "hpopt: maximising %r: reporting objective = -%s = %s (Orion only minimises)",
            self.objective_key,
            value,
            -value,
        )
        return -value

    def report_objective(self, result: Mapping[str, Any]) -> None:
        raise NotImplementedError


@hpopt_mode("generic")
class GenericReporter(Reporter):
    """One JSON line ``{<reported items>, "objective": v}`` on stdout, for any other tool."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trial_id = generic_trial_id()

    @property
    def trial_id(self) -> str:
        return self._trial_id

    def report_objective(self, result: Mapping[str, Any]) -> None:
        payload = {**plain_values(result), "objective": self.minimised_objective(result)}
        stream = self.output or sys.stdout
        stream.write(json.dumps(payload, allow_nan=False) + "\n")
        stream.flush()


@hpopt_mode("orion")
class OrionReporter(Reporter):
    """Writes Orion's result file itself: importing ``orion.client`` costs ~11 s per trial."""

    @property
    def trial_id(self) -> str:
        return orion_trial_id()

    @staticmethod
    def is_available() -> bool:
        """Only ``orion hunt`` sets ``ORION_RESULTS_PATH``; without it there is nowhere to write."""
        return bool(os.environ.get("ORION_RESULTS_PATH"))

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


def get_reporter(mode: str, **kwargs: Any) -> Reporter:
    """The reporter for ``mode``; Orion outside ``orion hunt`` falls back to generic (warned)."""
    if mode not in _REPORTERS:
        raise HpoptError(f"--hpopt_mode {mode!r} is unknown; use one of {known_modes()}")
    if mode == "orion" and not OrionReporter.is_available():
        if is_main_process():
            logger.warning(
                "hpopt: --hpopt_mode orion but ORION_RESULTS_PATH is unset (not run by orion "
                "hunt); reverting to the generic reporter (JSON line on stdout)"
            )
        mode = "generic"
    return _REPORTERS[mode](**kwargs)

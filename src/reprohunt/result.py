"""The result contract: the file a recipe writes at the end of a full-budget run.

Version 1, written as ``<output_folder>/<recipe.result>`` (``metrics.json`` by default)::

    {"result_format": 1,
     "objective": {"split": "valid", "metric": "error"},
     "metrics": {"valid": {"error": 0.12, "loss": 0.41}, "test": {"error": 0.10, "loss": 0.37}},
     ...}                      # any other keys are the recipe's own and are kept as they are

``metrics`` maps each split to named finite numbers; ``objective`` names the one the hunt
minimised (what hpopt reported), and ``metrics`` must hold it and a non-empty ``test`` split.
Retraining, report, provenance and audit read results only through :func:`load`, so a result of
another shape stops the step with a message naming the file and the key, instead of giving an
empty report or an audit that compares nothing. Hand-written (one page) because the train env has
no JSON-schema library and adding one would re-lock it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
TEST_SPLIT = "test"


class ResultError(Exception):
    """A result file that does not follow the contract; the message names the file and key."""


@dataclass(frozen=True)
class Result:
    path: Path
    document: dict[str, Any]

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        return self.document["metrics"]

    @property
    def objective(self) -> tuple[str, str]:
        """(split, metric) of the objective."""
        objective = self.document["objective"]
        return objective["split"], objective["metric"]

    @property
    def objective_value(self) -> float:
        split, metric = self.objective
        return self.metrics[split][metric]

    def compared_values(self) -> dict[str, float]:
        """What an audit must reproduce: the objective and every test metric, as `split.name`."""
        split, metric = self.objective
        values = {f"{split}.{metric}": self.objective_value}
        values |= {
            f"{TEST_SPLIT}.{name}": value for name, value in self.metrics[TEST_SPLIT].items()
        }
        return values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def problems(document: Any) -> list[str]:
    """Every way `document` breaks the contract (empty: it follows it)."""
    if not isinstance(document, dict):
        return ["the file is not a JSON object"]
    found = []
    if document.get("result_format") != FORMAT_VERSION:
        found.append(
            f"result_format: expected {FORMAT_VERSION}, got {document.get('result_format')!r}"
        )
    metrics = document.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return [*found, "metrics: missing, or not an object of splits"]
    for split, values in metrics.items():
        if not isinstance(values, dict) or not values:
            found.append(f"metrics.{split}: not an object of named metrics")
            continue
        found += [
            f"metrics.{split}.{name}: {value!r} is not a finite number"
            for name, value in values.items()
            if not _is_number(value)
        ]
    if TEST_SPLIT not in metrics:
        found.append(
            f"metrics.{TEST_SPLIT}: missing (a full-budget run must evaluate the test split)"
        )
    objective = document.get("objective")
    if not isinstance(objective, dict) or set(objective) != {"split", "metric"}:
        found.append('objective: missing, or not {"split": ..., "metric": ...}')
    else:
        split, metric = objective["split"], objective["metric"]
        if not isinstance(metrics.get(split), dict) or metric not in metrics[split]:
            found.append(f"objective: metrics.{split}.{metric} is missing")
    return found


def load(path: Path) -> Result:
    """The result at `path`, refused unless it follows the contract."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ResultError(f"{path}: the recipe wrote no result file") from error
    except ValueError as error:
        raise ResultError(f"{path}: not valid JSON ({error})") from error
    found = problems(document)
    if found:
        raise ResultError(
            f"{path} does not follow the result contract (README, 'Bring your own recipe'):\n  "
            + "\n  ".join(found)
        )
    return Result(path, document)

"""An `orion hunt` trial that answers from bench_search's table instead of training.

    orion hunt … python bench/search_lookup_trial.py TABLE.json --emb_dim~'choices([…])' …

Orion runs it as any trial (command-line parameters, ``$ORION_RESULTS_PATH``). It snaps the
log-uniform parameters to the table's grid (the nearest point in log space), looks up the
objective the real recipe produced there (at ``--number_of_epochs`` when a fidelity is searched,
else at the full budget) and writes it to Orion's result file. bench_search.py runs the same
algorithm through Orion's Python API with the same functions and checks that `orion hunt` picks
the same trials in the same order. Stdlib only, so a trial starts in milliseconds.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def canonical(value: object) -> str:
    """One spelling per value, whether it came from Python (32, 0.001) or argv ("32", "0.001")."""
    text = str(value)
    try:
        return str(int(text))
    except ValueError:
        return repr(float(text))


def table_key(params: Mapping[str, object]) -> str:
    """The table's key of a parameter set: ``name=value`` pairs sorted by name."""
    return ",".join(f"{name}={canonical(params[name])}" for name in sorted(params))


def snap(params: Mapping[str, object], log_grid: Mapping[str, Sequence[float]]) -> dict:
    """``params`` with each log-uniform value replaced by its nearest grid value (in log space)."""
    snapped = dict(params)
    for name, points in log_grid.items():
        value = math.log(float(params[name]))
        snapped[name] = min(points, key=lambda point: abs(math.log(point) - value))
    return snapped


def objective(table: Mapping[str, object], params: Mapping[str, object]) -> float:
    """The recipe's objective for a trial's parameters (full budget unless a fidelity is given)."""
    full = {"number_of_epochs": table["full_epochs"], **params}
    key = table_key(snap(full, table["snap_log"]))
    entries = table["entries"]
    if key not in entries:
        raise KeyError(f"{key} is not in the table (not a grid point)")
    return float(entries[key]["objective"])


def parse_params(argv: list[str]) -> dict[str, str]:
    """``--name value`` pairs, as Orion writes them into the trial command."""
    if len(argv) % 2 or not all(flag.startswith("--") for flag in argv[::2]):
        raise SystemExit(f"search_lookup_trial: expected --name value pairs, got {argv}")
    return {flag[2:]: value for flag, value in zip(argv[::2], argv[1::2], strict=True)}


def main(argv: list[str]) -> int:
    table = json.loads(Path(argv[0]).read_text())
    try:
        value = objective(table, parse_params(argv[1:]))
    except KeyError as error:
        print(f"search_lookup_trial: {error.args[0]} ({argv[0]})", file=sys.stderr)
        return 1
    result = [{"name": "objective", "type": "objective", "value": value}]
    Path(os.environ["ORION_RESULTS_PATH"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

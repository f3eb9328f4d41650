"""The best-trial step: `orion info` verbatim, plus the same facts as machine-readable files.

Writes into the hunt folder:
- `orion_info.txt`: exactly what `orion info -n NAME -v VERSION` prints: the same Orion function
  (`format_info`) on the experiment loaded the same way, in this process, since a second Orion
  start-up in a subprocess cost about half of this step's time;
- `best.json` / `best.yaml`: the trial `orion info` calls best (Orion's own `stats.best_trials_id`,
  so the two can never disagree), with params stripped of Orion's leading `/`;
- `trials.json`: every trial with status, params, objective and duration, for the report and the
  provenance record (so neither needs to import Orion).
With a `fidelity()` dimension, the best is taken among trials at the highest fidelity instead,
since a low-fidelity winner says little about a full-budget model; `selection_rule` says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from hpopt.files import write_text_atomically
from reprohunt.orion_storage import storage_config
from reprohunt.records import (
    Best,
    HuntSpec,
    HuntSummary,
    RecordError,
    TrialRecord,
    write_record,
)

SELECTION_RULE = "minimum validation objective among completed trials (Orion minimises)"


def plain_params(params: dict[str, Any]) -> dict[str, Any]:
    """Orion's `{'/lr': 0.01}` as `{'lr': 0.01}`, with numpy scalars as plain Python values."""
    return {key.lstrip("/"): _plain(value) for key, value in params.items()}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def trial_record(trial: Any) -> TrialRecord:
    duration = (
        (trial.end_time - trial.start_time).total_seconds()
        if trial.end_time and trial.start_time
        else None
    )
    return TrialRecord(
        id=trial.id,
        status=trial.status,
        params=plain_params(trial.params),
        objective=trial.objective.value if trial.objective is not None else None,
        statistics={s.name: s.value for s in trial.statistics},
        submit_time=trial.submit_time.isoformat() if trial.submit_time else None,
        start_time=trial.start_time.isoformat() if trial.start_time else None,
        end_time=trial.end_time.isoformat() if trial.end_time else None,
        duration_s=duration,
        working_dir=trial.working_dir,
    )


def fidelity_name(experiment: Any) -> str | None:
    for name, dimension in experiment.space.items():
        if dimension.type == "fidelity":
            return name
    return None


def choose_best(experiment: Any, completed: list[Any]) -> tuple[Any, str]:
    fidelity = fidelity_name(experiment)
    if fidelity is None:
        best_id = experiment.stats.best_trials_id
        return next(t for t in completed if t.id == best_id), SELECTION_RULE
    top = max(t.params[fidelity] for t in completed)
    candidates = [t for t in completed if t.params[fidelity] == top]
    best = min(candidates, key=lambda t: (t.objective.value, t.end_time))
    return best, f"{SELECTION_RULE}, at the highest fidelity ({fidelity.lstrip('/')}={top})"


class NoCompletedTrial(Exception):
    """The experiment has no completed trial, so there is no best one."""


def write_best(hunt: HuntSummary, storage: dict[str, Any], out_dir: Path) -> Best:
    """Choose the best trial of the judged experiment `hunt` and write the four files into
    `out_dir` (see the module's docstring)."""
    import yaml
    from orion.core.io import experiment_builder
    from orion.core.utils.format_terminal import format_info

    # What `orion info` does (orion.core.cli.info.main): load read-only, print format_info.
    experiment = experiment_builder.load(hunt.name, hunt.version, "r", storage=storage)
    trials = experiment.fetch_trials(with_evc_tree=False)
    completed = [t for t in trials if t.status == "completed"]
    if not completed:
        raise NoCompletedTrial(f"experiment {hunt.name} has no completed trial")
    best, rule = choose_best(experiment, completed)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / "orion_info.txt", format_info(experiment) + "\n")
    record = Best(
        experiment=hunt.name,
        version=hunt.version,
        trial_id=best.id,
        objective=best.objective.value,
        params=plain_params(best.params),
        selection_rule=rule,
        trials_completed=len(completed),
        working_dir=best.working_dir,
    )
    write_record(out_dir / "best.json", record)
    document = dataclasses.asdict(record)
    write_text_atomically(out_dir / "best.yaml", yaml.safe_dump(document, sort_keys=False))
    records = sorted((trial_record(t) for t in trials), key=lambda r: r.submit_time or "")
    write_record(out_dir / "trials.json", records)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hunt", type=Path, required=True, help="hunt.json of the hunt step")
    parser.add_argument("--spec", type=Path, required=True, help="spec.json of the hunt")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        hunt = HuntSummary.load(args.hunt)
        storage = storage_config(HuntSpec.load(args.spec).storage, args.hunt.parent)
        best = write_best(hunt, storage, args.out_dir)
    except (RecordError, NoCompletedTrial) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"best trial {best.trial_id}: objective {best.objective} params {best.params}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

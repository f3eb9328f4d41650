"""The published result: a run's outcome kept in the repository, and whether a run reproduced it.

Why: "a second person gets the same numbers" is a claim a user can check only against numbers
written down. `published/<experiment>.json` holds what the default run gave when it was
committed: the configuration (what the Orion experiment name hashes besides the data), the
numerics profile, the prepared data's hashes (each file's, a large group's as one digest), every
hunt trial in order, the best params and objective, each final seed's valid and test metrics of
both arms, the verdict, and where it was measured. Every run of the workflow ends by comparing
its own outcome with it and says which of these holds, upstream first, each line starting with a
fixed phrase:
- another configuration, nothing to compare (the first differing configuration key);
- same configuration, other prepared data (the first differing file: another CPU's features
  differ by an ulp, say), which `make numerics-check` traces to an op;
- same data, another hunt (the first differing trial);
- same best, another final stage (the first differing seed and metric);
- reproduced bit for bit.
The Orion experiment name alone cannot tell the first two apart, since it hashes both. A change
that moves the numbers rewrites the file (`--write`) in the same commit.

    python -m reprohunt.published --results results/speaker_id           # check
    python -m reprohunt.published --results results/speaker_id --write   # publish this run
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from hpopt.files import write_json_atomically
from reprohunt.provenance import LISTED_FILES, REPO
from reprohunt.records import Provenance, RecordError

FOLDER = REPO / "published"
FORMAT = 2
# A format-1 file names its configuration only through the Orion experiment, which hashes the
# data too; it is compared as it was, key by key in this order (upstream first).
FORMAT_1_COMPARED = ("experiment", "numerics", "data_hashes_sha256", "best", "final", "verdict")

# How each line starts: the first two as before format 2, since the workflow's end-of-run message
# and users' scripts match them.
REPRODUCED = "reproduced the published result bit for bit"
NOT_REPRODUCED = "did NOT reproduce the published result"
ANOTHER_CONFIGURATION = "another configuration, nothing to compare"
OTHER_DATA = f"{NOT_REPRODUCED}: same configuration, other prepared data"
ANOTHER_HUNT = f"{NOT_REPRODUCED}: same data, another hunt"
ANOTHER_FINAL_STAGE = f"{NOT_REPRODUCED}: same best, another final stage"
UNTOLD = "another configuration or other prepared data, nothing to compare"
NOTHING_PUBLISHED = "no published result at"
NO_CONFIGURATION = "cannot compare with the published result"
OLDER_FORMAT = "the published file is of an older format"


@dataclasses.dataclass(frozen=True)
class Trial:
    """A hunt trial as far as reproducing it goes: what was tried and what it gave."""

    status: str
    params: dict[str, Any]
    objective: float | None


@dataclasses.dataclass(frozen=True)
class Measured:
    """Where and when an outcome was measured: context for the reader, never compared."""

    commit: str | None
    dirty: bool | None
    cpu: dict[str, Any] | None
    created: str

    def describe(self) -> str:
        return f"measured at {self.commit} on {(self.cpu or {}).get('model')}"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a run gave: the published file's keys, in the order they are written."""

    published_format: int
    experiment: str
    configuration: dict[str, Any]
    configuration_sha256: str
    numerics: str | None
    data_hashes_sha256: str
    data_files_sha256: dict[str, str]
    trials: list[Trial]
    best: dict[str, Any]
    final: dict[str, dict[str, dict[str, Any]]]
    verdict: str
    measured: Measured

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Outcome:
        """A format-2 published file (an unknown or missing key raises, naming it)."""
        nested = {
            "trials": [Trial(**trial) for trial in document["trials"]],
            "measured": Measured(**document["measured"]),
        }
        return cls(**document | nested)


def outcome(provenance: Provenance) -> Outcome:
    """What a run gave, from its provenance record, plus where it was made (a record that
    `unrecorded` names cannot give one)."""
    configuration, files, final = (
        provenance.configuration,
        provenance.data_files_sha256,
        provenance.final,
    )
    if configuration is None or provenance.configuration_sha256 is None:
        raise ValueError(f"{provenance.results}: no configuration recorded")
    if files is None or final is None:
        raise ValueError(f"{provenance.results}: no data files or final stage recorded")
    return Outcome(
        published_format=FORMAT,
        experiment=provenance.orion.experiment,
        configuration=configuration,
        configuration_sha256=provenance.configuration_sha256,
        numerics=provenance.recipe.get("numerics"),
        data_hashes_sha256=provenance.data_hashes_sha256,
        data_files_sha256=files,
        trials=[
            Trial(status=trial.status, params=trial.params, objective=trial.objective)
            for trial in provenance.orion.trials
        ],
        best={"params": provenance.best.params, "objective": provenance.best.objective},
        final={
            arm: {seed: result["metrics"] for seed, result in runs.items()}
            for arm, runs in final.runs.items()
        },
        verdict=final.comparison.verdict_text,
        measured=Measured(
            commit=provenance.git.get("commit"),
            dirty=provenance.git.get("dirty"),
            cpu=(provenance.numerics or {}).get("cpu"),
            created=provenance.created,
        ),
    )


def differences(recorded: Any, recomputed: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """`(dotted key, recorded, recomputed)` for every leaf where two JSON documents differ."""
    if isinstance(recorded, dict) and isinstance(recomputed, dict):
        return [
            found
            for name in sorted(set(recorded) | set(recomputed), key=str)
            for found in differences(
                recorded.get(name), recomputed.get(name), f"{key}.{name}" if key else str(name)
            )
        ]
    both_lists = isinstance(recorded, list) and isinstance(recomputed, list)
    if both_lists and len(recorded) == len(recomputed):
        return [
            found
            for index, (a, b) in enumerate(zip(recorded, recomputed, strict=True))
            for found in differences(a, b, f"{key}[{index}]")
        ]
    return [] if recorded == recomputed else [(key, recorded, recomputed)]


def first_of(found: list[tuple[str, Any, Any]]) -> str | None:
    """The first difference `differences` found, as `key: published …, this run …`."""
    if not found:
        return None
    where, then, now = found[0]
    return f"{where}: published {then!r}, this run {now!r}"


def configuration_line(published: Outcome, current: Outcome) -> str | None:
    """Another configuration: its trials were never meant to match the published ones."""
    found = first_of(differences(published.configuration, current.configuration, "configuration"))
    return found and f"{ANOTHER_CONFIGURATION}: first at {found}"


def data_line(published: Outcome, current: Outcome) -> str | None:
    """The same configuration on other prepared data: the first file whose hash differs."""
    if published.data_hashes_sha256 == current.data_hashes_sha256:
        return None
    then, now = published.data_files_sha256, current.data_files_sha256
    entries = list(dict.fromkeys([*then, *now]))
    differing = [entry for entry in entries if then.get(entry) != now.get(entry)]
    if differing:
        where = (
            f"first differing file {differing[0]} ({len(differing)} of {len(entries)} files "
            f"differ; a group of more than {LISTED_FILES} files counts as one)"
        )
    else:  # the same hashes, written otherwise
        where = "hashes.json differs, though every file's hash agrees"
    return (
        f"{OTHER_DATA}: {where}. The published file holds the files' hashes only, not the arrays: "
        "`make numerics-check` runs the recipe on emulated Intel and AMD CPUs and names the first "
        "op that computes other bits"
    )


def hunt_line(published: Outcome, current: Outcome) -> str | None:
    """The same data, another sequence of trials (or, from the same trials, another best)."""
    pairs = itertools.zip_longest(published.trials, current.trials)
    for number, (then, now) in enumerate(pairs, start=1):
        if then != now:
            return (
                f"{ANOTHER_HUNT}: first differing trial #{number} (in submission order; "
                f"{len(published.trials)} published, {len(current.trials)} in this run): "
                f"published {describe_trial(then)}, this run {describe_trial(now)}"
            )
    found = first_of(differences(published.best, current.best, "best"))
    return found and f"{ANOTHER_HUNT}: the same trials, another best: {found}"


def describe_trial(trial: Trial | None) -> str:
    if trial is None:
        return "no such trial"
    return f"{trial.status}, params {trial.params}, objective {trial.objective!r}"


def final_stage_line(published: Outcome, current: Outcome) -> str | None:
    """The same best params, retrained to other metrics: the first differing seed and metric."""
    found = first_of(
        differences(published.final, current.final, "final")
        + differences(published.verdict, current.verdict, "verdict")
    )
    return found and f"{ANOTHER_FINAL_STAGE}: first difference: {found}"


def classify(published: Outcome, current: Outcome, source: str) -> str:
    """One line: the most upstream way the run differs from the published outcome, or none."""
    for line in (configuration_line, data_line, hunt_line, final_stage_line):
        found = line(published, current)
        if found:
            return f"{found}; published: {source}"
    return f"{REPRODUCED}: {source}"


def classify_format_1(published: dict[str, Any], current: Outcome, source: str) -> str:
    """A published file without a configuration: compared by Orion experiment, as it was."""
    note = f"{OLDER_FORMAT} ({published.get('published_format')}): republish it with --write"
    if published["experiment"] != current.experiment:
        return (
            f"{UNTOLD}: this run is Orion experiment {current.experiment}, the published result "
            f"{source} is {published['experiment']}, which hashes the configuration and the data "
            f"together; {note} to tell which differs"
        )
    now = dataclasses.asdict(current)
    difference = first_of(
        [
            found
            for key in FORMAT_1_COMPARED
            for found in differences(published.get(key), now[key], key)
        ]
    )
    if difference is None:
        return f"{REPRODUCED}: {source}; {note}"
    return f"{NOT_REPRODUCED} {source}; first difference: {difference}; {note}"


def unrecorded(provenance_file: Path, provenance: Provenance) -> str | None:
    """Why a provenance record cannot give this format's outcome (None: it can). The
    configuration came after the final stage and with the data files' hashes: a record without
    it is of older code."""
    recorded = (provenance.configuration, provenance.data_files_sha256, provenance.final)
    if all(section is not None for section in recorded):
        return None
    return (
        f"{NO_CONFIGURATION}: {provenance_file} predates configuration records; delete it and "
        "rerun the workflow to rebuild it"
    )


def verdict(results: Path, path: Path) -> str:
    """One line: whether the run in `results` reproduced the published file at `path`."""
    provenance_file = results / "provenance.json"
    try:
        provenance = Provenance.load(provenance_file)
    except RecordError as error:
        return f"{NO_CONFIGURATION}: {error}"
    if not path.is_file():
        return f"{NOTHING_PUBLISHED} {path}: nothing to compare (publish one with --write)"
    problem = unrecorded(provenance_file, provenance)
    if problem:
        return problem
    current = outcome(provenance)
    document = json.loads(path.read_text())
    source = f"{path} ({Measured(**document['measured']).describe()})"
    if document.get("published_format", 1) < FORMAT:
        return classify_format_1(document, current, source)
    return classify(Outcome.from_json(document), current, source)


def default_path(results: Path) -> Path:
    """Where the published outcome of `results/<experiment>` is kept."""
    return FOLDER / f"{results.name}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="results/<experiment>")
    parser.add_argument("--published", type=Path, help="default: published/<experiment>.json")
    parser.add_argument("--write", action="store_true", help="publish this run's outcome")
    args = parser.parse_args(argv)
    path = args.published or default_path(args.results)
    if not (args.results / "provenance.json").is_file():
        print(f"error: {args.results / 'provenance.json'} not found: run the workflow first")
        return 2
    if args.write:
        try:
            record = Provenance.load(args.results / "provenance.json")
        except RecordError as error:
            print(f"error: {error}")
            return 2
        problem = unrecorded(args.results / "provenance.json", record)
        if problem:
            print(f"error: {problem}")
            return 2
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, dataclasses.asdict(outcome(record)), indent=2)
        print(f"published {args.results} as {path}")
        return 0
    print(verdict(args.results, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())

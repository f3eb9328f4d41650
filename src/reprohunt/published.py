"""The published result: a run's outcome kept in the repository, and whether a run reproduced it.

Why: "a second person gets the same numbers" is a claim a user can check only against numbers
written down. `published/<experiment>.json` holds what the default run gave when it was
committed (best params and objective, each final seed's valid and test metrics of both arms,
the verdict, the data hashes, the numerics profile, the Orion experiment that names the whole
configuration), and every run of the workflow ends by comparing its own outcome with it: bit
for bit, or the first place where it differs. A change that moves the numbers rewrites the file
(`--write`) in the same commit.

    python -m reprohunt.published --results results/speaker_id           # check
    python -m reprohunt.published --results results/speaker_id --write   # publish this run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hpopt.files import write_json_atomically
from reprohunt.audit import differences
from reprohunt.provenance import REPO

FOLDER = REPO / "published"
FORMAT = 1
# Compared in this order, so the first difference named is the most upstream one.
COMPARED = ("experiment", "numerics", "data_hashes_sha256", "best", "final", "verdict")


def outcome(provenance: dict[str, Any]) -> dict[str, Any]:
    """What a run gave, from its provenance record: the compared keys plus where it was made."""
    final = provenance["final"]
    return {
        "published_format": FORMAT,
        "experiment": provenance["orion"]["experiment"],
        "numerics": provenance["recipe"].get("numerics"),
        "data_hashes_sha256": provenance["data_hashes_sha256"],
        "best": {key: provenance["best"][key] for key in ("params", "objective")},
        "final": {
            arm: {seed: result["metrics"] for seed, result in runs.items()}
            for arm, runs in final["runs"].items()
        },
        "verdict": final["comparison"]["verdict_text"],
        "measured": {
            "commit": provenance["git"].get("commit"),
            "dirty": provenance["git"].get("dirty"),
            "cpu": provenance.get("numerics", {}).get("cpu"),
            "created": provenance["created"],
        },
    }


def first_difference(published: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first compared key where two outcomes differ, as a sentence (None: identical)."""
    for key in COMPARED:
        found = differences(published.get(key), current.get(key), key)
        if found:
            where, then, now = found[0]
            return f"{where}: published {then!r}, this run {now!r}"
    return None


def verdict(results: Path, path: Path) -> str:
    """One line: whether the run in `results` reproduced the published file at `path`."""
    current = outcome(json.loads((results / "provenance.json").read_text()))
    if not path.is_file():
        return f"no published result at {path}: nothing to compare (publish one with --write)"
    published = json.loads(path.read_text())
    if published["experiment"] != current["experiment"]:
        return (
            f"this run is Orion experiment {current['experiment']}, the published result at "
            f"{path} is {published['experiment']}: another configuration, nothing to compare"
        )
    made = published["measured"]
    source = f"{path} (measured at {made['commit']} on {(made['cpu'] or {}).get('model')})"
    difference = first_difference(published, current)
    if difference is None:
        return f"reproduced the published result bit for bit: {source}"
    return f"did NOT reproduce the published result {source}; first difference: {difference}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="results/<experiment>")
    parser.add_argument("--published", type=Path, help="default: published/<experiment>.json")
    parser.add_argument("--write", action="store_true", help="publish this run's outcome")
    args = parser.parse_args(argv)
    path = args.published or FOLDER / f"{args.results.name}.json"
    if not (args.results / "provenance.json").is_file():
        print(f"error: {args.results / 'provenance.json'} not found: run the workflow first")
        return 2
    if args.write:
        record = json.loads((args.results / "provenance.json").read_text())
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, outcome(record), indent=2)
        print(f"published {args.results} as {path}")
        return 0
    print(verdict(args.results, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docs/results.md: every measured number the documentation quotes, generated in one place.

Why: a figure typed into prose goes stale silently and loses the machine and date it belongs to.
The page is written only from committed records, so a clean clone can regenerate it and a test
can fail when it differs from what the records give:
- `published/*.json`: each published default result (see `reprohunt.published`): its verdict,
  the tuned and untuned arms per seed, their ratio, the paired interval, the best params and the
  hunt's trials;
- `docs/measured.json`: the measured figures (timings, benchmark ratios), each with the machine,
  numerics profile, date and data size it was measured with. `make bench` replaces the figures
  it measured (`bench/table.py`); the others are entered by hand after a measurement.

    python -m reprohunt.results_page           # rewrite docs/results.md
    python -m reprohunt.results_page --check   # exit 1 when docs/results.md is stale
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from hpopt.files import sha256_file, write_json_atomically, write_text_atomically
from reprohunt.provenance import REPO
from reprohunt.published import FOLDER as PUBLISHED
from reprohunt.published import Outcome

PAGE = REPO / "docs" / "results.md"
MEASURED = REPO / "docs" / "measured.json"
ARMS = ("tuned", "untuned")


@dataclasses.dataclass(frozen=True)
class Machine:
    """What a timing depends on besides the code: a figure is only comparable on the same one."""

    cpu: str
    cores: int
    numerics: str


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured number. `key` is stable, so a re-measurement replaces it instead of adding."""

    key: str
    group: str
    name: str
    value: float
    unit: str
    machine: Machine
    date: str
    data: str
    note: str = ""

    @classmethod
    def from_json(cls, document: dict) -> Figure:
        return cls(**document | {"machine": Machine(**document["machine"])})

    def shown(self) -> str:
        """The value for a reader: seconds as minutes and seconds, anything else with its unit."""
        if self.unit == "s" and self.value >= 60:
            minutes, seconds = divmod(round(self.value), 60)
            return f"{minutes} min {seconds} s"
        return f"{self.value:g} {self.unit}".strip()


def load_figures(path: Path = MEASURED) -> list[Figure]:
    return [Figure.from_json(entry) for entry in json.loads(path.read_text())]


def save_figures(figures: Sequence[Figure], path: Path = MEASURED) -> None:
    write_json_atomically(path, [dataclasses.asdict(f) for f in figures], indent=2)


def replaced(figures: Sequence[Figure], new: Iterable[Figure]) -> list[Figure]:
    """`figures` with each figure of `new` in place of the one with its key (appended if none)."""
    merged = {figure.key: figure for figure in figures}
    merged.update((figure.key, figure) for figure in new)
    return list(merged.values())


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: Sequence[float]) -> str:
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def arms_table(outcome: Outcome) -> str:
    """Per split and metric: each arm's mean ± std over the seeds and tuned / untuned."""
    first = next(iter(outcome.final["tuned"].values()))
    rows = []
    for split, metrics in first.items():
        for metric in metrics:
            values = {
                arm: [seed[split][metric] for seed in outcome.final[arm].values()] for arm in ARMS
            }
            untuned = statistics.fmean(values["untuned"])
            ratio = f"{statistics.fmean(values['tuned']) / untuned:.3f}" if untuned else "—"
            rows.append(
                [f"{split} {metric}", spread(values["tuned"]), spread(values["untuned"]), ratio]
            )
    return table(["metric", "tuned (mean ± std)", "untuned (mean ± std)", "tuned / untuned"], rows)


def seeds_table(outcome: Outcome) -> str:
    first = next(iter(outcome.final["tuned"].values()))
    columns = [(split, metric) for split, metrics in first.items() for metric in metrics]
    headers = ["seed"] + [f"{arm} {split} {metric}" for arm in ARMS for split, metric in columns]
    rows = [
        [seed]
        + [
            f"{outcome.final[arm][seed][split][metric]:.4g}"
            for arm in ARMS
            for split, metric in columns
        ]
        for seed in outcome.final["tuned"]
    ]
    return table(headers, rows)


def trials_table(outcome: Outcome) -> str:
    names = sorted({name for trial in outcome.trials for name in trial.params})
    rows = [
        [number, trial.status, *(trial.params.get(name, "") for name in names), trial.objective]
        for number, trial in enumerate(outcome.trials, start=1)
    ]
    return table(["#", "status", *names, "objective"], rows)


def published_section(path: Path) -> str:
    outcome = Outcome.from_json(json.loads(path.read_text()))
    cpu = outcome.measured.cpu or {}
    best = ", ".join(f"{name} {value}" for name, value in outcome.best["params"].items())
    return "\n\n".join(
        [
            f"## Published result: {outcome.experiment}",
            f"From `published/{path.name}` (sha256 `{sha256_file(path)[:16]}…`): measured on "
            f"{cpu.get('model', 'an unrecorded CPU')} ({cpu.get('vendor', '?')}) under "
            f"{outcome.numerics} numerics, {outcome.measured.created[:10]}.",
            f"**Verdict**: {outcome.verdict}.",
            f"**Best trial**: {best}; objective {outcome.best['objective']} (the trials' seed).",
            arms_table(outcome),
            "Per seed (the final stage trains both arms at each seed on the same data):",
            seeds_table(outcome),
            f"The hunt's {len(outcome.trials)} trials in submission order:",
            trials_table(outcome),
        ]
    )


def measured_section(figures: Sequence[Figure]) -> str:
    groups = dict.fromkeys(figure.group for figure in figures)
    parts = ["## Measured figures"]
    for group in groups:
        rows = [
            [
                f.name,
                f.shown(),
                f"{f.machine.cpu}, {f.machine.cores} cores, {f.machine.numerics}",
                f.date,
                f.data,
                f.note,
            ]
            for f in figures
            if f.group == group
        ]
        headers = ["figure", "value", "machine, numerics", "measured", "data", "note"]
        parts += [f"### {group}", table(headers, rows)]
    return "\n\n".join(parts)


def render(published: Path = PUBLISHED, measured: Path = MEASURED) -> str:
    """The whole page, from the published results in `published` and the figures in `measured`."""
    head = (
        "# Results\n\n"
        "<!-- Generated by `make results-page` (python -m reprohunt.results_page) from "
        "published/*.json and docs/measured.json: do not edit by hand. -->\n\n"
        "Every number the documentation quotes is here, with the machine and date it was "
        "measured on. The default results are the published records a run of `make run` is "
        "compared with bit for bit; the figures are timings and benchmark ratios, which vary with "
        "the machine and its load."
    )
    sections = [published_section(path) for path in sorted(published.glob("*.json"))]
    return "\n\n".join([head, *sections, measured_section(load_figures(measured))]) + "\n"


def write(page: Path = PAGE) -> None:
    write_text_atomically(page, render())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        stale = not PAGE.is_file() or PAGE.read_text() != page
        print(f"{PAGE} is stale: run make results-page" if stale else f"{PAGE} is up to date")
        return 1 if stale else 0
    write(PAGE)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

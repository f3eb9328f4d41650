"""`final/comparison.json`: did tuning help? Tuned against untuned runs over the same seeds.

One retraining says nothing about whether the search paid: the seed alone moves a small test
split's error by points. The final stage therefore trains, for each seed of `final.seeds`, the
best trial's params (*tuned*) and train.yaml as shipped (*untuned*) on the same data, and this
step compares the two arms on the objective's metric (named by the result contract), on the
test split (what the verdict is about) and on the objective's own split (usually valid).

Per split: each arm's mean and sample standard deviation (ddof=1), the paired per-seed
differences tuned − untuned, their mean and a two-sided Student-t interval (the seeds pair the
runs: same seed, same data order and initialisation draws), and the ratio of the means. The
objective is minimised (the hunt minimises it), so the verdict on test is ``helped`` when the
interval lies entirely below 0, ``hurt`` when entirely above, and ``did not help`` when it
contains 0 (also when every difference is 0). The audit recomputes all of it from the per-seed
files with :func:`compare` and requires the same document.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from hpopt.files import write_json_atomically
from reprohunt.records import (
    COMPARISON_FORMAT,
    Comparison,
    Objective,
    PairedDifference,
    SplitComparison,
    Summary,
)
from reprohunt.result import TEST_SPLIT, Result, ResultError
from reprohunt.result import load as load_result

CONFIDENCE = 0.95
TUNED, UNTUNED = "tuned", "untuned"
ARMS = (TUNED, UNTUNED)
HELPED, HURT, NO_HELP = "helped", "hurt", "did not help"


def arm_result(final: Path, arm: str, seed: int) -> Path:
    """Where the final stage writes the result of `arm` at `seed` (final/<arm>/seed<S>/)."""
    return final / arm / f"seed{seed}" / "metrics.json"


def verdict(interval: Sequence[float]) -> str:
    """What a confidence interval of tuned − untuned of a minimised metric says."""
    low, high = interval
    if high < 0:
        return HELPED
    if low > 0:
        return HURT
    return NO_HELP


def summary(values: Sequence[float]) -> Summary:
    """The values with their mean and sample standard deviation (ddof=1)."""
    return Summary(list(values), statistics.fmean(values), statistics.stdev(values))


def paired(tuned: Sequence[float], untuned: Sequence[float], quantile: float) -> PairedDifference:
    """Per-seed differences tuned − untuned, their mean, std and Student-t interval."""
    differences = summary([a - b for a, b in zip(tuned, untuned, strict=True)])
    half_width = quantile * differences.std / math.sqrt(len(tuned))
    mean = differences.mean
    return PairedDifference(
        differences.values, mean, differences.std, [mean - half_width, mean + half_width]
    )


def metric_values(results: Sequence[Result], split: str, metric: str) -> list[float]:
    """`metrics[split][metric]` of each result; a result without it stops the comparison."""
    missing = [str(r.path) for r in results if metric not in r.metrics.get(split, {})]
    if missing:
        raise ResultError(f"metrics.{split}.{metric} is missing in {', '.join(missing)}")
    return [r.metrics[split][metric] for r in results]


def compare(seeds: Sequence[int], tuned: Sequence[Result], untuned: Sequence[Result]) -> Comparison:
    """The comparison of the per-seed results (both lists in the order of `seeds`)."""
    if not len(seeds) == len(tuned) == len(untuned) or len(seeds) < 2:
        raise ValueError(
            f"need one tuned and one untuned result per seed, at least 2 seeds: got "
            f"{len(seeds)} seeds, {len(tuned)} tuned, {len(untuned)} untuned"
        )
    objectives = {r.objective for r in [*tuned, *untuned]}
    if len(objectives) != 1:
        raise ResultError(f"the final runs name different objectives: {sorted(objectives)}")
    ((objective_split, metric),) = objectives
    from scipy import stats  # 1 s to import: only here, not in every module that reads records

    quantile = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(seeds) - 1))
    splits: dict[str, SplitComparison] = {}
    for split in dict.fromkeys([TEST_SPLIT, objective_split]):
        arms = {TUNED: metric_values(tuned, split, metric)}
        arms[UNTUNED] = metric_values(untuned, split, metric)
        untuned_mean = statistics.fmean(arms[UNTUNED])
        splits[split] = SplitComparison(
            tuned=summary(arms[TUNED]),
            untuned=summary(arms[UNTUNED]),
            difference=paired(arms[TUNED], arms[UNTUNED], quantile),
            ratio=statistics.fmean(arms[TUNED]) / untuned_mean if untuned_mean else None,
        )
    found = verdict(splits[TEST_SPLIT].difference.ci)
    return Comparison(
        comparison_format=COMPARISON_FORMAT,
        objective=Objective(objective_split, metric),
        metric=metric,
        direction="minimise",
        verdict_split=TEST_SPLIT,
        seeds=list(seeds),
        confidence=CONFIDENCE,
        t_quantile=quantile,
        splits=splits,
        verdict=found,
        verdict_text=verdict_text(found, metric, len(seeds), splits[TEST_SPLIT]),
    )


def verdict_text(found: str, metric: str, seeds: int, test: SplitComparison) -> str:
    """The verdict `found` on the test split `test` of `metric` over `seeds` seeds, in one line,
    e.g. `tuning helped: test error 0.061 ± 0.004 vs …`."""
    low, high = test.difference.ci
    tuned, untuned = test.tuned, test.untuned
    return (
        f"tuning {found}: {TEST_SPLIT} {metric} {tuned.mean:.4g} ± "
        f"{tuned.std:.2g} tuned vs {untuned.mean:.4g} ± {untuned.std:.2g} untuned "
        f"(mean ± std, {seeds} seeds); paired difference {test.difference.mean:+.4g}, "
        f"{CONFIDENCE:.0%} CI [{low:+.4g}, {high:+.4g}]"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="final.seeds")
    parser.add_argument("--tuned", type=Path, nargs="+", required=True, help="one per seed")
    parser.add_argument("--untuned", type=Path, nargs="+", required=True, help="one per seed")
    parser.add_argument("--out", type=Path, required=True, help="final/comparison.json")
    args = parser.parse_args(argv)
    try:
        comparison = compare(
            args.seeds,
            [load_result(path) for path in args.tuned],
            [load_result(path) for path in args.untuned],
        )
    except (ResultError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_json_atomically(args.out, comparison.document(), indent=2)
    print(comparison.verdict_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

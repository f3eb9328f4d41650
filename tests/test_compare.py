"""reprohunt.compare on hand-made results: the statistics and each verdict, by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from reprohunt.compare import HELPED, HURT, NO_HELP, compare, verdict
from reprohunt.result import Result, ResultError

# Student-t 0.975 quantiles by degrees of freedom, from their closed forms (not from scipy, which
# compare uses): df 1 is the Cauchy quantile tan(pi (p - 1/2)), df 2 is (2p - 1) / sqrt(2p(1 - p)).
# 4.30265272974946; tables quoting 4.302652729911275 are off in the 10th digit.
T_975 = {1: math.tan(math.pi * 0.475), 2: 0.95 / math.sqrt(2 * 0.975 * 0.025)}


def result(test: float, valid: float, metric: str = "error") -> Result:
    document = {
        "result_format": 1,
        "objective": {"split": "valid", "metric": metric},
        "metrics": {"valid": {metric: valid}, "test": {metric: test, "loss": 1.0}},
    }
    return Result(Path("hand-made.json"), document)


def test_tuning_that_lowers_the_error_at_every_seed_helped() -> None:
    tuned = [result(0.10, 0.20), result(0.12, 0.21), result(0.11, 0.19)]
    untuned = [result(0.20, 0.30), result(0.21, 0.30), result(0.23, 0.31)]
    comparison = compare([1, 2, 3], tuned, untuned)
    test = comparison.splits["test"]
    differences = [0.10 - 0.20, 0.12 - 0.21, 0.11 - 0.23]
    mean = sum(differences) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
    half = T_975[2] * std / math.sqrt(3)
    assert test.difference.values == differences
    assert test.difference.mean == pytest.approx(mean, abs=1e-15)
    assert test.difference.std == pytest.approx(std, abs=1e-15)
    assert test.difference.ci == pytest.approx([mean - half, mean + half], abs=1e-12)
    assert test.tuned.mean == pytest.approx(0.11, abs=1e-15)
    untuned_mean = (0.20 + 0.21 + 0.23) / 3
    untuned_var = sum((x - untuned_mean) ** 2 for x in (0.20, 0.21, 0.23)) / 2
    assert test.untuned.std == pytest.approx(math.sqrt(untuned_var), abs=1e-15)
    assert test.ratio == pytest.approx(0.11 / untuned_mean)
    assert comparison.t_quantile == pytest.approx(T_975[2], abs=1e-12)
    assert set(comparison.splits) == {"test", "valid"}
    assert comparison.verdict == HELPED
    assert comparison.verdict_text.startswith(
        "tuning helped: test error 0.11 ± 0.01 tuned vs 0.2133 ± 0.015 untuned"
    )
    assert "(mean ± std, 3 seeds)" in comparison.verdict_text


def test_tuning_that_raises_the_error_at_every_seed_hurt() -> None:
    comparison = compare(
        [1, 2], [result(0.30, 0.3), result(0.32, 0.3)], [result(0.10, 0.1), result(0.11, 0.1)]
    )
    assert comparison.verdict == HURT
    low, high = comparison.splits["test"].difference.ci
    assert 0 < low < high


def test_noisy_or_identical_arms_did_not_help() -> None:
    # Differences of both signs: the interval contains 0.
    noisy = compare(
        [1, 2, 3],
        [result(0.10, 0.1), result(0.30, 0.1), result(0.20, 0.1)],
        [result(0.20, 0.1), result(0.20, 0.1), result(0.21, 0.1)],
    )
    assert noisy.verdict == NO_HELP
    # Identical runs: every difference 0, a degenerate interval [0, 0].
    same = [result(0.2, 0.3), result(0.25, 0.3)]
    identical = compare([1, 2], same, same)
    assert identical.splits["test"].difference.ci == [0.0, 0.0]
    assert identical.verdict == NO_HELP
    assert identical.verdict_text.startswith("tuning did not help:")


def test_verdict_boundaries() -> None:
    assert verdict([-0.3, -0.01]) == HELPED
    assert verdict([0.01, 0.3]) == HURT
    assert verdict([-0.3, 0.0]) == NO_HELP
    assert verdict([0.0, 0.3]) == NO_HELP


def test_a_result_without_the_objective_metric_on_test_is_refused() -> None:
    odd = Result(
        Path("odd.json"),
        {
            "result_format": 1,
            "objective": {"split": "valid", "metric": "error"},
            "metrics": {"valid": {"error": 0.1}, "test": {"loss": 1.0}},
        },
    )
    with pytest.raises(ResultError, match=r"metrics\.test\.error is missing in odd\.json"):
        compare([1, 2], [odd, result(0.1, 0.1)], [result(0.1, 0.1), result(0.1, 0.1)])

"""reprohunt.orion_optuna with real Orion and real Optuna: replay, joint modelling, refusals.

The algorithm runs as a hunt runs it (``create_algo``: Orion's space transformations around it),
answered in process by the fixture trial's objective; ``restore=True`` rebuilds it from its
state before every suggest and observe, as a hunt does through its storage.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

import orion_hunt
import pytest
from orion.algo.base import algo_factory
from orion.core.io.space_builder import SpaceBuilder
from orion.core.worker.primary_algo import create_algo
from orion.core.worker.trial import Trial

from reprohunt import orion_optuna
from reprohunt.orion_optuna import Optuna

# The fixture's objective, with its epochs as a plain choice (no fidelity here).
SPACE = {
    "epochs": "choices([1, 2, 4])",
    "lr": "loguniform(1e-4, 1e-1)",
    "dropout": "uniform(0, 0.5)",
    "emb_dim": "choices([32, 64, 128])",
}
TPE = {"sampler": "TPESampler", "options": {"multivariate": True, "n_startup_trials": 4}}

objective = orion_hunt.objective


def make(space: dict[str, str] = SPACE, **options: Any):
    """The algorithm as Orion builds it for a hunt (minus InsistSuggest's retries)."""
    return create_algo(Optuna, SpaceBuilder().build(space), **options)


def restored(algorithm, space: dict[str, str] = SPACE, **options: Any):
    """A fresh algorithm given ``algorithm``'s state, as a hunt loads it from storage."""
    fresh = make(space, **options)
    fresh.set_state(algorithm.state_dict)
    return fresh


def drive_space(
    space: dict[str, str], trials: int, *, restore: bool = False, **options: Any
) -> tuple[Any, list[dict]]:
    """Suggest and observe one trial at a time (``restore``: rebuilt from its state before
    every call, as a hunt does); the proposals in order. The objective: the fixture's over
    SPACE, else the sum of the values."""

    def value(params: dict) -> float:
        return objective(params) if space is SPACE else float(sum(params.values()))

    algorithm, proposals = make(space, **options), []
    for _ in range(trials):
        algorithm = restored(algorithm, space, **options) if restore else algorithm
        (trial,) = algorithm.suggest(1)
        params = dict(trial.params)
        trial.status = "completed"
        trial.results = [Trial.Result(name="objective", type="objective", value=value(params))]
        algorithm = restored(algorithm, space, **options) if restore else algorithm
        algorithm.observe([trial])
        proposals.append(params)
    return algorithm, proposals


def drive(trials: int, **options: Any) -> tuple[Any, list[dict]]:
    return drive_space(SPACE, trials, **options)


def test_a_seed_replays_the_same_proposals_also_when_restored_at_every_step():
    algorithm, reference = drive(12, seed=5, **TPE)
    assert len({tuple(sorted(params.items())) for params in reference}) == 12
    assert [trial.status for trial in algorithm.registry] == ["completed"] * 12
    assert drive(12, seed=5, **TPE)[1] == reference
    assert drive(12, seed=5, restore=True, **TPE)[1] == reference
    assert drive(12, seed=6, **TPE)[1] != reference


def drive_parallel(
    trials: int, workers: int, order: int, breaks_above: float = 0.45, **options: Any
) -> tuple[Any, list[dict]]:
    """`workers` workers, restored from the state at every call as a hunt's are: each free
    worker asks for a trial, then one running trial, drawn by `order`, finishes (broken when
    its dropout is above `breaks_above`); the proposals in the order the algorithm registered
    them."""
    finish = random.Random(order)
    algorithm, running, proposed = make(**options), [], 0
    while proposed < trials or running:
        while len(running) < workers and proposed < trials:
            algorithm = restored(algorithm, **options)
            got = algorithm.suggest(1)
            if not got:
                break
            running += got
            proposed += 1
        trial = running.pop(finish.randrange(len(running)))
        if trial.params["dropout"] > breaks_above:
            trial.status = "broken"
        else:
            trial.status = "completed"
            value = objective(dict(trial.params))
            trial.results = [Trial.Result(name="objective", type="objective", value=value)]
        algorithm = restored(algorithm, **options)
        algorithm.observe([trial])
    return algorithm, [dict(trial.params) for trial in algorithm.registry]


def test_a_batch_proposes_the_same_trials_whatever_the_workers_and_the_finishing_order(
    monkeypatch,
):
    """batch 3: 1, 2, 3 or 5 workers and trials finishing in any order give one sequence (a
    broken trial among them); it is not batch 1's, whose every trial sees all results."""
    monkeypatch.setattr(orion_optuna, "WAIT_S", 0)
    options = {"seed": 3, "batch": 3, **TPE}
    _, reference = drive_parallel(14, workers=1, order=0, **options)
    assert len({tuple(sorted(p.items())) for p in reference}) == 14
    assert any(p["dropout"] > 0.45 for p in reference)  # a broken trial is part of it
    for workers, order in [(2, 1), (3, 2), (3, 3), (5, 4)]:
        assert drive_parallel(14, workers, order, **options)[1] == reference, (workers, order)
    sequential = drive_parallel(14, workers=1, order=0, **{**options, "batch": 1})[1]
    assert sequential[:4] == reference[:4]  # the random start does not read results
    assert sequential != reference


def test_a_batch_waits_for_the_results_it_is_proposed_from(monkeypatch):
    """Trial i is proposed only once trials 0 … i - batch have ended; at most max_trials
    trials that did not break are proposed."""
    monkeypatch.setattr(orion_optuna, "WAIT_S", 0)
    algorithm = make(seed=1, batch=2, **TPE)
    algorithm.max_trials = 3
    first, second = algorithm.suggest(5)  # trial 2 waits for trial 0
    assert algorithm.suggest(1) == []
    first.status = "broken"
    algorithm.observe([first])
    (third,) = algorithm.suggest(5)  # trial 3 waits for trial 1
    assert algorithm.suggest(1) == []
    for trial in (second, third):
        trial.status = "completed"
        trial.results = [Trial.Result(name="objective", type="objective", value=1.0)]
        algorithm.observe([trial])
    assert len(algorithm.suggest(5)) == 1  # two completed, one broken: one more to max_trials
    assert algorithm.suggest(1) == []
    assert len(algorithm.registry) == 4


def test_orion_s_cannot_sample_warning_is_dropped_only_while_the_batch_waits(monkeypatch, caplog):
    """InsistSuggest warns after 100 empty asks; told to wait, that is no failure."""
    import logging

    monkeypatch.setattr(orion_optuna, "WAIT_S", 0)
    insist = logging.getLogger("orion.core.worker.algo_wrappers.insist_suggest")
    algorithm = make(seed=1, batch=2, **TPE)
    assert len(algorithm.suggest(3)) == 2 and algorithm.suggest(1) == []  # waits for trial 0
    insist.warning("Unable to sample a new trial from the algorithm, even after 100 attempts!")
    assert "Unable to sample" not in caplog.text
    make(seed=1, **TPE).suggest(1)  # not waiting
    insist.warning("Unable to sample a new trial from the algorithm, even after 100 attempts!")
    assert "Unable to sample" in caplog.text


def test_after_its_random_start_the_sampler_models_what_it_has_seen():
    """Trials 9-16 of the multivariate TPE are better than the same seed's random sampler's
    (median objective; the fixture's optimum: lr near 10**-2.5, little dropout, 4 epochs, the
    smallest embedding), so the proposals come from the model, not from the prior."""
    _, modelled = drive(16, seed=1, **TPE)
    _, random = drive(16, seed=1, sampler="RandomSampler")
    assert statistics.median(map(objective, modelled[8:])) < statistics.median(
        map(objective, random[8:])
    )


def test_a_broken_trial_is_not_learned_from_and_the_hunt_goes_on():
    options = {"seed": 2, **TPE}
    algorithm = make(**options)
    (broken,) = algorithm.suggest(1)
    broken.status = "broken"
    algorithm.observe([broken])
    (following,) = restored(algorithm, **options).suggest(1)
    assert following.params != broken.params


def test_integer_priors_give_integers_in_their_bounds():
    space = {"width": "uniform(8, 64, discrete=True)", "steps": "loguniform(1, 100, discrete=True)"}
    _, proposals = drive_space(space, 10, seed=7, **TPE)
    assert all(isinstance(p["width"], int) and 8 <= p["width"] <= 64 for p in proposals)
    assert all(isinstance(p["steps"], int) and 1 <= p["steps"] <= 100 for p in proposals)


def test_a_small_space_is_exhausted_without_repeating_a_point():
    """Four points: the sampler proposes ones Orion already has, is asked again with another
    seed, and the hunt is done once all four were tried (at seed 2 the four took 10 asks:
    counted once by hand, wrapping Optuna._study)."""
    space = {"a": "choices([1, 2])", "b": "choices([1, 2])"}
    algorithm, proposals = drive_space(space, 4, seed=2, **TPE)
    assert sorted((p["a"], p["b"]) for p in proposals) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert algorithm.is_done
    assert algorithm.suggest(1) == []


def test_without_a_seed_every_hunt_draws_afresh():
    assert drive(4, seed=None, **TPE)[1] != drive(4, seed=None, **TPE)[1]


def test_gp_sampler_runs_in_orion_too():
    _, proposals = drive(6, seed=3, sampler="GPSampler", options={"n_startup_trials": 3})
    assert len({tuple(sorted(params.items())) for params in proposals}) == 6


@pytest.mark.parametrize(
    ("space", "options", "says"),
    [
        (SPACE, {"sampler": "TPESamplr"}, "no sampler 'TPESamplr' in optuna.samplers"),
        (SPACE, {"sampler": "TPESampler", "options": {"seed": 1}}, "not in `options`"),
        (SPACE, {"batch": 0}, "batch must be a positive integer, got 0"),
        ({**SPACE, "epochs": "fidelity(1, 4, 2)"}, {}, "'epochs' is a fidelity"),
        ({**SPACE, "dropout": "normal(0.1, 0.05)"}, {}, "'dropout' has prior 'norm'"),
    ],
)
def test_what_it_cannot_run_is_refused_with_the_reason(space, options, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        make(space, **options)


@pytest.mark.slow
def test_orion_hunt_runs_it_by_name_and_replays_the_in_process_run(tmp_path):
    """A real `orion hunt` loads the algorithm through the entry point and, restoring it from
    PickledDB at every step, proposes the same trials in the same order as in process."""
    assert algo_factory.get_class("optuna") is Optuna
    max_trials = 8
    algorithm = {"optuna": {"seed": 4, **TPE}}
    configuration, trials = orion_hunt.run(tmp_path, "optuna", algorithm, SPACE, max_trials)
    assert configuration["algorithm"] == {"optuna": {**algorithm["optuna"], "batch": 1}}
    assert [trial.status for trial in trials] == ["completed"] * max_trials
    in_hunt = [orion_hunt.params(trial) for trial in trials]
    assert in_hunt == drive(max_trials, seed=4, **TPE)[1]


@pytest.mark.slow
def test_a_parallel_orion_hunt_replays_the_in_process_sequence(tmp_path, monkeypatch):
    """A real `orion hunt` with 2 workers and batch 2, its trials finishing out of order (each
    sleeps up to 1 s), proposes what one in-process worker proposes, in the same order."""
    monkeypatch.setattr(orion_optuna, "WAIT_S", 0)
    max_trials = 8
    options = {"seed": 4, "batch": 2, **TPE}
    _, trials = orion_hunt.run(
        tmp_path, "optuna-2", {"optuna": options}, SPACE, max_trials, n_workers=2, sleep_s=1.0
    )
    assert [trial.status for trial in trials] == ["completed"] * max_trials
    ends = [trial.end_time for trial in trials]
    assert ends != sorted(ends)  # they did finish out of order
    in_process = drive_parallel(max_trials, workers=1, order=0, breaks_above=1, **options)[1]
    assert [orion_hunt.params(trial) for trial in trials] == in_process
    assert in_process != drive(max_trials, seed=4, **TPE)[1]  # batch 2 is another sequence

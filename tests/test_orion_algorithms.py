"""reprohunt.orion_algorithms against Orion 0.2.7's own Hyperband and ASHA, with real Orion.

The algorithms run as a hunt runs them (``create_algo``: the space transformations around the
algorithm), answered in process by a cheap objective; ``restore=True`` also rebuilds the
algorithm from its state before every suggest and observe, as a hunt does through its storage.
Orion's ``InsistSuggest`` retry wrapper is left out: it only asks 100 times before giving up,
which makes a stall cost seconds instead of milliseconds.

Each test that shows a fault runs it on Orion's class too, with the assertion turned around, so
the test fails if upstream stops having the fault (or the fault is not what is claimed).
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass, field
from typing import Any

import orion_hunt
import pytest
from orion.algo.base import BaseAlgorithm, algo_factory
from orion.core.io.space_builder import SpaceBuilder
from orion.core.worker.primary_algo import create_algo
from orion.core.worker.trial import Trial

import reprohunt.orion_algorithms as ours

# Three rungs (1, 2, 4 epochs) and three Hyperband brackets: 13 trials a repetition.
SPACE = {
    "epochs": "fidelity(1, 4, 2)",
    "lr": "loguniform(1e-4, 1e-1)",
    "dropout": "uniform(0, 0.5)",
    "emb_dim": "choices([32, 64, 128])",
}
# Past upstream Hyperband's stall (10 repetitions = 130 trials) and upstream ASHA's (74).
TRIALS = 150

objective = orion_hunt.objective


@functools.cache
def algorithm_class(name: str) -> type:
    """Orion's class for ``name`` (the factory re-reads every entry point at each call)."""
    return algo_factory.get_class(name)


def make(name: str, **options: Any):
    """The algorithm as Orion builds it for a hunt, minus the InsistSuggest retries."""
    space = SpaceBuilder().build(SPACE)
    return create_algo(algorithm_class(name), space, **options).algorithm


def restored(name: str, algorithm, options: dict[str, Any]):
    """A fresh algorithm given ``algorithm``'s state, as a hunt loads it from storage."""
    fresh = make(name, **options)
    fresh.set_state(algorithm.state_dict)
    return fresh


@dataclass
class Run:
    proposals: list[dict[str, Any]] = field(default_factory=list)
    # Proposals made while only the first repetition's brackets existed.
    first_repetition: list[dict[str, Any]] = field(default_factory=list)
    # The seeds of each repetition's brackets, read when the repetition starts.
    repetition_seeds: list[list[Any]] = field(default_factory=list)
    stalled: bool = False
    algorithm: Any = None


def drive(name: str, trials: int, *, restore: bool = False, **options: Any) -> Run:
    """Suggest and observe one trial at a time until ``trials`` or nothing is proposed."""
    run = Run(algorithm=make(name, **options))
    brackets_seen = 0
    while len(run.proposals) < trials:
        if restore:
            run.algorithm = restored(name, run.algorithm, options)
        suggested = run.algorithm.suggest(1)
        inner = run.algorithm.unwrapped
        per_repetition = len(inner.budgets)
        if len(inner.brackets) > brackets_seen:
            brackets_seen = len(inner.brackets)
            run.repetition_seeds.append([b.seed for b in inner.brackets[-per_repetition:]])
        if not suggested:
            # Every earlier trial is observed, so nothing is pending: an empty suggestion
            # while the algorithm is not done is a stall.
            run.stalled = not run.algorithm.is_done
            break
        trial = suggested[0]
        params = dict(trial.params)
        if len(inner.brackets) == per_repetition:
            run.first_repetition.append(params)
        trial.status = "completed"
        trial.results = [Trial.Result(name="objective", type="objective", value=objective(params))]
        if restore:
            run.algorithm = restored(name, run.algorithm, options)
        run.algorithm.observe([trial])
        run.proposals.append(params)
    return run


def trials_per_repetition(run: Run) -> int:
    return sum(n_trials for bracket in run.algorithm.unwrapped.budgets for n_trials, _ in bracket)


@pytest.mark.parametrize(
    ("name", "upstream"),
    [("hyperband", True), ("asha", True), ("hyperbandreseeded", False), ("ashareseeded", False)],
)
def test_repetitions_keep_proposing_new_trials(name, upstream):
    run = drive(name, TRIALS, seed=1)
    keys = [tuple(sorted(params.items())) for params in run.proposals]
    assert len(set(keys)) == len(keys)  # no exact duplicate: the algorithm refuses those

    first, later = run.repetition_seeds[0], run.repetition_seeds[1:]
    assert len(later) >= 2
    if upstream:
        # Every new repetition starts with the first repetition's bracket seeds, re-walks its
        # candidate lists, and once those are used up proposes nothing, not being done.
        assert all(seeds == first for seeds in later)
        assert run.stalled
        assert len(run.proposals) < TRIALS
        if name == "hyperband":
            # Exactly 10 repetitions: a bracket's list holds 10 x its first rung's trials.
            assert len(run.proposals) == 10 * trials_per_repetition(run)
    else:
        every = [tuple(seed) for seeds in run.repetition_seeds for seed in seeds]
        assert len(set(every)) == len(every)
        assert not run.stalled
        assert len(run.proposals) == TRIALS
        assert not run.algorithm.is_done  # repetitions=inf: a hunt ends at its max_trials


@pytest.mark.parametrize(("name", "upstream"), [("hyperband", True), ("hyperbandreseeded", False)])
def test_the_repetitions_option_ends_a_restored_hunt(name, upstream):
    """A hunt restores the algorithm before every call; upstream then numbers every bracket
    repetition 1 and ``repetitions=2`` never ends it."""
    per_repetition = 13
    run = drive(name, 2 * per_repetition + 1, restore=True, seed=1, repetitions=2)
    repetition_ids = [bracket.repetition_id for bracket in run.algorithm.unwrapped.brackets]
    if upstream:
        assert len(run.proposals) == 2 * per_repetition + 1  # a third repetition started
        assert not run.algorithm.is_done
        assert set(repetition_ids) == {1}
    else:
        assert len(run.proposals) == 2 * per_repetition == 2 * trials_per_repetition(run)
        assert run.algorithm.is_done
        assert not run.stalled
        assert repetition_ids == [1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize(
    ("upstream", "name"), [("hyperband", "hyperbandreseeded"), ("asha", "ashareseeded")]
)
def test_the_first_repetition_is_upstreams(upstream, name):
    """The correction changes nothing before the second repetition."""
    theirs, mine = drive(upstream, 20, seed=3), drive(name, 20, seed=3)
    assert mine.first_repetition
    assert mine.first_repetition == theirs.first_repetition
    assert mine.repetition_seeds[0] == theirs.repetition_seeds[0]
    assert mine.proposals != theirs.proposals  # 20 trials reach the second repetition


@pytest.mark.parametrize("name", ["hyperbandreseeded", "ashareseeded"])
def test_a_seed_replays_the_same_proposals(name):
    trials = 30  # into Hyperband's third repetition, ASHA's fifth
    reference = drive(name, trials, seed=5)
    assert len(reference.repetition_seeds) >= 3
    assert drive(name, trials, seed=5).proposals == reference.proposals
    # Rebuilt from its state before every call, as in a hunt: the same trials (20: into
    # Hyperband's second repetition, ASHA's third; a restore deep-copies the whole state).
    restored_run = drive(name, 20, seed=5, restore=True)
    assert restored_run.proposals == reference.proposals[:20]
    assert len(restored_run.repetition_seeds) >= 2
    assert drive(name, trials, seed=6).proposals != reference.proposals


def test_orion_finds_the_algorithms_through_the_entry_point():
    """The entry point (group = the base class's name, as Orion's factory asks for) is in the
    environment's metadata: `make setup` installed this checkout's pyproject.toml."""
    found = {
        entry.name: entry.value
        for entry in importlib.metadata.entry_points(group=BaseAlgorithm.__name__)
        if entry.value.startswith("reprohunt.")
    }
    assert found == {
        "hyperbandreseeded": "reprohunt.orion_algorithms:HyperbandReseeded",
        "ashareseeded": "reprohunt.orion_algorithms:ASHAReseeded",
        "optuna": "reprohunt.orion_optuna:Optuna",
    }, "the installed reprohunt metadata is stale: rerun `make setup`"
    assert algo_factory.get_class("hyperbandreseeded") is ours.HyperbandReseeded
    assert algo_factory.get_class("ashareseeded") is ours.ASHAReseeded


@pytest.mark.slow
def test_orion_hunt_runs_the_algorithm_by_name(tmp_path):
    """A real `orion hunt` (which imports nothing of ours) loads the algorithm through the
    entry point and, restoring it from PickledDB at every step, proposes the same trials in the
    same order as the uninterrupted in-process run."""
    max_trials = 16  # into the second repetition
    algorithm = {"hyperbandreseeded": {"seed": 4}}
    configuration, trials = orion_hunt.run(tmp_path, "reseeded", algorithm, SPACE, max_trials)
    assert configuration["algorithm"] == {
        "hyperbandreseeded": {"seed": 4, "repetitions": float("inf")}
    }
    assert [trial.status for trial in trials] == ["completed"] * max_trials
    in_hunt = [orion_hunt.params(trial) for trial in trials]
    assert in_hunt == drive("hyperbandreseeded", max_trials, seed=4).proposals
    assert [t.objective.value for t in trials] == [objective(params) for params in in_hunt]

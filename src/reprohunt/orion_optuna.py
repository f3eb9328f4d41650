"""Optuna's samplers as an Orion algorithm, so a hunt can model its dimensions jointly.

Why: Orion 0.2.7's ``tpe`` fits one Parzen estimator per dimension and draws each value on its
own, so it cannot learn that one value of a dimension is good only together with a value of
another (here: 256-dimensional embeddings with 128 channels and little dropout). Optuna's
``TPESampler(multivariate=True)`` fits one estimator over all dimensions (Falkner et al., BOHB,
ICML 2018), and its ``GPSampler`` a Gaussian process; README "Does the search pay?" has what each
found. Registered through Orion's algorithm entry point (pyproject.toml), so a hunt selects it
by name::

    experiment:
      algorithm:
        optuna:
          seed: 1
          sampler: TPESampler
          options: {multivariate: true, n_startup_trials: 8}

``sampler`` is the name of a class in ``optuna.samplers`` and ``options`` its keyword arguments
(its seed comes from ``seed``). Optuna only proposes: Orion keeps the trials, the storage, the
workers and the budget, and this class keeps no state beyond Orion's registry of trials. At
every suggestion it rebuilds an in-memory Optuna study from the registry, in the order Orion
registered the trials, and asks a sampler seeded from (``seed``, the new trial's number,
attempt: a proposal Orion already has is asked again). A hunt restores the algorithm from its
storage before every step; the registry is all that is restored, so a seeded hunt replays the
same trials.

``batch`` (default 1) makes a parallel hunt replay too. Why: with several workers, Orion asks
for a trial whenever a worker frees up, so what the sampler has seen depends on which trials
happened to finish first, and no second run proposes the same sequence (neither Orion, Optuna
nor Ray Tune offers a parallel search that replays). Here trial ``i`` is proposed from the
results of trials ``0 … i - batch`` exactly, the ``batch - 1`` trials before it counted as
running whatever their state, and not before all of those results are in: until then a worker
is told to wait. The sequence is thus a function of the seed, ``batch`` and the trials' results,
whatever the number of workers or the order trials finish in; ``batch`` workers keep busy
(a sliding window: a worker waits only while a trial ``batch`` places back is still running).
``batch: 1`` is the sequential search. At most ``max_trials`` trials that did not break are
proposed, so the number of trials does not depend on timing either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial
from orion.algo.base import BaseAlgorithm
from orion.algo.space import Space
from orion.core.utils.format_trials import dict_to_trial
from orion.core.worker.trial import Trial

Seed = int | Sequence[int] | None

# Optuna logs every trial it is told of at INFO; the hunt's log already has Orion's lines.
optuna.logging.set_verbosity(optuna.logging.WARNING)

# Orion's trial status -> the Optuna state a sampler reads it as.
_STATES = {"completed": TrialState.COMPLETE, "broken": TrialState.FAIL}
# Why a pause before "wait": Orion's runner asks again at once (its loop polls every 10 ms),
# reloading the whole experiment each time, so a waiting worker would take the CPU its trials
# need. Once per time Orion loads the algorithm: Orion's InsistSuggest wrapper asks up to 100
# times in a row before it gives up, and a pause at each held a result back 50 s (measured).
WAIT_S = 0.5


class _WaitingIsNoFailure(logging.Filter):
    """Drops InsistSuggest's "Unable to sample a new trial … even after 100 attempts" when the
    last ask was told to wait for results: that is the batch working, not a failure, and it
    filled the hunt log once a second. Any other time (a space with no new point) it shows."""

    waiting = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.waiting and record.getMessage().startswith("Unable to sample"))


_WAITING = _WaitingIsNoFailure()
logging.getLogger("orion.core.worker.algo_wrappers.insist_suggest").addFilter(_WAITING)


def distribution(dimension: Any) -> BaseDistribution:
    """The Optuna distribution of one Orion dimension (its prior, without Orion's wrappers)."""
    dimension = getattr(dimension, "original_dimension", dimension)
    if dimension.type == "fidelity":
        raise ValueError(
            f"optuna: dimension {dimension.name!r} is a fidelity; Optuna's samplers train every "
            "trial at one budget (use ashareseeded or hyperbandreseeded for a fidelity)"
        )
    prior = dimension.prior_name
    if prior == "choices":
        return CategoricalDistribution(tuple(dimension.categories))
    low, high = dimension.interval()
    if prior in ("uniform", "reciprocal"):
        return FloatDistribution(float(low), float(high), log=prior == "reciprocal")
    if prior in ("int_uniform", "int_reciprocal"):
        return IntDistribution(int(low), int(high), log=prior == "int_reciprocal")
    raise ValueError(
        f"optuna: dimension {dimension.name!r} has prior {prior!r}; supported: uniform, "
        "loguniform, uniform/loguniform with discrete=True, choices"
    )


class Optuna(BaseAlgorithm):
    """An Optuna sampler proposing the trials of an Orion hunt (module docstring)."""

    # The space as the user wrote it: Optuna handles log scales and categories itself.
    requires_type = None
    requires_dist = None
    requires_shape = None

    def __init__(
        self,
        space: Space,
        seed: Seed = None,
        sampler: str = "TPESampler",
        options: dict[str, Any] | None = None,
        batch: int = 1,
    ):
        samplers = {
            name: value
            for name, value in vars(optuna.samplers).items()
            if isinstance(value, type) and issubclass(value, optuna.samplers.BaseSampler)
        }
        if sampler not in samplers:
            raise ValueError(
                f"optuna: no sampler {sampler!r} in optuna.samplers; one of {sorted(samplers)}"
            )
        if options and "seed" in options:
            raise ValueError("optuna: give the seed as the algorithm's `seed`, not in `options`")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"optuna: batch must be a positive integer, got {batch!r}")
        super().__init__(
            space, seed=seed, sampler=sampler, options=dict(options or {}), batch=batch
        )
        self.distributions = {name: distribution(dim) for name, dim in space.items()}
        # Every sampler of optuna.samplers but the base class takes `seed` (BaseSampler: none).
        self._sampler_class: Callable[..., optuna.samplers.BaseSampler] = samplers[sampler]
        self._paused = False  # since Orion last loaded this algorithm (WAIT_S)

    def set_state(self, state_dict: dict) -> None:
        """Orion loads the algorithm from its storage before every step: a new step may pause."""
        super().set_state(state_dict)
        self._paused = False

    def seed_rng(self, seed: Seed) -> None:
        """Keep the seed: every suggestion's sampler is seeded from it (module docstring)."""
        self.seed = seed

    def _sampler_seed(self, number: int, attempt: int) -> int | None:
        """From (seed, the new trial's number, attempt): a restored algorithm derives the same."""
        if self.seed is None:
            return None
        entropy = [self.seed] if isinstance(self.seed, int) else list(self.seed)
        sequence = numpy.random.SeedSequence([*entropy, number, attempt])
        return int(sequence.generate_state(1)[0])

    def _frozen(self, trial: Trial, known: bool) -> FrozenTrial:
        """``trial`` as the sampler sees it; not ``known``: running, whatever its state."""
        params = {name: trial.params[name] for name in self.distributions}
        state = _STATES.get(trial.status, TrialState.RUNNING) if known else TrialState.RUNNING
        # Orion completes a trial only with its objective (else it is broken).
        value = trial.objective.value if state == TrialState.COMPLETE else None
        return create_trial(
            params=params, distributions=self.distributions, state=state, value=value
        )

    def _study(self, trials: list[Trial], attempt: int) -> optuna.Study:
        """The study that proposes trial ``len(trials)``: results up to ``batch`` places back."""
        number = len(trials)
        sampler = self._sampler_class(seed=self._sampler_seed(number, attempt), **self.options)
        study = optuna.create_study(sampler=sampler, direction="minimize")
        known = number - self.batch
        study.add_trials([self._frozen(t, i <= known) for i, t in enumerate(trials)])
        return study

    def _blocked(self, trials: list[Trial]) -> bool:
        """Whether trial ``len(trials)`` must wait: a result it is proposed from is not in yet,
        or ``max_trials`` trials that did not break are proposed already."""
        known = len(trials) - self.batch
        if any(t.status not in _STATES for t in trials[: max(0, known + 1)]):
            return True
        proposed = sum(t.status != "broken" for t in trials)
        return self.max_trials is not None and proposed >= self.max_trials

    def suggest(self, num: int) -> list[Trial]:
        """Up to ``num`` new trials, one Optuna ``ask`` each; none while they must wait (module
        docstring). A proposal Orion already has (a sampler may repeat a point of a small
        space) is asked again, at most 100 times."""
        suggested: list[Trial] = []
        retries = 0
        _WAITING.waiting = False
        while len(suggested) < num and not self.is_done and retries < 100:
            trials = list(self.registry)
            _WAITING.waiting = self._blocked(trials)
            if _WAITING.waiting:
                if not suggested and not self._paused:
                    time.sleep(WAIT_S)
                    self._paused = True
                break
            asked = self._study(trials, retries).ask(self.distributions)
            trial = dict_to_trial(dict(asked.params), self.space)
            if self.has_suggested(trial):
                retries += 1
                continue
            self.register(trial)
            suggested.append(trial)
            retries = 0
        return suggested

"""Orion 0.2.7's Hyperband and ASHA with a different random seed for every repetition.

Registered with Orion through its algorithm plugin entry point (group ``BaseAlgorithm`` in
pyproject.toml), so a hunt selects them by name like Orion's own algorithms::

    experiment:
      algorithm:
        hyperbandreseeded:
          seed: 1

Orion names an algorithm after its class, lower-cased (``orion.core.utils.get_all_types``):
``HyperbandReseeded`` is ``hyperbandreseeded``, ``ASHAReseeded`` is ``ashareseeded``. They take
exactly the options of ``hyperband`` and ``asha``.

What upstream gets wrong (orion/algo/hyperband/hyperband.py, Orion 0.2.7):

- ``Hyperband.append_brackets`` (lines 431-434) starts a new repetition and then calls
  ``self.seed_brackets(self.seed)``. ``Hyperband.seed_brackets`` (lines 282-285) draws the
  bracket seeds from a fresh ``RandomState(seed)`` over ``self.brackets[::-1]``, so the new
  repetition's brackets get exactly the seeds the first repetition's brackets had (and every
  older bracket is re-seeded with another seed, which throws its sample buffer away). A
  bracket's candidates are ``space.sample(10 * n, seed=bracket seed)``
  (``HyperbandBracket.get_sample``, lines 569-577), so repetition r walks the same candidate
  list as repetition 1; ``Hyperband.sample_from_bracket`` (lines 228-271) refuses the ones
  already suggested and takes the next. After 10 repetitions the list is used up, ``get_sample``
  redraws the same list, every candidate is refused, and the algorithm proposes nothing more
  while ``is_done`` stays False: ``orion hunt`` idles until ``worker.idle_timeout`` and ends
  unfinished.
- ``Hyperband.set_state`` (lines 302-318), which Orion runs before every suggest and observe of
  a hunt, rebuilds the brackets with ``append_brackets`` before restoring their rungs, so
  ``create_brackets`` (lines 436-440, ``self.executed_times + 1``) numbers every rebuilt bracket
  repetition 1, and ``HyperbandBracket.state_dict`` (lines 532-537) does not store the number.
  After a restore ``executed_times`` is at most 1, so a repetition index read from the brackets
  is wrong and ``repetitions=N`` (N > 1) never ends a hunt.

ASHA (orion/algo/asha/asha.py, ``class ASHA(Hyperband)``, line 95) overrides neither method, so it
has both faults; its old brackets keep sampling after a new repetition starts, and upstream
re-seeds them at every ``append_brackets``.

The correction, shared by both classes: the brackets of repetition r are numbered r from their
position in ``self.brackets`` (whole repetitions are always appended in order), and seeded once,
when created, from the algorithm's seed and r. Repetition 1 keeps upstream's seeds, so the first
repetition proposes exactly what Orion's own class proposes; repetition r > 1 draws its bracket
seeds from ``SeedSequence(seed, spawn_key=(r,))``. The seeds depend only on (seed, r, position):
a restored algorithm derives the same ones, so a seeded hunt replays. ``seed=None`` stays
unseeded (fresh entropy), as upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy
from orion.algo.asha import ASHA
from orion.algo.hyperband import Hyperband

Seed = int | Sequence[int] | None

# HyperbandBracket seeds are three draws of randint(0, 1000000), as in Hyperband.seed_brackets.
_SEED_HIGH = 1000000


class _SeedEachRepetition:
    """Mixin over ``Hyperband`` (or a subclass): one seed per (algorithm seed, repetition)."""

    brackets: list[Any]
    budgets: list[Any]
    create_bracket: Callable[..., Any]  # Hyperband's, which this is mixed into
    seed: Seed

    def _bracket_seeds(self, seed: Seed, repetition: int) -> list[tuple[int, ...]]:
        """The seeds of repetition ``repetition``'s brackets, in bracket order."""
        if repetition == 1:
            # Upstream's draws: the first repetition proposes what Orion's own class does.
            rng = numpy.random.RandomState(seed)
        else:
            sequence = numpy.random.SeedSequence(seed, spawn_key=(repetition,))
            rng = numpy.random.RandomState(numpy.random.MT19937(sequence))
        draws = [
            tuple(int(value) for value in rng.randint(0, _SEED_HIGH, size=3)) for _ in self.budgets
        ]
        return draws[::-1]  # upstream hands the draws out over the brackets in reverse

    def seed_brackets(self, seed: Seed) -> None:
        """Seed every bracket from ``seed`` and its repetition (replaces upstream's, which gives
        every repetition the first one's seeds)."""
        per_repetition = len(self.budgets)
        if not per_repetition:
            return
        for start in range(0, len(self.brackets), per_repetition):
            repetition = start // per_repetition + 1
            brackets = self.brackets[start : start + per_repetition]
            for bracket, bracket_seed in zip(
                brackets, self._bracket_seeds(seed, repetition), strict=True
            ):
                bracket.seed_rng(bracket_seed)

    def append_brackets(self) -> None:
        """Start the next repetition: its brackets numbered by position and seeded from
        (seed, repetition); the older brackets keep their seeds and sample buffers."""
        repetition = len(self.brackets) // len(self.budgets) + 1
        new = [self.create_bracket(budgets, repetition) for budgets in self.budgets]
        for bracket, bracket_seed in zip(
            new, self._bracket_seeds(self.seed, repetition), strict=True
        ):
            bracket.seed_rng(bracket_seed)
        self.brackets = self.brackets + new


class HyperbandReseeded(_SeedEachRepetition, Hyperband):
    """Orion 0.2.7's ``hyperband`` with a distinct, deterministic seed for every repetition.

    Corrects ``Hyperband.append_brackets`` / ``Hyperband.seed_brackets`` and the repetition
    numbering after ``Hyperband.set_state`` (orion/algo/hyperband/hyperband.py); see the module
    docstring for the lines and what they do. Options as ``hyperband``.
    """


class ASHAReseeded(_SeedEachRepetition, ASHA):
    """Orion 0.2.7's ``asha`` with a distinct, deterministic seed for every repetition.

    ``ASHA`` subclasses ``Hyperband`` and inherits ``append_brackets`` / ``seed_brackets``
    (orion/algo/asha/asha.py, line 95), so it has the same faults; see the module docstring.
    Options as ``asha``.
    """

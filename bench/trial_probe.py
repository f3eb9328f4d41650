"""Run a recipe script as ``python SCRIPT ARGS…`` would, recording when its training runs.

    BENCH_STAMPS=stamps.json python bench/trial_probe.py recipes/speaker_id/train.py train.yaml …

The recipe module is loaded from its file and its own ``main(argv)`` is called, so imports,
YAML, data loading, training, reporting and the exit status are the recipe's. Two of its
functions are wrapped to take wall-clock stamps (``time.time()``, comparable with the parent's
clock): ``Experiment.fit`` (all epochs, training and validation) and ``train_epoch`` (the
training pass of one epoch). The stamps are written to ``$BENCH_STAMPS`` as JSON when ``main``
returns, so the benchmark can split a trial's wall time into start-up (process start to the
first epoch), training, and reporting (end of training to process exit).

It also registers ``--hpopt_mode orion_client``: SpeechBrain's Orion reporter, which imports
``orion.client`` when it is created and reports through ``orion.client.report_objective``, the
baseline that hpopt's own result file replaces.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import hpopt as hp
from hpopt.reporters import OrionReporter


@hp.hpopt_mode("orion_client")
class SpeechBrainOrionReporter(OrionReporter):
    """``speechbrain.utils.hpopt.OrionReporter``: orion.client imported at creation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import orion.client

        self.orion_client = orion.client

    def report_objective(self, result: dict[str, Any]) -> None:
        self.orion_client.report_objective(self.minimised_objective(result))


def load_recipe(script: Path) -> Any:
    """Import the recipe file as a module, its folder first on sys.path as for ``python SCRIPT``."""
    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(f"{script.stem}_under_probe", script)
    if spec is None or spec.loader is None:
        raise SystemExit(f"trial_probe: cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def instrument(recipe: Any, stamps: dict[str, Any]) -> None:
    """Wrap ``Experiment.fit`` and ``train_epoch`` so that they record their wall-clock spans."""
    fit, train_epoch = recipe.Experiment.fit, recipe.train_epoch
    stamps["train_epochs"] = []

    def timed_fit(self: Any, log: Any) -> Any:
        stamps["fit_start"] = time.time()
        history = fit(self, log)
        stamps["fit_end"] = time.time()
        stamps["epochs"] = len(history)
        stamps["train_utterances_per_epoch"] = len(self.splits["train"].frames)
        stamps["threads"] = self.threads
        return history

    def timed_train_epoch(*args: Any, **kwargs: Any) -> float:
        started = time.time()
        loss = train_epoch(*args, **kwargs)
        stamps["train_epochs"].append([started, time.time()])
        return loss

    recipe.Experiment.fit = timed_fit
    recipe.train_epoch = timed_train_epoch


def main() -> int:
    if len(sys.argv) < 2 or "BENCH_STAMPS" not in os.environ:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    script = Path(sys.argv[1]).resolve()
    stamps: dict[str, Any] = {}
    recipe = load_recipe(script)
    stamps["imports_done"] = time.time()
    instrument(recipe, stamps)
    sys.argv = [str(script), *sys.argv[2:]]
    code = recipe.main(sys.argv[1:])
    stamps["main_end"] = time.time()
    Path(os.environ["BENCH_STAMPS"]).write_text(json.dumps(stamps) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``import hpopt as hp``: the SpeechBrain-compatible bridge between a recipe and Orion.

A SpeechBrain recipe written for ``speechbrain.utils.hpopt`` works after changing its import
line::

    import hpopt as hp

    with hp.hyperparameter_optimization(objective_key="error") as hp_ctx:
        hparams_file, run_opts, overrides = hp_ctx.parse_arguments(sys.argv[1:])
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)  # overrides is a dict
        ...
        hp.report_result(valid_stats)  # the last one reported is sent at the end
        if not hp_ctx.enabled:
            ...  # e.g. the test evaluation, skipped in trials

This package imports only the standard library at import time (a stdlib-only launcher client
imports it); HyperPyYAML and torch are imported inside ``parse_arguments`` when needed. The
names below are re-exported lazily (PEP 562): ``import hpopt`` alone loads none of the
submodules, because every warm-launcher trial start (``import warmexec.client``) would
otherwise pay ~50 ms for hpopt.context, hpopt.reporters and hpopt.arguments.
Behaviour and differences from SpeechBrain: :mod:`hpopt.context`, :mod:`hpopt.arguments`,
:mod:`hpopt.reporters`, :mod:`hpopt.gpu_lease`.
"""

import importlib
from typing import TYPE_CHECKING

# Public name (all of __all__) -> the submodule that defines it.
_EXPORTS = {
    "DEFAULT_TRIAL_ID": "hpopt.context",
    "GenericReporter": "hpopt.reporters",
    "HpoptError": "hpopt.errors",
    "HyperparameterOptimizationContext": "hpopt.context",
    "OrionReporter": "hpopt.reporters",
    "Reporter": "hpopt.reporters",
    "get_rank": "hpopt.distributed",
    "get_reporter": "hpopt.reporters",
    "get_trial_id": "hpopt.context",
    "hpopt_mode": "hpopt.reporters",
    "hyperparameter_optimization": "hpopt.context",
    "is_main_process": "hpopt.distributed",
    "report_result": "hpopt.context",
}

__all__ = [
    "DEFAULT_TRIAL_ID",
    "GenericReporter",
    "HpoptError",
    "HyperparameterOptimizationContext",
    "OrionReporter",
    "Reporter",
    "get_rank",
    "get_reporter",
    "get_trial_id",
    "hpopt_mode",
    "hyperparameter_optimization",
    "is_main_process",
    "report_result",
]


def __getattr__(name: str) -> object:
    """Import the defining submodule on first use, then cache the name in this module."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; never executed
    from hpopt.context import (
        DEFAULT_TRIAL_ID,
        HyperparameterOptimizationContext,
        get_trial_id,
        hyperparameter_optimization,
        report_result,
    )
    from hpopt.distributed import get_rank, is_main_process
    from hpopt.errors import HpoptError
    from hpopt.reporters import (
        GenericReporter,
        OrionReporter,
        Reporter,
        get_reporter,
        hpopt_mode,
    )

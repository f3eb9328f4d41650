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

SpeechBrain's public names, with its signatures: ``hyperparameter_optimization(*args,
**kwargs)``, ``HyperparameterOptimizationContext(reporter_args=None, reporter_kwargs=None)``
(``.parse_arguments(arg_list, pass_hpopt_args=None, pass_trial_id=True)``, ``.reporter``,
``.result``, ``.enabled``), ``report_result(result)``, ``get_trial_id()``,
``hpopt_mode(mode)``, ``get_reporter(mode, *args, **kwargs)``,
``HyperparameterOptimizationReporter(objective_key)``,
``GenericHyperparameterOptimizationReporter(reference_date=None, output=None, *args,
**kwargs)``, ``OrionHyperparameterOptimizationReporter(objective_key)`` (``.objective_key``,
``.is_available``, ``.trial_id``, ``.report_objective(result)``), and the constants
``MODULE_ORION``, ``FORMAT_TIMESTAMP``, ``DEFAULT_TRIAL_ID``, ``DEFAULT_REPORTER``,
``ORION_TRIAL_ID_ENV``, ``KEY_HPOPT``, ``KEY_HPOPT_MODE``, ``KEY_TRIAL_ID``, ``HPOPT_KEYS``.
``Reporter``, ``GenericReporter`` and ``OrionReporter`` are older short names of the reporters.

Deliberate differences from SpeechBrain:

* a trial that reports nothing, or whose last result lacks the objective key or has a NaN/inf
  or non-numeric objective, fails with :class:`HpoptError` (Orion: broken) instead of reporting
  0.0 or crashing with ``KeyError``; so does an unknown ``--hpopt_mode``, a reporter whose
  ``report_objective`` returns ``NotImplemented``, and ``report_result`` of a non-dict;
* ``--hpopt PATH`` that does not exist is an error; ``--hpopt_mode`` alone turns hpopt mode
  on; ``hpopt``/``hpopt_mode`` (and ``trial_id`` with ``pass_trial_id=False``) are removed from
  the overrides in every path, so the recipe YAML need not declare them; ``trial_id`` is passed
  in hpopt mode even without an hpopt file; ``run_opts`` is a dict;
* outside hpopt mode nothing is printed or reported at exit (SpeechBrain prints JSON);
* reporters take a keyword-only ``mode="max"`` that reports ``-value`` (Orion only minimises),
  so ``get_reporter``'s own ``mode`` (the ``--hpopt_mode`` name) is positional-only;
* the Orion reporter writes ``$ORION_RESULTS_PATH`` itself, never importing ``orion.client``
  (``MODULE_ORION`` is kept only as a name), and is available when that variable is set;
* only rank 0 of a torchrun/DDP trial reports, and all ranks share one trial id; the generic
  trial id is SpeechBrain's timestamp only for an explicit ``reference_date``;
* the generic JSON ends with a newline; blocks cannot be nested.

How the command line is parsed (and where that differs from ``speechbrain.parse_arguments``):
:mod:`hpopt.arguments`; GPUs for concurrent trials: :mod:`hpopt.gpu_lease`.

This package imports only the standard library at import time (a stdlib-only launcher client
imports it); HyperPyYAML and torch are imported inside ``parse_arguments`` when needed. The
names below are re-exported lazily (PEP 562): ``import hpopt`` alone loads none of the
submodules, because every warm-launcher trial start (``import warmexec.client``) would
otherwise pay ~50 ms for hpopt.context, hpopt.reporters and hpopt.arguments.
"""

import importlib
from typing import TYPE_CHECKING

# Public name (all of __all__) -> the submodule that defines it.
_EXPORTS = {
    "DEFAULT_REPORTER": "hpopt.reporters",
    "DEFAULT_TRIAL_ID": "hpopt.trial_id",
    "FORMAT_TIMESTAMP": "hpopt.trial_id",
    "GenericHyperparameterOptimizationReporter": "hpopt.reporters",
    "GenericReporter": "hpopt.reporters",
    "HPOPT_KEYS": "hpopt.context",
    "HpoptError": "hpopt.errors",
    "HyperparameterOptimizationContext": "hpopt.context",
    "HyperparameterOptimizationReporter": "hpopt.reporters",
    "KEY_HPOPT": "hpopt.context",
    "KEY_HPOPT_MODE": "hpopt.context",
    "KEY_TRIAL_ID": "hpopt.context",
    "MODULE_ORION": "hpopt.reporters",
    "ORION_TRIAL_ID_ENV": "hpopt.trial_id",
    "OrionHyperparameterOptimizationReporter": "hpopt.reporters",
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

# A literal list (not sorted(_EXPORTS)) so that linters and type checkers can read it.
__all__ = [
    "DEFAULT_REPORTER",
    "DEFAULT_TRIAL_ID",
    "FORMAT_TIMESTAMP",
    "GenericHyperparameterOptimizationReporter",
    "GenericReporter",
    "HPOPT_KEYS",
    "HpoptError",
    "HyperparameterOptimizationContext",
    "HyperparameterOptimizationReporter",
    "KEY_HPOPT",
    "KEY_HPOPT_MODE",
    "KEY_TRIAL_ID",
    "MODULE_ORION",
    "ORION_TRIAL_ID_ENV",
    "OrionHyperparameterOptimizationReporter",
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
        HPOPT_KEYS,
        KEY_HPOPT,
        KEY_HPOPT_MODE,
        KEY_TRIAL_ID,
        HyperparameterOptimizationContext,
        get_trial_id,
        hyperparameter_optimization,
        report_result,
    )
    from hpopt.distributed import get_rank, is_main_process
    from hpopt.errors import HpoptError
    from hpopt.reporters import (
        DEFAULT_REPORTER,
        MODULE_ORION,
        GenericHyperparameterOptimizationReporter,
        GenericReporter,
        HyperparameterOptimizationReporter,
        OrionHyperparameterOptimizationReporter,
        OrionReporter,
        Reporter,
        get_reporter,
        hpopt_mode,
    )
    from hpopt.trial_id import DEFAULT_TRIAL_ID, FORMAT_TIMESTAMP, ORION_TRIAL_ID_ENV

"""The ``with hp.hyperparameter_optimization(...) as hp_ctx:`` block a recipe runs in.

Same names and flow as ``speechbrain.utils.hpopt``: the arguments of
``hyperparameter_optimization`` are kept for the reporter, which is built only in hpopt mode;
the command line is parsed inside the block; ``hp.report_result`` may be called as often as
you like and the LAST result is sent once, at a clean exit. Where SpeechBrain fails silently
this raises :class:`~hpopt.errors.HpoptError`, so the process exits non-zero and Orion marks the
trial ``broken``; the list of differences is in the :mod:`hpopt` package docstring.

hpopt mode is on when ``--hpopt`` is truthy (an hpopt YAML path, or ``True``), or when only
``--hpopt_mode`` is given.
"""

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from hpopt.arguments import parse_command_line, resolve_device
from hpopt.distributed import is_main_process
from hpopt.errors import HpoptError
from hpopt.reporters import (
    DEFAULT_REPORTER,
    HyperparameterOptimizationReporter,
    get_reporter,
    objective_value,
    require_objective_key,
)
from hpopt.trial_id import DEFAULT_TRIAL_ID, generic_trial_id

logger = logging.getLogger("hpopt")

KEY_HPOPT, KEY_HPOPT_MODE, KEY_TRIAL_ID = "hpopt", "hpopt_mode", "trial_id"
# The switches, removed from the overrides so the recipe YAML need not declare them.
HPOPT_KEYS = [KEY_HPOPT, KEY_HPOPT_MODE]

_active: "HyperparameterOptimizationContext | None" = None


def _hpopt_requested(overrides: Mapping[str, Any]) -> bool:
    if KEY_HPOPT in overrides:
        return bool(overrides[KEY_HPOPT])
    return overrides.get(KEY_HPOPT_MODE) is not None


def _load_hpopt_file(path: Path, trial_id: str) -> dict[str, Any]:
    """Load the hpopt YAML with ``trial_id`` defined, so ``!ref <trial_id>`` resolves."""
    from hyperpyyaml import load_hyperpyyaml

    with path.open(encoding="utf-8") as stream:
        text = stream.read()
    if not text.strip():
        return {}
    try:
        values = load_hyperpyyaml(
            text, overrides={KEY_TRIAL_ID: trial_id}, overrides_must_match=False
        )
    except Exception as error:  # HyperPyYAML raises YAML, KeyError, ValueError, ImportError...
        raise HpoptError(f"cannot load hpopt file {path}: {error}") from error
    if not isinstance(values, dict):
        raise HpoptError(f"hpopt file {path} must be a YAML mapping of key: value overrides")
    return values


class HyperparameterOptimizationContext:
    """State of one recipe run: whether hpopt is on, its reporter, and the last result.

    ``reporter_args`` and ``reporter_kwargs`` are what the reporter is built with in hpopt mode.
    ``result`` starts as ``None``, not SpeechBrain's ``{"objective": 0.0}``, so that a trial
    that never reports fails instead of sending 0.0.
    """

    def __init__(
        self,
        reporter_args: Sequence[Any] | None = None,
        reporter_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.reporter_args = reporter_args or []
        self.reporter_kwargs = reporter_kwargs or {}
        self.enabled = False
        self.reporter: HyperparameterOptimizationReporter | None = None
        self.result: dict[str, Any] | None = None

    @property
    def trial_id(self) -> str:
        """The reporter's id in hpopt mode, else the generic (process-stable) id."""
        return self.reporter.trial_id if self.reporter is not None else generic_trial_id()

    def parse_arguments(
        self,
        arg_list: Sequence[str],
        pass_hpopt_args: Sequence[str] | None = None,
        pass_trial_id: bool = True,
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """Return ``(hparams_file, run_opts, overrides)`` for ``load_hyperpyyaml(fin, overrides)``.

        See :mod:`hpopt.arguments` for the run options. In hpopt mode the reporter for
        ``--hpopt_mode`` (default ``generic``) is built, and with ``--hpopt FILE`` the file's keys
        are merged under the command-line overrides (the command line wins), with ``trial_id``
        defined for ``!ref <trial_id>``. ``trial_id`` is put into the overrides in hpopt mode
        unless ``pass_trial_id=False``; ``hpopt`` and ``hpopt_mode`` are always removed unless
        listed in ``pass_hpopt_args``. Finally the GPU lease is taken (see
        :mod:`hpopt.gpu_lease`) and ``run_opts['device']`` resolved.
        """
        hparams_file, run_opts, overrides = parse_command_line(arg_list)
        self.enabled = _hpopt_requested(overrides)
        if self.enabled:
            hpopt_value = overrides.get(KEY_HPOPT)
            hpopt_file = Path(hpopt_value) if isinstance(hpopt_value, str) else None
            if hpopt_file is not None and not hpopt_file.is_file():
                raise HpoptError(
                    f"--hpopt {hpopt_value}: no such file (give an hpopt YAML file, "
                    "or --hpopt True for hpopt mode without one)"
                )
            self.reporter = get_reporter(
                overrides.get(KEY_HPOPT_MODE) or DEFAULT_REPORTER,
                *self.reporter_args,
                **self.reporter_kwargs,
            )
            if hpopt_file is not None:
                overrides = {**_load_hpopt_file(hpopt_file, self.trial_id), **overrides}
            if pass_trial_id:
                overrides.setdefault(KEY_TRIAL_ID, self.trial_id)
        elif os.environ.get("ORION_RESULTS_PATH") and is_main_process():
            logger.warning(
                "hpopt: running under orion hunt without --hpopt: no result will be reported "
                "and Orion will mark this trial broken"
            )
        kept = set(pass_hpopt_args or ())
        for key in HPOPT_KEYS + ([] if pass_trial_id else [KEY_TRIAL_ID]):
            if key not in kept:
                overrides.pop(key, None)

        from hpopt.gpu_lease import lease_from_environment

        lease_from_environment()
        resolve_device(run_opts)
        if self.reporter is not None and is_main_process():
            logger.info(
                "hpopt: %s, trial_id %s, objective %r",
                type(self.reporter).__name__,
                self.trial_id,
                self.reporter.objective_key,
            )
        return hparams_file, run_opts, overrides

    def record(self, result: Mapping[str, Any]) -> None:
        """Keep a copy of ``result`` as the one to send; a missing objective key fails now."""
        if not isinstance(result, Mapping):
            raise HpoptError(f"hp.report_result expects a dict of metrics, got {result!r}")
        if self.reporter is not None:
            require_objective_key(result, self.reporter.objective_key)
        self.result = dict(result)

    def __enter__(self) -> "HyperparameterOptimizationContext":
        global _active
        if _active is not None:
            raise HpoptError("hp.hyperparameter_optimization() blocks cannot be nested")
        _active = self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        global _active
        try:
            if exc_type is None and self.reporter is not None and is_main_process():
                self._send(self.reporter)
        finally:
            _active = None

    def _send(self, reporter: HyperparameterOptimizationReporter) -> None:
        if self.result is None:
            raise HpoptError(
                "the hpopt block ended without hp.report_result(...): there is no "
                f"{reporter.objective_key!r} to report, so this trial fails (Orion: broken) "
                "instead of reporting a made-up objective"
            )
        objective_value(self.result, reporter.objective_key)  # checked for custom reporters too
        if reporter.report_objective(self.result) is NotImplemented:
            raise HpoptError(
                f"{type(reporter).__name__}.report_objective is not implemented, so nothing "
                "was reported and this trial fails"
            )


def hyperparameter_optimization(*args: Any, **kwargs: Any) -> HyperparameterOptimizationContext:
    """Open an hpopt block; every argument is kept for the reporter built in hpopt mode.

    Typically ``objective_key="error"``; ``mode="max"`` makes the reporter send ``-value``
    because Orion only minimises; ``output=`` is where the generic reporter writes (default
    stdout). As in SpeechBrain, positional arguments fill the generic reporter's
    ``reference_date`` and ``output`` first, so pass ``objective_key`` by keyword.
    """
    return HyperparameterOptimizationContext(args, kwargs)


def report_result(result: Mapping[str, Any]) -> None:
    """Remember ``result``; the last one is sent at the end of the block (no-op outside one)."""
    if _active is not None:
        _active.record(result)


def get_trial_id() -> str:
    """The active block's trial id; ``'hpopt'`` outside a block, as in SpeechBrain."""
    return _active.trial_id if _active is not None else DEFAULT_TRIAL_ID

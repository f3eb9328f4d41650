"""The ``with hp.hyperparameter_optimization(...) as hp_ctx:`` block a recipe runs in.

Same names and flow as ``speechbrain.utils.hpopt`` (parse the command line inside the block,
``hp.report_result`` as often as you like, the LAST result is sent once at a clean exit), with
SpeechBrain's silent failures turned into errors:

* leaving the block in hpopt mode without a result, or with the objective key missing, NaN or
  not a number, raises :class:`~hpopt.errors.HpoptError` — the process exits non-zero and Orion
  marks the trial ``broken`` instead of recording a fake 0.0;
* ``hpopt``/``hpopt_mode`` (and ``trial_id`` with ``pass_trial_id=False``) are removed from the
  overrides in every path, so a recipe YAML does not have to declare them;
* ``--hpopt PATH`` that does not exist is an error naming the path (SpeechBrain ignores it);
* only rank 0 of a torchrun/DDP trial reports, logs and prints; all ranks share one trial id;
* outside hpopt mode nothing is printed or reported at exit (SpeechBrain always prints JSON).

hpopt mode is on when ``--hpopt`` is truthy (an hpopt YAML path, or ``True``), or when only
``--hpopt_mode`` is given. ``--hpopt_mode orion`` outside ``orion hunt`` (``ORION_RESULTS_PATH``
unset) falls back to the generic reporter with a warning, as SpeechBrain does, so the same
command can be tried by hand.
"""

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO

from hpopt.arguments import parse_command_line, resolve_device
from hpopt.distributed import is_main_process
from hpopt.errors import HpoptError
from hpopt.reporters import Reporter, get_reporter, require_objective_key
from hpopt.trial_id import generic_trial_id

logger = logging.getLogger("hpopt")

DEFAULT_TRIAL_ID = "hpopt"
KEY_HPOPT, KEY_HPOPT_MODE, KEY_TRIAL_ID = "hpopt", "hpopt_mode", "trial_id"

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
    """State of one recipe run: whether hpopt is on, its reporter, and the last result."""

    def __init__(
        self,
        objective_key: str = "objective",
        mode: Literal["min", "max"] = "min",
        output: TextIO | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise HpoptError(f"mode must be 'min' or 'max', got {mode!r}")
        self.objective_key = objective_key
        self.maximize = mode == "max"
        self.output = output
        self.enabled = False
        self.reporter: Reporter | None = None
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

        See :mod:`hpopt.arguments` for the run options. With ``--hpopt FILE`` the file's keys
        are merged under the command-line overrides (the command line wins). ``trial_id`` is put
        into the overrides in hpopt mode unless ``pass_trial_id=False``; keys listed in
        ``pass_hpopt_args`` are kept. Finally the GPU lease is taken (see
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
                overrides.get(KEY_HPOPT_MODE) or "generic",
                objective_key=self.objective_key,
                maximize=self.maximize,
                output=self.output,
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
        removed = [KEY_HPOPT, KEY_HPOPT_MODE] + ([] if pass_trial_id else [KEY_TRIAL_ID])
        for key in removed:
            if key not in kept:
                overrides.pop(key, None)

        from hpopt.gpu_lease import lease_from_environment

        lease_from_environment()
        resolve_device(run_opts)
        if self.enabled and is_main_process():
            logger.info(
                "hpopt: %s reporter, trial_id %s, objective %r (%s)",
                type(self.reporter).__name__,
                self.trial_id,
                self.objective_key,
                "maximised" if self.maximize else "minimised",
            )
        return hparams_file, run_opts, overrides

    def record(self, result: Mapping[str, Any]) -> None:
        """Keep a copy of ``result`` as the one to send; a missing objective key fails now."""
        if not isinstance(result, Mapping):
            raise HpoptError(f"hp.report_result expects a dict of metrics, got {result!r}")
        if self.enabled:
            require_objective_key(result, self.objective_key)
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
            if exc_type is None and self.enabled and is_main_process():
                self._send()
        finally:
            _active = None

    def _send(self) -> None:
        if self.result is None:
            raise HpoptError(
                "the hpopt block ended without hp.report_result(...): there is no "
                f"{self.objective_key!r} to report, so this trial fails (Orion: broken) "
                "instead of reporting a made-up objective"
            )
        assert self.reporter is not None  # set together with enabled
        self.reporter.report_objective(self.result)


def hyperparameter_optimization(
    objective_key: str = "objective",
    mode: Literal["min", "max"] = "min",
    output: TextIO | None = None,
) -> HyperparameterOptimizationContext:
    """Open an hpopt block; ``mode="max"`` reports ``-value`` because Orion only minimises.

    ``output`` is where the generic reporter writes its JSON line (default: stdout).
    """
    return HyperparameterOptimizationContext(objective_key, mode, output)


def report_result(result: Mapping[str, Any]) -> None:
    """Remember ``result``; the last one is sent at the end of the block (no-op outside one)."""
    if _active is not None:
        _active.record(result)


def get_trial_id() -> str:
    """The active block's trial id; ``'hpopt'`` outside a block, as in SpeechBrain."""
    return _active.trial_id if _active is not None else DEFAULT_TRIAL_ID

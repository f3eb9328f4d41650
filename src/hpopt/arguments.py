"""Split a recipe command line into the hparams file, SpeechBrain run options and YAML overrides.

This is ``speechbrain.parse_arguments`` (SpeechBrain 1.x) without SpeechBrain, with its traps
fixed: no argparse prefix matching (``--dev`` is not ``--device``), ``--key=a=b`` keeps its
``=``, a value-less key or a stray token is an error naming the token instead of silently
producing broken YAML, and ``--device cuda:10`` survives ``LOCAL_RANK``.

Command line: ``HPARAMS_FILE [RUN OPTIONS] [--key value | --key=value | -k value ...]``

Run options (returned in the ``run_opts`` dict under the names below; like SpeechBrain 1.x the
switches and the options with a default are always present, the others only when given):

==============================================  =========================================
option                                          value in ``run_opts``
==============================================  =========================================
``--device DEV``                                str; default ``cuda:0`` when torch sees a
                                                GPU, else ``cpu`` (resolved by
                                                :func:`resolve_device`); under torchrun a
                                                ``cuda[:N]`` device becomes ``cuda:$LOCAL_RANK``
``--data_parallel_backend``                     bool switch, default False
``--distributed_backend {nccl,gloo,mpi}``       str, default ``nccl``
``--find_unused_parameters``                    bool switch
``--local_rank N`` / ``--local-rank N``         int (injected by torch.distributed.launch)
``--debug``                                     bool switch
``--debug_batches N``, ``--debug_epochs N``     int, default 2 each
``--debug_persistently``                        bool switch
``--test_only``                                 bool switch
``--log_config FILE``                           str
``--precision``, ``--eval_precision``           one of ``fp32``, ``fp16``, ``bf16``
``--auto_mix_prec``, ``--bfloat16_mix_prec``    bool switch (deprecated in SpeechBrain)
``--max_grad_norm X``                           float
``--skip_nonfinite_grads``                      bool switch
``--nonfinite_patience N``                      int
``--noprogressbar``                             bool switch (present only when given)
``--tqdm_colored_bar``                          bool switch
``--ckpt_interval_minutes X``                   float
``--ckpt_interval_steps N``                     int
``--grad_accumulation_factor N``                int
``--optimizer_step_limit N``                    int
``--jit``, ``--compile``                        bool switch
``--jit_module_keys K ...``                     list of str
``--compile_module_keys K ...``                 list of str
``--compile_mode MODE``                         str
``--compile_using_fullgraph BOOL``              bool (``true``/``false``)
``--compile_using_dynamic_shape_tracing BOOL``  bool (``true``/``false``)
``--remove_vector_weight_decay``                bool switch
``--profile_training``                          bool switch
``--profile_warmup N``, ``--profile_steps N``   int, default 5 each
==============================================  =========================================

Every other ``--key value`` / ``--key=value`` (and Orion's one-letter ``-k value``) becomes an
override whose value is typed by YAML as HyperPyYAML would (``1e-3`` → float, ``[1, 2]`` → list,
``null`` → None). The overrides come back as a dict, which ``load_hyperpyyaml(fin, overrides)``
accepts as it is.
"""

import argparse
import os
import re
from collections.abc import Sequence
from typing import Any

from hpopt.errors import HpoptError

PRECISIONS = ("fp32", "fp16", "bf16")
_OVERRIDE_KEY = re.compile(r"[A-Za-z_][\w.\-]*")
# Orion turns a one-letter `--x~prior` into `-x VALUE`; anything longer with one dash
# (e.g. `-1e-3`, `-inf`) is a value, not a key.
_ONE_LETTER_KEY = re.compile(r"-[A-Za-z]")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _RunOptionsParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting inside a library call."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise HpoptError(f"bad run option: {message}")


def _run_options_parser() -> argparse.ArgumentParser:
    parser = _RunOptionsParser(prog="recipe", allow_abbrev=False, add_help=False)
    switches = (
        "test_only",
        "debug",
        "debug_persistently",
        "data_parallel_backend",
        "find_unused_parameters",
        "jit",
        "compile",
        "skip_nonfinite_grads",
        "tqdm_colored_bar",
        "remove_vector_weight_decay",
        "profile_training",
    )
    for name in switches:
        parser.add_argument(f"--{name}", action="store_true", default=False)
    # SpeechBrain gives these three no default, so they appear only when given.
    for name in ("noprogressbar", "auto_mix_prec", "bfloat16_mix_prec"):
        parser.add_argument(f"--{name}", action="store_true", default=None)
    parser.add_argument("--device", type=str)
    parser.add_argument("--distributed_backend", choices=("nccl", "gloo", "mpi"), default="nccl")
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int)
    parser.add_argument("--debug_batches", type=int, default=2)
    parser.add_argument("--debug_epochs", type=int, default=2)
    parser.add_argument("--log_config", type=str)
    parser.add_argument("--precision", choices=PRECISIONS)
    parser.add_argument("--eval_precision", choices=PRECISIONS)
    parser.add_argument("--max_grad_norm", type=float)
    parser.add_argument("--nonfinite_patience", type=int)
    parser.add_argument("--ckpt_interval_minutes", type=float)
    parser.add_argument("--ckpt_interval_steps", type=int)
    parser.add_argument("--grad_accumulation_factor", type=int)
    parser.add_argument("--optimizer_step_limit", type=int)
    parser.add_argument("--jit_module_keys", type=str, nargs="*")
    parser.add_argument("--compile_module_keys", type=str, nargs="*")
    parser.add_argument("--compile_mode", type=str)
    parser.add_argument("--compile_using_fullgraph", type=_parse_bool)
    parser.add_argument("--compile_using_dynamic_shape_tracing", type=_parse_bool)
    parser.add_argument("--profile_warmup", type=int, default=5)
    parser.add_argument("--profile_steps", type=int, default=5)
    return parser


def _is_key_token(token: str) -> bool:
    return token.startswith("--") or bool(_ONE_LETTER_KEY.fullmatch(token))


def _split_override_tokens(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """Pair ``--key value`` / ``--key=value`` / ``-k value`` tokens, refusing anything else."""
    pairs: list[tuple[str, str]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not _is_key_token(token):
            raise HpoptError(
                f"unexpected argument {token!r}: after the hparams file, overrides must be "
                "'--key value' or '--key=value' pairs (is a key missing before it?)"
            )
        name = token[2:] if token.startswith("--") else token[1:]
        if "=" in name:
            key, value = name.split("=", 1)
            index += 1
        elif index + 1 < len(tokens) and not _is_key_token(tokens[index + 1]):
            key, value = name, tokens[index + 1]
            index += 2
        else:
            raise HpoptError(
                f"override {token!r} has no value: write '{token} VALUE' "
                f"(or '{token}=null' for YAML null)"
            )
        if not _OVERRIDE_KEY.fullmatch(key):
            raise HpoptError(f"argument {token!r}: {key!r} is not a valid override key")
        if any(key == seen for seen, _ in pairs):
            raise HpoptError(f"override --{key} is given twice on the command line")
        pairs.append((key, value))
    return pairs


def _yaml_typed(key: str, value: str) -> Any:
    """Type one override value exactly as HyperPyYAML types a ``key: value`` line."""
    from hyperpyyaml import load_hyperpyyaml

    try:
        return load_hyperpyyaml(f"{key}: {value}")[key]
    except Exception as error:  # HyperPyYAML raises YAML, ValueError, ImportError...
        raise HpoptError(
            f"override --{key}: value {value!r} is not valid YAML ({error}); "
            "quote it, e.g. --key '\"a: b\"'"
        ) from error


def parse_command_line(argv: Sequence[str]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Return ``(hparams_file, run_opts, overrides)``; ``run_opts['device']`` only if given."""
    if not argv or argv[0].startswith("-"):
        shown = argv[0] if argv else "nothing"
        raise HpoptError(
            f"the first argument must be the recipe's hparams YAML file, got {shown!r}"
        )
    hparams_file, rest = argv[0], list(argv[1:])
    namespace, leftover = _run_options_parser().parse_known_args(rest)
    run_opts = {key: value for key, value in vars(namespace).items() if value is not None}
    overrides = {key: _yaml_typed(key, value) for key, value in _split_override_tokens(leftover)}
    return hparams_file, run_opts, overrides


def resolve_device(run_opts: dict[str, Any]) -> str:
    """Fill in ``run_opts['device']``: default and torchrun ``LOCAL_RANK`` mapping.

    Call it only after the GPU lease has set ``CUDA_VISIBLE_DEVICES``: asking torch whether a GPU
    exists initialises CUDA, which freezes the set of visible devices for the process.
    """
    device = run_opts.get("device")
    if device is None:
        try:
            import torch
        except ImportError:
            device = "cpu"
        else:
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
    local_rank = os.environ.get("LOCAL_RANK", "").strip() or run_opts.get("local_rank")
    if local_rank is not None and device.split(":")[0] == "cuda":
        device = f"cuda:{int(local_rank)}"
    run_opts["device"] = device
    return device

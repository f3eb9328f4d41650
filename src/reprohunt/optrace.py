"""`python -m reprohunt.optrace PLAN.json`: scripts run one after another, every tensor op hashed.

Why: a recipe is portable across CPUs only if every op it runs gives the same bits on every CPU,
and the op that does not is found only by comparing op by op: the end result (a loss, a hash of
the prepared data) says that something differs, not what. Each stage of the plan runs a script
as ``__main__`` under a ``TorchDispatchMode`` that records, for every ATen op the process runs
(forward, backward and the optimiser's), its name, the line of the script's own code that called
it, and a hash of its outputs and of the arguments it writes in place. All stages run in one
process, so an emulated CPU pays the imports (seconds natively, a minute under qemu) once.
:mod:`reprohunt.numerics_check` writes the plans, runs them on several CPUs and compares.

A stage with ``reference`` and ``dump`` saves the outputs of its first op whose record differs
from the reference's (``dump/op<index>.pt``); with ``dump_at`` it saves that op's outputs and
ends there (how the reference side's values are fetched, replaying only up to that op);
``max_ops`` ends the stage after that many ops (a few training steps of a longer run).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import runpy
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# Frames inside these folders are library code, not the recipe line that called the op.
_LIBRARY_DIRS = tuple(
    str(Path(module.__file__).resolve().parent) + os.sep
    for module in (torch, runpy, argparse)
    if module.__file__
) + (str(Path(__file__).resolve()),)


@dataclass(frozen=True)
class OpRecord:
    """One op as recorded: its position, ATen name, the calling line, and its outputs' hash."""

    index: int
    op: str
    where: str
    sha256: str
    shapes: list[list[int]]

    @classmethod
    def parse(cls, line: str) -> OpRecord:
        return cls(**json.loads(line))


def read_records(path: Path) -> list[OpRecord]:
    with path.open(encoding="utf-8") as lines:
        return [OpRecord.parse(line) for line in lines if line.strip()]


def _written_arguments(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The arguments an op writes into (in-place and ``out=`` ops, fused optimiser steps)."""
    written = []
    for position, argument in enumerate(func._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        if argument.kwarg_only or position >= len(args):
            written.append(kwargs.get(argument.name))
        else:
            written.append(args[position])
    return written


def tensors_of(values: Any) -> Iterator[torch.Tensor]:
    leaves, _ = tree_flatten(values)
    return (leaf for leaf in leaves if isinstance(leaf, torch.Tensor))


@functools.cache
def _shown(filename: str) -> str | None:
    """A code file's path as the report shows it, None for library code (resolved once)."""
    resolved = os.path.realpath(filename)
    return None if resolved.startswith(_LIBRARY_DIRS) else os.path.relpath(resolved)


def _caller() -> str:
    """`path:line (function)` of the innermost frame outside torch and this module."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        shown = _shown(frame.f_code.co_filename)
        if shown is not None:
            return f"{shown}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "?"


class OpTrace(TorchDispatchMode):
    """Records every op into `out`; optionally dumps one op's outputs (see the module doc)."""

    def __init__(
        self,
        out: IO[str],
        reference: list[OpRecord] | None = None,
        dump: Path | None = None,
        dump_at: int | None = None,
        max_ops: int | None = None,
    ) -> None:
        super().__init__()
        self.out, self.reference, self.dump = out, reference, dump
        self.dump_at, self.max_ops = dump_at, max_ops
        self.count = 0
        self.dumped = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        tensors = [*tensors_of(result), *tensors_of(_written_arguments(func, args, kwargs))]
        # Of uninitialised memory only the shape and type are the op's, not whatever it held.
        contents = func.overloadpacket not in _UNINITIALISED
        digest = hashlib.sha256()
        for tensor in tensors:
            data = tensor.detach()
            if data.layout != torch.strided:
                data = data.to_dense()
            data = data.cpu().contiguous().reshape(-1)
            digest.update(f"{data.dtype}{tuple(data.shape)}".encode())
            if contents and data.numel():
                digest.update(data.view(torch.uint8).numpy().tobytes())
        record = OpRecord(
            self.count, str(func), _caller(), digest.hexdigest(), [list(t.shape) for t in tensors]
        )
        self.out.write(json.dumps(asdict(record)) + "\n")
        differs = (
            self.reference is not None
            and not self.dumped
            and (self.count >= len(self.reference) or self.reference[self.count] != record)
        )
        if self.dump is not None and (differs or self.count == self.dump_at):
            self.dumped = True
            self.dump.mkdir(parents=True, exist_ok=True)
            saved = [tensor.detach().cpu().clone() for tensor in tensors]
            torch.save(
                {"record": asdict(record), "tensors": saved}, self.dump / f"op{self.count}.pt"
            )
        self.count += 1
        if record.index == self.dump_at or self.count == self.max_ops:
            raise StageEnd  # the record says how far it got
        return result


# Ops whose outputs are uninitialised memory (SpeechBrain's layers allocate their weights with
# torch.empty, then initialise them): their bytes differ from run to run on any CPU.
_UNINITIALISED = {
    torch.ops.aten.empty,
    torch.ops.aten.empty_like,
    torch.ops.aten.empty_strided,
    torch.ops.aten.new_empty,
    torch.ops.aten.new_empty_strided,
}


class StageEnd(BaseException):  # noqa: N818 (not an error: the stage ends where it was told)
    """Raised by the trace to end a stage early; a BaseException, so that a recipe's own
    ``except Exception`` does not swallow it."""


@dataclass(frozen=True)
class Stage:
    """One script of a plan, with its record and what to compare or dump."""

    name: str
    script: str
    argv: list[str]
    record: str
    reference: str | None = None
    dump: str | None = None
    dump_at: int | None = None
    max_ops: int | None = None


def run(stage: Stage) -> int:
    """Run the stage's script as __main__ under its trace; the script's exit status."""
    script = Path(stage.script)
    sys.argv = [str(script), *stage.argv]
    sys.path.insert(0, str(script.resolve().parent))
    reference = read_records(Path(stage.reference)) if stage.reference else None
    dump = Path(stage.dump) if stage.dump else None
    Path(stage.record).parent.mkdir(parents=True, exist_ok=True)
    with open(stage.record, "w", encoding="utf-8") as out:
        trace = OpTrace(out, reference, dump, stage.dump_at, stage.max_ops)
        try:
            with trace:
                runpy.run_path(str(script), run_name="__main__")
        except StageEnd:
            return 0
        except SystemExit as stop:
            code = stop.code
            return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reprohunt.optrace", description=__doc__)
    parser.add_argument("plan", type=Path, help='JSON: {"stages": [Stage fields, ...]}')
    args = parser.parse_args(argv)
    stages = [Stage(**stage) for stage in json.loads(args.plan.read_text())["stages"]]
    for stage in stages:
        print(f"optrace: stage {stage.name}: {stage.script}", flush=True)
        code = run(stage)
        if code != 0:
            print(f"optrace: stage {stage.name} exited with {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

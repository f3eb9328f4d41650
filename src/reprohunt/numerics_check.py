"""Whether a recipe computes the same bits on Intel and AMD CPUs, and if not, which op does not.

    python -m reprohunt.numerics_check --config my.yaml [--set data.synthetic.n_speakers=4 …]
    make numerics-check CONFIG=my.yaml      (or RECIPE=recipes/<name>: the default config's
                                             settings with that folder and its *_prepare.py)

Why: under ``numerics: portable`` every library is capped at paths that all x86-64 CPUs with AVX2
run alike, but a routine that uses approximate instructions (float32 ``sqrt`` and ``log10``
through MKL's vector math) still differs by vendor, and only the recipe author can replace it.
This runs the recipe's data preparation (on the subset the config describes) and its training
script (on the host's prepared data) natively and under qemu-user's emulated Intel
(``Haswell-v4``) and AMD (``EPYC-Rome-v2``) CPUs, each through :mod:`reprohunt.optrace`, and
compares every file the preparation writes and every tensor op's outputs. It reports the first
op that differs (ATen name, the recipe's line, how many values, the largest difference) and the
files that differ (for arrays: how many values, the largest difference), or that all agree.
qemu's emulation computes approximate instructions exactly, unlike either vendor's hardware, so
any vendor-dependent path shows up against the host, whichever vendor the host is
(../shared/reference/cpu-numerics.md).

Exit status: 0 all agree, 1 something differs, 2 a bad config or no emulator.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpopt.files import sha256_file, write_json_atomically
from reprohunt import numerics
from reprohunt.optrace import OpRecord, Stage, read_records
from reprohunt.provenance import REPO
from reprohunt.recipe import RecipeContractError, command, describe, prepare_command

HOST = "host"
REPLAY = "host-replay"
EMULATED = ("Haswell-v4", "EPYC-Rome-v2")
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
# The data a check prepares: the prepared folder's path inside the run's folder.
DATA = "data"


class CheckError(Exception):
    """The check cannot run as asked; the message names the file or key and the fix."""


@dataclass(frozen=True)
class ValueDifference:
    """How two arrays (an op's outputs, or an array file) differ."""

    differing: int
    total: int
    largest: float | None  # None when shapes or dtypes differ
    # Values where one side is inf or NaN and the other is not: no finite difference to size.
    nonfinite: int = 0

    def describe(self) -> str:
        if self.largest is None:
            return "shapes or dtypes differ"
        text = (
            f"{self.differing} of {self.total} values differ, largest difference {self.largest:.3g}"
        )
        if self.nonfinite:
            text += f" ({self.nonfinite} of them inf or NaN on one side only)"
        return text


@dataclass(frozen=True)
class OpDifference:
    stage: str
    cpu: str
    index: int
    op: str
    where: str
    host_op: str
    host_where: str
    values: ValueDifference | None

    def describe(self) -> str:
        if (self.op, self.where) != (self.host_op, self.host_where):
            return (
                f"{self.stage}: the op sequence departs at op #{self.index}: {HOST} ran "
                f"{self.host_op} at {self.host_where}, {self.cpu} ran {self.op} at {self.where} "
                "(an earlier value steered the control flow)"
            )
        values = f": {self.values.describe()}" if self.values else ""
        where = f"{self.stage}: op #{self.index} {self.op} at {self.where}"
        return f"{where} differs on {self.cpu}{values}"


@dataclass(frozen=True)
class FileDifference:
    cpu: str
    path: str
    values: ValueDifference | None

    def describe(self) -> str:
        detail = f": {self.values.describe()}" if self.values else ": bytes differ"
        return f"prepare: file {self.path} differs on {self.cpu}{detail}"


@dataclass
class Report:
    cpus: list[str]
    ops: dict[str, int] = field(default_factory=dict)  # stage -> ops compared (the host's count)
    files: int = 0
    op_differences: list[OpDifference] = field(default_factory=list)
    file_differences: list[FileDifference] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not self.op_differences and not self.file_differences

    def lines(self) -> list[str]:
        if self.agree:
            per_stage = ", ".join(f"{stage} {count} ops" for stage, count in self.ops.items())
            return [
                f"numerics check: all {sum(self.ops.values())} ops ({per_stage}) and "
                f"{self.files} prepared files agree on {', '.join(self.cpus)}"
            ]
        lines = ["numerics check: NOT portable"]
        lines += [f"  {found.describe()}" for found in self.op_differences]
        shown = self.file_differences[:5]
        lines += [f"  {found.describe()}" for found in shown]
        if len(self.file_differences) > len(shown):
            lines.append(f"  … and {len(self.file_differences) - len(shown)} more differing files")
        return lines


def set_key(config: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set a.b.c=VALUE`` (VALUE read as YAML) to `config`."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise CheckError(f"--set {assignment!r}: expected KEY=VALUE, e.g. data.n_mels=40")
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
        node = node.setdefault(parent, {})
        if not isinstance(node, dict):
            raise CheckError(f"--set {assignment!r}: {parent} is not a mapping in the config")
    node[leaf] = yaml.safe_load(value)


def recipe_defaults() -> dict[str, Any]:
    """The schema's defaults of the recipe section (what the workflow fills in)."""
    schema = yaml.safe_load(SCHEMA.read_text())
    properties = schema["properties"]["recipe"]["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def load_config(path: Path, recipe_dir: Path | None, sets: list[str]) -> dict[str, Any]:
    """The config as the workflow would read it, with `recipe_dir` and the ``--set`` changes."""
    if not path.is_file():
        raise CheckError(f"--config {path}: no such file")
    config = yaml.safe_load(path.read_text()) or {}
    config.setdefault("numerics", numerics.PORTABLE)
    config["recipe"] = recipe_defaults() | (config.get("recipe") or {})
    if recipe_dir is not None:
        prepares = sorted(recipe_dir.glob("*_prepare.py"))
        if len(prepares) != 1:
            raise CheckError(
                f"--recipe {recipe_dir}: expected one *_prepare.py in it, found "
                f"{[p.name for p in prepares] or 'none'}; give a config file naming "
                "recipe.prepare instead (--config)"
            )
        config["recipe"] |= {"dir": str(recipe_dir), "prepare": prepares[0].name}
    for assignment in sets:
        set_key(config, assignment)
    return config


# The stages every CPU runs, in one process: the data preparation, then the training script.
STAGES = ("prepare", "train")


@dataclass(frozen=True)
class Plan:
    """How to run the recipe's stages on one CPU (the `argv` of each stage comes from here)."""

    recipe: dict[str, Any]
    prepare: list[str]  # the preparation's script and arguments, but for --out
    work: Path
    max_ops: int | None

    def stage(self, name: str, cpu: str, **trace: Any) -> Stage:
        """Stage `name` as `cpu` runs it: its own prepared folder and training output, and the
        host's prepared data to train on (so that training is compared on the same input)."""
        folder = self.work / cpu
        if name == "prepare":
            script, *argv = self.prepare
            argv += ["--out", str(folder / DATA), "--overwrite"]
        else:
            data, out = str(self.work / HOST / DATA), str(folder / "train")
            script, *argv = command(self.recipe, data_folder=data, output_folder=out)
            trace.setdefault("max_ops", self.max_ops)
        return Stage(name, script, argv, str(folder / f"{name}.ops.jsonl"), **trace)


@dataclass(frozen=True)
class Runner:
    """Runs plans through reprohunt.optrace on the host or an emulated CPU."""

    python: str
    qemu: str | None
    environment: dict[str, str]
    work: Path

    def run(self, cpu: str, name: str, stages: list[Stage], folder_name: str = "") -> None:
        """`stages` traced in one process on `cpu`; plan and log `name`.* in the CPU's folder
        (or `folder_name`'s)."""
        folder = self.work / (folder_name or cpu)
        folder.mkdir(parents=True, exist_ok=True)
        plan = folder / f"{name}.plan.json"
        write_json_atomically(plan, {"stages": [asdict(stage) for stage in stages]}, indent=2)
        emulator = [] if cpu == HOST else [str(self.qemu), "-cpu", cpu]
        log = folder / f"{name}.log"
        with log.open("w") as out:
            done = subprocess.run(
                [*emulator, self.python, "-m", "reprohunt.optrace", str(plan)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment,
            )
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise CheckError(f"{name} on {cpu} failed (exit {done.returncode}), {log}:\n{tail}")

    def on_all(self, cpus: list[str], plan: Plan) -> None:
        """The host's run first (the reference), then the emulated CPUs side by side."""
        self.run(HOST, "run", [plan.stage(name, HOST) for name in STAGES])
        emulated = [cpu for cpu in cpus if cpu != HOST]

        def stages(cpu: str) -> list[Stage]:
            return [
                plan.stage(
                    name,
                    cpu,
                    reference=str(self.work / HOST / f"{name}.ops.jsonl"),
                    dump=str(self.work / cpu / f"{name}.dump"),
                )
                for name in STAGES
            ]

        with ThreadPoolExecutor(max_workers=max(1, len(emulated))) as pool:
            for future in [pool.submit(self.run, cpu, "run", stages(cpu)) for cpu in emulated]:
                future.result()


def compare_arrays(a: Any, b: Any) -> ValueDifference:
    """Count and size of the differences between two numpy arrays (NaNs in the same place agree)."""
    import numpy as np

    if a.shape != b.shape or a.dtype != b.dtype:
        return ValueDifference(0, int(b.size), None)
    same = a == b
    differ = ~(same | (np.isnan(a) & np.isnan(b))) if a.dtype.kind in "fc" else ~same
    largest, nonfinite = 0.0, 0
    if differ.any() and a.dtype.kind in "fciu":
        gaps = np.abs(a[differ].astype(np.float64) - b[differ].astype(np.float64))
        finite = np.isfinite(gaps)
        nonfinite = int((~finite).sum())
        largest = float(gaps[finite].max()) if finite.any() else 0.0
    return ValueDifference(int(differ.sum()), int(a.size), largest, nonfinite)


def compare_tensors(host: list[Any], other: list[Any]) -> ValueDifference:
    """All outputs of one op, pooled."""
    if len(host) != len(other):
        return ValueDifference(0, 0, None)
    found = [compare_arrays(a.numpy(), b.numpy()) for a, b in zip(host, other, strict=True)]
    if any(item.largest is None for item in found):
        return ValueDifference(0, sum(item.total for item in found), None)
    return ValueDifference(
        sum(item.differing for item in found),
        sum(item.total for item in found),
        max((item.largest or 0.0 for item in found), default=0.0),
        sum(item.nonfinite for item in found),
    )


def first_op_difference(host: list[OpRecord], other: list[OpRecord]) -> int | None:
    for index in range(max(len(host), len(other))):
        if index >= len(host) or index >= len(other) or host[index] != other[index]:
            return index
    return None


def op_differences(runner: Runner, plan: Plan, cpus: list[str], name: str) -> list[OpDifference]:
    """The first differing op of stage `name` on each emulated CPU against the host's."""
    import torch

    host = read_records(runner.work / HOST / f"{name}.ops.jsonl")
    ended = OpRecord(-1, "(none: the run had ended)", "-", "", [])
    found = []
    replayed: dict[int, list[Any]] = {}  # the host's outputs of op #index (CPUs often share it)
    for cpu in cpus:
        other = read_records(runner.work / cpu / f"{name}.ops.jsonl") if cpu != HOST else host
        index = first_op_difference(host, other)
        if index is None:
            continue
        ours = host[index] if index < len(host) else ended
        theirs = other[index] if index < len(other) else ended
        values = None
        if (ours.op, ours.where) == (theirs.op, theirs.where):
            if index not in replayed:
                # The host's values of that op: its run replayed up to it, every stage before it
                # included (they may warm caches that change the op sequence), in its own folder.
                dump = runner.work / REPLAY / f"{name}.dump"
                before = list(STAGES[: STAGES.index(name)])
                replay = [plan.stage(stage, REPLAY) for stage in before]
                replay.append(plan.stage(name, REPLAY, dump=str(dump), dump_at=index))
                runner.run(HOST, "replay", replay, folder_name=REPLAY)
                replayed[index] = torch.load(dump / f"op{index}.pt")["tensors"]
            values = compare_tensors(
                replayed[index],
                torch.load(runner.work / cpu / f"{name}.dump" / f"op{index}.pt")["tensors"],
            )
        found.append(
            OpDifference(name, cpu, index, theirs.op, theirs.where, ours.op, ours.where, values)
        )
    return found


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def file_difference(
    cpu: str, path: str, host_folder: Path, other_folder: Path
) -> FileDifference | None:
    """How file `path` of two prepared folders differs; None when it differs only by the
    folder's own path written into it."""
    import numpy as np

    host_file, other_file = host_folder / path, other_folder / path
    if not host_file.is_file() or not other_file.is_file():
        return FileDifference(cpu, path, ValueDifference(0, 0, None))
    if host_file.suffix == ".npy":
        return FileDifference(cpu, path, compare_arrays(np.load(host_file), np.load(other_file)))
    if host_file.suffix == ".npz":
        with np.load(host_file) as ours, np.load(other_file) as theirs:
            for name in sorted(set(ours.files) | set(theirs.files)):
                if name not in ours.files or name not in theirs.files:
                    return FileDifference(cpu, f"{path}[{name}]", ValueDifference(0, 0, None))
                values = compare_arrays(ours[name], theirs[name])
                if values.differing or values.largest is None:
                    return FileDifference(cpu, f"{path}[{name}]", values)
    try:
        ours_text, theirs_text = host_file.read_text(), other_file.read_text()
    except UnicodeDecodeError:
        return FileDifference(cpu, path, None)
    if ours_text.replace(str(host_folder), "{out}") == theirs_text.replace(
        str(other_folder), "{out}"
    ):
        return None
    return FileDifference(cpu, path, None)


def file_differences(work: Path, cpus: list[str]) -> tuple[int, list[FileDifference]]:
    host_folder = work / HOST / DATA
    host = file_hashes(host_folder)
    found = []
    for cpu in cpus:
        if cpu == HOST:
            continue
        other_folder = work / cpu / DATA
        other = file_hashes(other_folder)
        for path in sorted(set(host) | set(other)):
            if host.get(path) != other.get(path):
                difference = file_difference(cpu, path, host_folder, other_folder)
                if difference is not None:
                    found.append(difference)
    return len(host), found


def train_python(config: dict[str, Any]) -> str:
    """The interpreter of the env the config runs its recipe in (REPROHUNT_TRAIN_ENV, else
    `train_env`, as the workflow decides; a SpeechBrain recipe's env is not the default one)."""
    env = os.environ.get("REPROHUNT_TRAIN_ENV") or config.get("train_env")
    if env and (Path(env) / "bin" / "python").exists():
        return str(Path(env) / "bin" / "python")
    return sys.executable


def check(
    config: dict[str, Any], config_name: str, work: Path, cpus: list[str], max_ops: int | None
) -> Report:
    """Prepare and train on every CPU in `cpus` (the host first), and compare."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None and any(cpu != HOST for cpu in cpus):
        raise CheckError(
            "qemu-x86_64 not found: install Debian's qemu-user (as root: apt-get install "
            "qemu-user, or containers/ensure-packages.sh LOG qemu-user:qemu-x86_64)"
        )
    try:
        recipe = describe(config["recipe"], config.get("data") or {}, config_name) | {
            "numerics": config["numerics"]
        }
    except RecipeContractError as error:
        raise CheckError(str(error)) from error
    environment = dict(os.environ)
    numerics.apply(config["numerics"], f"{config_name}: numerics", environment)
    shutil.rmtree(work, ignore_errors=True)
    runner = Runner(train_python(config), qemu, environment, work)
    plan = Plan(recipe, prepare_command(recipe, config.get("data") or {}), work, max_ops)
    runner.on_all(cpus, plan)
    report = Report(cpus)
    report.files, report.file_differences = file_differences(work, cpus)
    for name in STAGES:
        report.ops[name] = len(read_records(work / HOST / f"{name}.ops.jsonl"))
        report.op_differences += op_differences(runner, plan, cpus, name)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reprohunt.numerics_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument(
        "--recipe", type=Path, help="recipe folder (default: the config's recipe.dir)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a config key, e.g. data.synthetic.n_speakers=4 (repeatable)",
    )
    parser.add_argument("--max-ops", type=int, help="stop training after N ops (a few steps)")
    parser.add_argument("--cpus", nargs="*", default=list(EMULATED), help="emulated CPUs")
    parser.add_argument("--work", type=Path, default=Path("results/numerics-check"))
    args = parser.parse_args(argv)  # fmt: skip
    try:
        config = load_config(args.config, args.recipe, args.set)
        report = check(config, str(args.config), args.work, [HOST, *args.cpus], args.max_ops)
    except (CheckError, numerics.NumericsError) as error:
        print(f"numerics check: {error}", file=sys.stderr)
        return 2
    write_json_atomically(
        args.work / "report.json", asdict(report) | {"agree": report.agree}, indent=2
    )
    print("\n".join(report.lines()))
    print(f"(records and logs under {args.work}/)")
    return 0 if report.agree else 1


if __name__ == "__main__":
    sys.exit(main())

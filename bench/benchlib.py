"""What every benchmark shares: paths, machine facts, the corpus, recipe commands, result files.

Each ``bench_*.py`` measures one figure and writes ``<results-dir>/<name>.json``; ``run_all.py``
runs them and records their figures in docs/measured.json. Timings on a shared machine
drift, so every result records the load average when it started and ended.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from reprohunt import numerics

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DEFAULT_RESULTS = BENCH / "results"
PYTHON = sys.executable
BIN = Path(sys.executable).parent
HPOPT_EXEC = str(BIN / "hpopt-exec")
ORION = str(BIN / "orion")
PROBE = BENCH / "trial_probe.py"
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
RECIPE_DIR = ROOT / CONFIG["recipe"]["dir"]
TRAIN_SCRIPT = RECIPE_DIR / "train.py"
TRAIN_YAML = RECIPE_DIR / CONFIG["recipe"]["train_yaml"]
HPOPT_YAML = RECIPE_DIR / CONFIG["recipe"]["hpopt_yaml"]
PREPARE_SCRIPT = RECIPE_DIR / CONFIG["recipe"]["prepare"]
# The recipe's own modules (its data package), importable as `python train.py` sees them.
sys.path.insert(0, str(RECIPE_DIR))
RECIPE_SEED = CONFIG["recipe"]["seed"]
# Every benchmark measures under the default config's numerics profile
# (docs/numerics-and-audit.md), set here, before a benchmark imports torch, and inherited by
# every process it starts.
NUMERICS = CONFIG.get("numerics", numerics.PORTABLE)
# What Snakemake sets to a shell rule's thread count (snakemake/shell.py).
SNAKEMAKE_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
numerics.apply(NUMERICS, "config/config.yaml: numerics")

# The toy corpus of --smoke runs (the test suite's tiny corpus): seconds instead of minutes.
SMOKE_PREPARE_ARGS = [
    *("--source", "synthetic", "--seed", "7", "--n-speakers", "4", "--utts-per-speaker", "6"),
    *("--min-seconds", "0.5", "--max-seconds", "0.8"),
]
# A model small enough for --smoke runs to train in well under a second per epoch.
SMOKE_MODEL = {"emb_dim": 16, "tdnn_channels": 16}


def add_common_arguments(parser: argparse.ArgumentParser, repeats: bool = True) -> None:
    """--results-dir, --data, --smoke and (for timing benchmarks) --repeats, the same everywhere."""
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS, help="where the JSON goes"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="a prepared folder (default: the workflow's default corpus, prepared once under "
        "RESULTS_DIR/corpus)",
    )
    if repeats:
        parser.add_argument("--repeats", type=int, default=3, help="samples per variant (>= 3)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="toy corpus and sizes, any --repeats: checks that it runs, measures nothing",
    )


def check_repeats(parser: argparse.ArgumentParser, args: argparse.Namespace, minimum: int) -> None:
    if args.repeats < (1 if args.smoke else minimum):
        parser.error(f"--repeats must be at least {minimum} for a meaningful median (or --smoke)")


def recipe_defaults() -> dict[str, Any]:
    """train.yaml's values (references resolved), i.e. what a run without overrides uses."""
    from hyperpyyaml import load_hyperpyyaml

    return load_hyperpyyaml(TRAIN_YAML.read_text(), {"data_folder": "unused"})


def trial_epochs(recipe_dir: Path = RECIPE_DIR) -> int:
    """A hunt trial's budget without a fidelity dimension: hpopt.yaml's number_of_epochs if it
    sets one, else train.yaml's."""
    from hyperpyyaml import load_hyperpyyaml

    hpopt = load_hyperpyyaml((recipe_dir / HPOPT_YAML.name).read_text(), {"trial_id": "bench"})
    if "number_of_epochs" in hpopt:
        return int(hpopt["number_of_epochs"])
    train = load_hyperpyyaml((recipe_dir / TRAIN_YAML.name).read_text(), {"data_folder": "x"})
    return int(train["number_of_epochs"])


def default_prepare_args() -> list[str]:
    """The arguments the workflow's prepare rule gives for config/config.yaml's data section."""
    from reprohunt.recipe import prepare_flags

    return prepare_flags(CONFIG["data"])


def corpus(args: argparse.Namespace) -> Path:
    """The prepared folder to measure on: --data, else the default (or toy) corpus, made once."""
    if args.data is not None:
        if not (args.data / "prepared.json").is_file():
            raise SystemExit(f"--data {args.data}: no prepared.json (run speaker_id_prepare)")
        return args.data.resolve()
    from reprohunt.recipe import code_hashes

    prepare_args = SMOKE_PREPARE_ARGS if args.smoke else default_prepare_args()
    # The features depend on the thread count: prepare with one, as the workflow's prepare rule
    # does (Snakemake sets these to the rule's threads). The folder's name covers what the
    # features depend on, so a corpus made by other code or numerics is never reused.
    env = os.environ | dict.fromkeys(SNAKEMAKE_THREAD_VARIABLES, "1")
    identity = {"args": prepare_args, "numerics": NUMERICS, "code": code_hashes(RECIPE_DIR)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    folder = (args.results_dir / "corpus" / digest).resolve()
    if not (folder / "prepared.json").is_file():
        print(f"preparing the corpus ({' '.join(prepare_args)}) in {folder}", flush=True)
        subprocess.run(
            [PYTHON, str(PREPARE_SCRIPT), *prepare_args, "--out", str(folder), "--overwrite"],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
    return folder


def prepared_summary(data: Path) -> dict[str, Any]:
    prepared = json.loads((data / "prepared.json").read_text())
    return {
        "folder": str(data),
        "source": prepared["source"],
        "counts": prepared["counts"],
        "features_sha256": prepared["features_sha256"],
    }


def machine() -> dict[str, Any]:
    """The facts a reader needs to judge a timing: CPU, cores, memory, load, versions."""
    import torch

    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "cpu": numerics.cpu()["model"] or platform.processor() or "unknown",
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kb / 2**20, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numerics": numerics.describe(numerics.in_use(NUMERICS)),
        "platform": platform.platform(),
    }


def write_result(args: argparse.Namespace, name: str, document: dict[str, Any]) -> Path:
    """``<results-dir>/<name>.json``, stamped with the time and the load average at the end."""
    document = {
        "benchmark": name,
        "smoke": args.smoke,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        **document,
    }
    document.setdefault("machine", {})["load_average_at_end"] = [
        round(x, 2) for x in os.getloadavg()
    ]
    path = args.results_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
    print(f"wrote {path}", flush=True)
    return path


def spread(samples: Sequence[float]) -> dict[str, Any]:
    """Median (the reported figure), min, max and the samples themselves."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": list(samples),
    }


def recipe_args(
    data: Path, output: Path, overrides: dict[str, Any], hpopt_mode: str = "orion"
) -> list[str]:
    """The recipe arguments of a workflow hunt trial (common.smk ``hunt_spec``) plus overrides."""
    args = [str(TRAIN_SCRIPT), str(TRAIN_YAML), "--hpopt", str(HPOPT_YAML)]
    args += ["--hpopt_mode", hpopt_mode, "--data_folder", str(data), "--output_folder", str(output)]
    args += ["--device", CONFIG["recipe"]["device"], "--seed", str(RECIPE_SEED)]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return args


def orion_trial_env(
    results_file: Path, trial_dir: Path, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment ``orion hunt`` gives a trial; the (empty) result file exists, as Orion's."""
    results_file.write_text("")
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("ORION_")}
    return env | {
        "ORION_EXPERIMENT_NAME": "bench",
        "ORION_EXPERIMENT_VERSION": "1",
        "ORION_TRIAL_ID": hashlib.md5(str(trial_dir).encode()).hexdigest(),
        "ORION_WORKING_DIR": str(trial_dir),
        "ORION_RESULTS_PATH": str(results_file),
    }


def reported_objective(results_file: Path) -> float:
    """The objective a trial wrote to Orion's result file; fails when there is none."""
    text = results_file.read_text()
    objectives = [item["value"] for item in json.loads(text or "[]") if item["type"] == "objective"]
    if len(objectives) != 1:
        raise RuntimeError(f"{results_file}: expected one objective, found {text!r}")
    return float(objectives[0])


def run_checked(command: Sequence[str], log: Path, **kwargs: Any) -> None:
    """Run ``command`` with its output in ``log``; on failure, raise with the log's tail."""
    with log.open("wb") as stream:
        finished = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, **kwargs)
    if finished.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(
            f"exit {finished.returncode}: {shlex.join(command)}\n(log {log}):\n{tail}"
        )


def probed_trial(
    launcher: Sequence[str], args: Sequence[str], env: dict[str, str], workdir: Path
) -> dict[str, Any]:
    """One trial run through trial_probe.py as Orion runs it: its spans (s) and its objective.

    start-up = launcher started -> first epoch begins (imports, YAML, data, model);
    training = all epochs (training passes and validation); reporting = last epoch's end ->
    process exited (metrics.json, the result file, interpreter shutdown).
    """
    workdir.mkdir(parents=True)
    results_file, stamps_file = workdir / "results.log", workdir / "stamps.json"
    trial_env = orion_trial_env(results_file, workdir, env) | {"BENCH_STAMPS": str(stamps_file)}
    started = time.time()
    run_checked([*launcher, str(PROBE), *args], workdir / "trial.log", env=trial_env)
    exited = time.time()
    stamps = json.loads(stamps_file.read_text())
    train_pass = sum(end - start for start, end in stamps["train_epochs"])
    return {
        "wall_s": exited - started,
        "startup_s": stamps["fit_start"] - started,
        "training_s": stamps["fit_end"] - stamps["fit_start"],
        "reporting_s": exited - stamps["fit_end"],
        "train_pass_s": train_pass,
        "epochs": stamps["epochs"],
        "train_utterances": stamps["train_utterances_per_epoch"],
        "train_epoch_spans": stamps["train_epochs"],
        "utterances_per_s": stamps["train_utterances_per_epoch"] * stamps["epochs"] / train_pass,
        "threads": stamps["threads"],
        "objective": reported_objective(results_file),
    }


@contextlib.contextmanager
def warm_server(scratch: Path) -> Iterator[tuple[dict[str, str], float]]:
    """A private warm launcher server for the block: (the env that reaches it, its start-up s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPOPT_")}
    env["HPOPT_EXEC_SOCKET"] = str(scratch / "warm.sock")
    started = time.perf_counter()
    subprocess.run([HPOPT_EXEC, "--serve"], env=env, check=True, capture_output=True)
    try:
        yield env, time.perf_counter() - started
    finally:
        subprocess.run([HPOPT_EXEC, "--stop"], env=env, check=True, capture_output=True)


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder for one benchmark's runs (outputs we do not keep)."""
    return tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-")

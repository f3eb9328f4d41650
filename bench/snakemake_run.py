"""Run the real Snakemake workflow in a scratch working directory, and measure it.

As tests/workflow_run.py does for the tests: each run gets its own folder with a
``config/config.yaml`` derived from the repository's (absolute train env and recipe paths), so
nothing is written into the checkout. ``run`` samples the memory of the whole run meanwhile:
the proportional set size (PSS, shared pages split between their users, so forked warm-launcher
trials are not counted once per process) summed over Snakemake's process tree and over the
processes that left it but work for this run (the warm launcher server, which detaches, and the
trials it forks: their command lines name the working directory).
"""

from __future__ import annotations

import copy
import csv
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import benchlib
import psutil
import yaml

SNAKEMAKE = benchlib.ROOT / ".venv" / "workflow" / "bin" / "snakemake"
EXPERIMENT = benchlib.CONFIG["experiment"]
SAMPLE_PERIOD_S = 0.5
# Config values that are wholes, replaced rather than merged: one algorithm, one search space.
WHOLE_VALUES = ("algorithm", "space")


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update (``extra`` wins); WHOLE_VALUES keys are replaced, not merged."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if key in WHOLE_VALUES:
            merged[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_config(workdir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The repository's config with absolute paths, plus ``overrides``, in ``workdir/config``."""
    config = copy.deepcopy(benchlib.CONFIG)
    config["train_env"] = str(benchlib.BIN.parent)
    config["recipe"]["dir"] = str(benchlib.RECIPE_DIR)
    config = merge(config, overrides)
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def results(workdir: Path) -> Path:
    return workdir / "results" / EXPERIMENT


def install_data(prepared: Path, workdir: Path) -> None:
    """Put an already prepared folder where the workflow's prepare rule would have written it."""
    shutil.copytree(prepared, results(workdir) / "data", symlinks=True)


class MemorySampler:
    """Peak PSS of a process tree plus the processes whose command line names ``marker``."""

    def __init__(self, root_pid: int, marker: str) -> None:
        self.root_pid, self.marker = root_pid, marker
        self.peak_bytes = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _processes(self) -> dict[int, psutil.Process]:
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.root_pid)
            found[root.pid] = root
            found |= {child.pid: child for child in root.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
        for process in psutil.process_iter(["cmdline"]):
            if any(self.marker in part for part in process.info["cmdline"] or ()):
                found.setdefault(process.pid, process)
        return found

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD_S):
            total, counted = 0, 0
            for process in self._processes().values():
                try:
                    total += process.memory_full_info().pss
                    counted += 1
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_processes = total, counted

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run(workdir: Path, *targets: str, log: Path) -> dict[str, Any]:
    """``snakemake --cores all TARGETS`` in ``workdir``: wall seconds and peak PSS; fails loudly."""
    command = [
        str(SNAKEMAKE),
        "--snakefile",
        str(benchlib.ROOT / "Snakefile"),
        "--workflow-profile",
        str(benchlib.ROOT / "profiles" / "default"),
        "--directory",
        str(workdir),
        "--cores",
        "all",
        *targets,
    ]
    started = time.perf_counter()
    with log.open("wb") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
        sampler = MemorySampler(process.pid, str(workdir))
        code = process.wait()
        sampler.stop()
    wall = time.perf_counter() - started
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"snakemake exited with {code} in {workdir} (log {log}):\n{tail}")
    return {
        "wall_s": wall,
        "peak_pss_mib": sampler.peak_bytes / 2**20,
        "processes_at_peak": sampler.peak_processes,
    }


def rule_benchmarks(workdir: Path) -> dict[str, dict[str, float]]:
    """Snakemake's ``benchmark:`` records per rule: seconds, max RSS/PSS (MiB), CPU seconds."""
    rules = {}
    for path in sorted((results(workdir) / "benchmarks").glob("*.tsv")):
        with path.open() as stream:
            row = next(csv.DictReader(stream, delimiter="\t"))
        rules[path.stem] = {
            key: float(row[key]) if row[key] not in ("", "-", "NA") else None
            for key in ("s", "max_rss", "max_pss", "cpu_time")
        }
    return rules


def hunt_trials(workdir: Path) -> list[dict[str, Any]]:
    """The hunt's trials from its Orion database, in submission order."""
    import json

    from orion.client import get_experiment

    from reprohunt.orion_storage import storage_config

    hunt_dir = results(workdir) / "hunt"
    name = json.loads((hunt_dir / "hunt.json").read_text())["name"]
    storage = storage_config({"type": "pickleddb"}, hunt_dir)
    trials = get_experiment(name, storage=storage).fetch_trials(with_evc_tree=False)
    return [
        {
            "params": {key.lstrip("/"): value for key, value in trial.params.items()},
            "status": trial.status,
            "objective": trial.objective.value if trial.objective else None,
            "start": trial.start_time.timestamp() if trial.start_time else None,
            "end": trial.end_time.timestamp() if trial.end_time else None,
            "training_s": training_seconds(Path(trial.working_dir)),
        }
        for trial in sorted(trials, key=lambda trial: trial.submit_time)
    ]


def training_seconds(trial_dir: Path) -> float:
    """Seconds a speaker-id trial spent in its epochs: the sum of the `(N s, T threads)` the
    recipe's train_log.txt gives each epoch (its own clock, from first batch to last
    validation); 0 where there is no such log (another recipe)."""
    import re

    log = trial_dir / "train_log.txt"
    text = log.read_text() if log.is_file() else ""
    return sum(float(s) for s in re.findall(r"\(([0-9.]+) s, \d+ threads", text))

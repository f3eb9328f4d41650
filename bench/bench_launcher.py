"""Per-trial start-up of ``python script.py`` (cold) against ``hpopt-exec script.py`` (warm).

A sample is one trial process of ``tests/fixtures/launcher_startup.py``, which imports torch,
HyperPyYAML and numpy and takes one training step (Conv1d forward, backward, SGD step). From the
moment the launcher process is started, three spans are timed: until the first line after the
imports (the start-up the launcher removes), until the end of the first step (the issue's
"process start → first training step"), and until the process has exited. Cold and warm samples
alternate, so machine load drifts hit both alike; the warm server is started (and timed) before
the samples and stopped after them.

Then, unless ``--hunt-trials 0``, the wall time of a whole ``orion hunt`` of that fixture (random
search, seeded, PickledDB in a temp dir), cold and warm; the warm hunt includes starting the server.

    .venv/train/bin/python bench/bench_launcher.py --repeats 7 --hunt-trials 10

Writes ``bench/results/launcher.json`` and prints a summary.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "launcher.json"
STARTUP = ROOT / "tests" / "fixtures" / "launcher_startup.py"
PYTHON = sys.executable
HPOPT_EXEC = str(Path(sys.executable).with_name("hpopt-exec"))
ORION = str(Path(sys.executable).with_name("orion"))
LAUNCHERS = {"cold": [PYTHON], "warm": [HPOPT_EXEC]}
SPANS = ("imports_done", "first_step_done", "exited")


def sample(launcher: list[str], env: dict[str, str]) -> dict[str, float]:
    """Seconds from starting the launcher process to each span's end."""
    started = time.time()
    finished = subprocess.run(
        [*launcher, str(STARTUP)], env=env, capture_output=True, text=True, check=True
    )
    exited = time.time()
    stamps = json.loads(finished.stdout)
    if finished.stderr:
        raise RuntimeError(f"{launcher[0]} wrote to stderr (fell back?):\n{finished.stderr}")
    return {
        "imports_done": stamps["imports_done"] - started,
        "first_step_done": stamps["first_step_done"] - started,
        "exited": exited - started,
    }


def hunt(launcher: list[str], env: dict[str, str], trials: int, workdir: Path) -> float:
    """Wall seconds of one ``orion hunt`` of ``trials`` trials; fails unless all completed."""
    database = workdir / "orion.pkl"
    config = workdir / "orion.yaml"
    config.write_text("experiment:\n  algorithm:\n    random:\n      seed: 1\n")
    hunt_env = {**env, "ORION_DB_TYPE": "pickleddb", "ORION_DB_ADDRESS": str(database)}
    command = [ORION, "hunt", "-n", "bench", "-c", str(config), "--exp-max-trials", str(trials)]
    command += ["--working-dir", str(workdir / "trials"), *launcher, str(STARTUP)]
    command += ["--lr~loguniform(0.01, 1)"]
    started = time.perf_counter()
    finished = subprocess.run(command, env=hunt_env, capture_output=True, text=True, cwd=workdir)
    elapsed = time.perf_counter() - started
    if finished.returncode != 0 or f"trials completed: {trials}" not in finished.stdout:
        raise RuntimeError(f"hunt did not complete {trials} trials:\n{finished.stdout}")
    return elapsed


def summary(samples: list[dict[str, float]]) -> dict[str, object]:
    return {
        span: {
            "median_s": statistics.median(s[span] for s in samples),
            "min_s": min(s[span] for s in samples),
            "max_s": max(s[span] for s in samples),
        }
        for span in SPANS
    } | {"samples": samples}


def machine() -> dict[str, object]:
    import torch

    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="samples per launcher (>= 5)")
    parser.add_argument(
        "--hunt-trials",
        type=int,
        default=10,
        help="trials per hunt (the default config's max_trials); 0: none",
    )
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5 (the medians are reported)")

    report: dict[str, object] = {"machine": machine(), "fixture": str(STARTUP.relative_to(ROOT))}
    with tempfile.TemporaryDirectory(prefix="bench-launcher-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HPOPT_", "ORION_"))}
        env["HPOPT_EXEC_SOCKET"] = str(Path(tmp) / "warm.sock")
        started = time.perf_counter()
        subprocess.run([HPOPT_EXEC, "--serve"], env=env, check=True, capture_output=True)
        report["server_start_s"] = time.perf_counter() - started
        samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in LAUNCHERS}
        try:
            for _ in range(args.repeats):
                for mode, launcher in LAUNCHERS.items():
                    samples[mode].append(sample(launcher, env))
        finally:
            subprocess.run([HPOPT_EXEC, "--stop"], env=env, check=True, capture_output=True)
        report["startup"] = {mode: summary(runs) for mode, runs in samples.items()}

        if args.hunt_trials:
            hunts = {}
            for mode, launcher in LAUNCHERS.items():
                workdir = Path(tmp) / f"hunt-{mode}"
                workdir.mkdir()
                hunts[mode] = hunt(launcher, env, args.hunt_trials, workdir)
                if mode == "warm":
                    subprocess.run([HPOPT_EXEC, "--stop"], env=env, check=True)
            report["hunt"] = {"trials": args.hunt_trials, "wall_s": hunts}

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for span in SPANS:
        cold, warm = (report["startup"][mode][span]["median_s"] for mode in LAUNCHERS)
        print(f"{span:>16}: cold {cold:6.3f} s   warm {warm:6.3f} s   (median of {args.repeats})")
    if "hunt" in report:
        cold, warm = report["hunt"]["wall_s"].values()
        print(f"{args.hunt_trials}-trial hunt: cold {cold:.1f} s   warm {warm:.1f} s")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

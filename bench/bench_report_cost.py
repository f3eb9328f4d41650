"""Per-trial cost of reporting a result: hpopt's own result file vs ``orion.client``.

Each sample is the whole-process wall time of a no-op trial started as Orion starts one (a fresh
interpreter with ``ORION_RESULTS_PATH`` and the trial variables set), so interpreter start-up and
imports count, which is the point: ``import orion.client`` alone takes seconds, paid by every
trial. The hpopt trial does what a recipe does (``parse_arguments`` with ``--hpopt_mode orion``,
``report_result``); the Orion trial only calls ``report_objective``. Both variants alternate so
machine load drifts hit both alike; each run's result file is checked before its time counts.

    .venv/train/bin/python bench/bench_report_cost.py --repeats 3

Writes ``bench/results/report_cost.json`` and prints one summary line.
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

RESULTS = Path(__file__).parent / "results" / "report_cost.json"
OBJECTIVE = 0.25

TRIALS = {
    "hpopt": (
        "import hpopt as hp\n"
        "with hp.hyperparameter_optimization(objective_key='error') as ctx:\n"
        "    ctx.parse_arguments(['train.yaml', '--hpopt_mode', 'orion', '--device', 'cpu'])\n"
        f"    hp.report_result({{'error': {OBJECTIVE}}})\n"
    ),
    "orion_client": f"from orion.client import report_objective\nreport_objective({OBJECTIVE})\n",
}


def run_trial(code: str, results_file: Path) -> float:
    """Wall time of one trial process; fails if it did not report the objective."""
    results_file.write_text("")
    env = {
        **os.environ,
        "ORION_RESULTS_PATH": str(results_file),
        "ORION_EXPERIMENT_NAME": "bench",
        "ORION_EXPERIMENT_VERSION": "1",
        "ORION_TRIAL_ID": "0" * 32,
    }
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    reported = json.loads(results_file.read_text())
    objectives = [item["value"] for item in reported if item["type"] == "objective"]
    if objectives != [OBJECTIVE]:
        raise RuntimeError(f"trial reported {reported!r}, expected objective {OBJECTIVE}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per variant (>= 3)")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 for a meaningful median")

    samples: dict[str, list[float]] = {name: [] for name in TRIALS}
    with tempfile.TemporaryDirectory() as scratch:
        results_file = Path(scratch) / "results.log"
        for code in TRIALS.values():  # warm the page cache; not counted
            run_trial(code, results_file)
        for _ in range(args.repeats):
            for name, code in TRIALS.items():
                samples[name].append(run_trial(code, results_file))

    hpopt_s = statistics.median(samples["hpopt"])
    orion_s = statistics.median(samples["orion_client"])
    summary = {
        "benchmark": "whole-process wall time of a no-op trial that reports one objective",
        "hpopt_median_s": round(hpopt_s, 4),
        "orion_client_median_s": round(orion_s, 4),
        "orion_client_over_hpopt": round(orion_s / hpopt_s, 2),
        "repeats": args.repeats,
        "samples_s": {name: [round(s, 4) for s in values] for name, values in samples.items()},
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"report cost per trial: hpopt {hpopt_s:.3f} s, orion.client {orion_s:.3f} s "
        f"(x{orion_s / hpopt_s:.1f}), median of {args.repeats}; wrote {RESULTS}"
    )


if __name__ == "__main__":
    main()

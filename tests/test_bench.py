"""The benchmark harness still runs end to end (toy sizes), and `import hpopt` stays lazy.

The smoke runs measure nothing: they run every benchmark script on the toy corpus and a toy
model through the real recipe, launcher, Orion and Snakemake, so that bench/ cannot rot. They
write into a temporary results folder, never into bench/results or bench/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_run import without_coverage

# The benchmarks time things: under xdist they share one worker, never running beside each other.
pytestmark = [pytest.mark.bench, pytest.mark.xdist_group("bench")]

REPO = Path(__file__).resolve().parents[1]
RUN_ALL = REPO / "bench" / "run_all.py"
FAST = ("overhead", "features", "throughput", "search", "numerics")
SLOW = ("scaling", "e2e", "search_value")


def run_all(*args: str) -> subprocess.CompletedProcess[str]:
    """bench/run_all.py, unmeasured by coverage: bench/ is outside the measured source, and the
    pipeline code its workflows run is measured by the workflow tests, so measuring it here too
    would only make make test half as fast again."""
    return subprocess.run(
        [sys.executable, str(RUN_ALL), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=without_coverage(dict(os.environ)),
    )


def smoke(tmp_path: Path, names: tuple[str, ...]) -> tuple[str, dict[str, dict]]:
    readme = tmp_path / "README.md"
    run = run_all(
        "--smoke",
        "--only",
        ",".join(names),
        "--results-dir",
        str(tmp_path),
        "--readme",
        str(readme),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in names}
    return readme.read_text(), results


def test_smoke_fast_benchmarks_write_results_and_the_table(tmp_path: Path) -> None:
    table, results = smoke(tmp_path, FAST)
    assert all(result["smoke"] for result in results.values())
    assert results["overhead"]["variants"]["hpopt_warm"]["samples"][0]["objective"] >= 0
    assert results["search"]["identity_check"]["identical"] is True
    assert set(results["search"]["summary"]) >= {"random", "tpe", "asha", "hyperband"}
    assert results["features"]["epoch_s"]["audio"]["samples"]
    assert "bench-table:start" in table and "bench-table:end" in table
    for figure in ("1. Trial overhead", "2. Epoch", "3. Compute to within", "6. Training"):
        assert figure in table
    assert "e2e: not run" in table and "SMOKE" in table


@pytest.mark.slow
def test_smoke_workflow_benchmarks(tmp_path: Path) -> None:
    table, results = smoke(tmp_path, SLOW)
    assert results["e2e"]["hunt"]["same_trials"] is True
    assert set(results["e2e"]["rules"]) >= {"prepare", "hunt", "retrain_tuned_seed1987"}
    assert results["scaling"]["runs"]["2"]["completed"] >= 2
    # The default hunt, sequential (1 worker) and in its batch of 2 (2 workers).
    sequential, batched = (results["scaling"]["runs"][f"default-batch-{b}"] for b in (1, 2))
    assert sequential["workers"] == 1 and batched["workers"] == 2
    assert 0 < batched["training_share"] <= 1 and "Default hunt's wall time" in table
    assert "5. Default hunt" in table and "4. Completed trials per hour" in table
    value = results["search_value"]
    assert set(value["summary"]) == {"default", "default-native", "asha-5-15"}
    # Both arms were really retrained at every training seed, and compared seed by seed.
    for row in value["algorithms"]["default"]:
        test = row["comparison"]["splits"]["test"]
        assert len(test["tuned"]["values"]) == len(value["training_seeds"]) == 2
        assert test["untuned"]["values"] == value["untuned"]["values"]
    # The other profile's pick is compared with train.yaml retrained under that profile.
    (native,) = value["algorithms"]["default-native"]
    assert native["numerics"] == "native"
    assert native["comparison"]["splits"]["test"]["untuned"]["values"]
    assert "7. Does the search pay?" in table and "7. Default vs asha-5-15" in table
    assert "7. Default under numerics native" in table


def test_unknown_benchmark_is_refused_before_any_work(tmp_path: Path) -> None:
    run = run_all("--only", "overhead,serach", "--results-dir", str(tmp_path / "r"))
    assert run.returncode != 0
    assert "serach" in run.stderr and "search" in run.stderr
    assert not (tmp_path / "r" / "corpus").exists()


def test_gpu_script_says_why_it_cannot_run(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this host has nvidia-smi: bench/gpu.sh would really run")
    run = subprocess.run(
        [str(REPO / "bench" / "gpu.sh")], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 2
    assert "nvidia-smi not found" in run.stderr


def test_import_hpopt_defers_its_submodules() -> None:
    code = """
import sys
import hpopt
assert not any(name in sys.modules for name in ("hpopt.context", "hpopt.reporters",
    "hpopt.arguments")), sorted(n for n in sys.modules if n.startswith("hpopt"))
from hpopt import hyperparameter_optimization, report_result
assert "hpopt.context" in sys.modules
assert hpopt.hpopt_mode is hpopt.reporters.hpopt_mode
assert set(hpopt.__all__) <= set(dir(hpopt))
try:
    hpopt.no_such_name
except AttributeError as error:
    assert "no_such_name" in str(error)
else:
    raise SystemExit("hpopt.no_such_name did not raise AttributeError")
print(sorted(hpopt.__all__))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.replace("'", '"')) == [
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

"""hpopt in a real 2-process torchrun trial: one report (rank 0's), one trial id on all ranks."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "fixtures" / "hpopt_rank_report.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def torchrun(tmp_path: Path, *hpopt_args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HPOPT_", "ORION_", "TORCHELASTIC_"))
    }
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(SCRIPT), str(tmp_path)]
    finished = subprocess.run(
        [*command, *hpopt_args],
        env={**clean, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    return finished


def trial_ids(tmp_path: Path) -> list[str]:
    return [(tmp_path / f"rank-{rank}.txt").read_text() for rank in (0, 1)]


def test_generic_mode_prints_rank_zeros_result_once_with_a_shared_id(tmp_path):
    finished = torchrun(tmp_path, "--hpopt", "True", env={})
    reports = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    assert reports == [{"error": 0.1, "objective": 0.1}]
    first, second = trial_ids(tmp_path)
    assert first == second and first.startswith("torchrun-")


def test_orion_mode_writes_rank_zeros_result(tmp_path):
    results = tmp_path / "results.log"
    results.touch()
    orion_env = {
        "ORION_RESULTS_PATH": str(results),
        "ORION_EXPERIMENT_NAME": "ddp",
        "ORION_EXPERIMENT_VERSION": "2",
        "ORION_TRIAL_ID": "feed",
    }
    finished = torchrun(tmp_path, "--hpopt_mode", "orion", env=orion_env)
    assert json.loads(results.read_text())[0] == {
        "name": "objective",
        "type": "objective",
        "value": 0.1,
    }
    assert trial_ids(tmp_path) == ["ddp-2-feed", "ddp-2-feed"]
    assert not [line for line in finished.stdout.splitlines() if line.startswith("{")]

"""`make audit` on a finished run: PASS untouched, FAIL naming each tampered thing.

A second run in a fresh folder agreeing bit for bit is tests/test_deploy.py's check."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_run import REPO

WORKFLOW_PYTHON = REPO / ".venv" / "workflow" / "bin" / "python"
EXPERIMENT = "results/speaker_id"


def audit(workdir: Path, *extra: str, hunt: bool = False) -> subprocess.CompletedProcess:
    """`reprohunt.audit` on the run in `workdir`; `hunt`: with AUDIT_HUNT=1 (the hunt re-run)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reprohunt.audit",
            "--results",
            EXPERIMENT,
            "--workflow-python",
            str(WORKFLOW_PYTHON),
            *extra,
        ],
        cwd=workdir,
        env=os.environ | {"AUDIT_HUNT": "1" if hunt else "0"},
        capture_output=True,
        text=True,
    )


def copy_run(tiny_run: Path, destination: Path) -> Path:
    shutil.copytree(tiny_run / "results", destination / "results", symlinks=True)
    return destination


@pytest.mark.slow
def test_untouched_run_audits_pass(tiny_run: Path, tmp_path: Path) -> None:
    """Also the hunt re-run: the tiny run's hunt ran two trials at once (the default's optuna
    batch of 2), and its re-run must give every trial again, in order."""
    workdir = copy_run(tiny_run, tmp_path)
    spec = json.loads((workdir / EXPERIMENT / "hunt/spec.json").read_text())
    assert spec["n_workers"] == 2 and spec["algorithm"]["optuna"]["batch"] == 2
    run = audit(workdir, hunt=True)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((workdir / EXPERIMENT / "audit/audit.json").read_text())
    assert report["passed"] is True
    statuses = {check["check"]: check["status"] for check in report["checks"]}
    assert statuses["retraining reproduces the final runs (first seed, both arms)"] == "PASS"
    assert statuses["comparison recomputed from the per-seed results"] == "PASS"
    assert statuses["data and features re-hashed"] == "PASS"
    assert statuses["hunt re-run gives the same trials and best"] == "PASS"
    # One seed of each arm retrained, in the audit's own folder.
    assert sorted(p.name for p in (workdir / EXPERIMENT / "audit/final").iterdir()) == [
        "tuned-seed1987",
        "untuned-seed1987",
    ]
    assert re.search(r"^PASS\s+train env matches lock and record", run.stdout, re.M)


@pytest.mark.slow
def test_tampering_fails_the_audit_naming_what_differs(tiny_run: Path, tmp_path: Path) -> None:
    workdir = copy_run(tiny_run, tmp_path)
    results = workdir / EXPERIMENT
    audio = sorted((results / "data/corpus").rglob("*.flac"))[0]
    audio.write_bytes(audio.read_bytes()[:-1] + b"\0")
    features = results / "data/features/valid.npy"
    features.write_bytes(features.read_bytes()[:-4] + b"\0\0\0\0")
    metrics = json.loads((results / "final/metrics.json").read_text())
    metrics["metrics"]["test"]["error"] += 0.125
    (results / "final/metrics.json").write_text(json.dumps(metrics))
    # A seed the audit does not retrain: only the recomputed comparison can catch it.
    per_seed = results / "final/untuned/seed1988/metrics.json"
    untuned = json.loads(per_seed.read_text())
    untuned["metrics"]["test"]["error"] += 0.125
    per_seed.write_text(json.dumps(untuned))
    locks = tmp_path / "locks"
    shutil.copytree(REPO / "containers/requirements", locks)
    lock = (
        locks
        / json.loads((results / "provenance.json").read_text())["environments"]["train"]["lock"]
    )
    lock.write_text(re.sub(r"^tqdm==\S+", "tqdm==0.0.1", lock.read_text(), flags=re.M))
    record = {name: (results / name).read_bytes() for name in ("provenance.json", "report.html")}

    run = audit(workdir, "--locks", str(locks))
    assert run.returncode == 1
    out = run.stdout
    assert re.search(r"^FAIL\s+train env matches lock and record", out, re.M)
    assert "tqdm is" in out and "pins 0.0.1" in out
    assert re.search(r"^FAIL\s+data and features re-hashed", out, re.M)
    assert re.search(rf"changed: \S*{re.escape(audio.name)} \(sha256", out)
    assert re.search(r"changed: \S*features/valid\.npy \(sha256", out)
    assert re.search(r"^FAIL\s+retraining reproduces the final runs", out, re.M)
    assert "final/metrics.json: test.error: recorded" in out
    assert "differs from the final metrics recorded in provenance.json" in out
    assert re.search(r"^FAIL\s+comparison recomputed from the per-seed results", out, re.M)
    assert "final/untuned/seed1988/metrics.json differs from the one recorded" in out
    assert "comparison.json: splits.test.untuned.values[1]: recorded" in out
    assert json.loads((results / "audit/audit.json").read_text())["passed"] is False
    # The audit never edits what it audits.
    assert {name: (results / name).read_bytes() for name in record} == record


@pytest.mark.slow
def test_a_tampered_comparison_or_trial_fails_the_audit(tiny_run: Path, tmp_path: Path) -> None:
    """A forged comparison, and a forged trial record, which only the hunt re-run can catch:
    the best trial is left as it was, so the best params and objective still agree."""
    workdir = copy_run(tiny_run, tmp_path)
    path = workdir / EXPERIMENT / "final/comparison.json"
    comparison = json.loads(path.read_text())
    comparison["verdict_text"] = "tuning helped: forged"
    comparison["splits"]["test"]["difference"]["ci"] = [-0.5, -0.25]
    path.write_text(json.dumps(comparison))
    trials_path = workdir / EXPERIMENT / "hunt/trials.json"
    trials = json.loads(trials_path.read_text())
    best = json.loads((workdir / EXPERIMENT / "hunt/best.json").read_text())["trial_id"]
    forged = next(number for number, trial in enumerate(trials) if trial["id"] != best)
    trials[forged]["objective"] += 0.5
    trials_path.write_text(json.dumps(trials))

    run = audit(workdir, hunt=True)
    assert run.returncode == 1, run.stdout
    out = run.stdout
    assert re.search(r"^FAIL\s+comparison recomputed from the per-seed results", out, re.M)
    assert re.search(r"^PASS\s+retraining reproduces the final runs", out, re.M)
    assert "comparison.json differs from the comparison recorded in provenance.json" in out
    assert "comparison.json: verdict_text: recorded 'tuning helped: forged', recomputed" in out
    assert "comparison.json: splits.test.difference.ci[0]: recorded -0.5" in out
    assert re.search(r"^FAIL\s+hunt re-run gives the same trials and best", out, re.M)
    assert f"trial {forged} (hunt/trials.json {trials[forged]['id']}): recorded" in out
    assert "best params" not in out

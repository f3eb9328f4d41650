"""`make audit`: re-check an existing `results/<exp>/` against its provenance record.

Read-only on what it audits: it is not a Snakemake rule (so no stale upstream rule can rerun
first and replace the evidence), it takes no config (everything comes from the results folder's
own records, so a result made with any config is audited as it was made), and it writes only
under `<results>/audit/`.

1. environments: each env's installed packages against its lock and against the recorded
   `pip freeze` (every difference listed);
2. data: every audio, manifest and feature file re-hashed (`reprohunt.dataverify`), and the hashes
   file itself against the record;
3. retraining: the final model retrained from the recorded best params in a fresh folder, its
   objective and every test metric compared with the recorded ones through the result contract
   (bit-identical on CPU, within GPU_TOLERANCE on GPU): a recorded result that does not name
   them fails, so this check can never pass without comparing;
4. with AUDIT_HUNT=1: the whole hunt re-run as a new experiment, which must find the same best
   params (a seeded sequential search replays its trial sequence).
Prints a PASS/FAIL table, writes `audit/audit.json`, and exits 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpopt.files import sha256_file
from reprohunt import retrain
from reprohunt.provenance import LOCKS, pip_freeze
from reprohunt.result import ResultError
from reprohunt.result import load as load_result

# Absolute tolerance on a retrained error/loss when the original ran on a GPU: cuDNN/cuBLAS
# kernels are not bit-reproducible across runs even with deterministic flags.
GPU_TOLERANCE = 0.02
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


def check(name: str, problems: list[str], skip_reason: str | None = None) -> dict[str, Any]:
    if skip_reason:
        return {"check": name, "status": SKIP, "details": [skip_reason]}
    return {"check": name, "status": FAIL if problems else PASS, "details": problems}


def lock_pins(lock: Path) -> dict[str, str]:
    """`name==version` pins of a hashed lock, names normalised as pip does."""
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", lock.read_text(), re.M)
    return {normalise(name): version for name, version in pins}


def freeze_pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalise(name)] = version.strip()
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def env_problems(name: str, recorded: dict[str, Any], python: str, locks: Path) -> list[str]:
    problems = []
    installed = freeze_pins(pip_freeze(python))
    lock = locks / recorded["lock"] if recorded.get("lock") else None
    if lock is None or not lock.exists():
        problems.append(f"{name}: lock file {lock} not found")
    else:
        for package, version in sorted(lock_pins(lock).items()):
            if installed.get(package) != version:
                got = installed.get(package, "not installed")
                problems.append(f"{name}: {package} is {got}, {lock.name} pins {version}")
    before = freeze_pins(recorded["pip_freeze"])
    for package in sorted(set(before) | set(installed)):
        if before.get(package) != installed.get(package):
            problems.append(
                f"{name}: {package} was {before.get(package, 'absent')} in the recorded run, "
                f"now {installed.get(package, 'absent')}"
            )
    return problems


def data_problems(results: Path, provenance: dict[str, Any]) -> list[str]:
    data = results / "data"
    problems = []
    verify = subprocess.run(
        [sys.executable, "-m", "reprohunt.dataverify", str(data)], capture_output=True, text=True
    )
    if verify.returncode != 0:
        problems += [
            line for line in verify.stdout.splitlines() + verify.stderr.splitlines() if line
        ]
    if sha256_file(data / "hashes.json") != provenance["data_hashes_sha256"]:
        problems.append(f"{data / 'hashes.json'} differs from the one recorded in provenance.json")
    return problems


def retrain_problems(results: Path, provenance: dict[str, Any]) -> list[str]:
    """Retrain from the record and compare the objective and every test metric."""
    recipe = provenance["recipe"]
    try:
        recorded = load_result(results / "final" / "metrics.json")
    except ResultError as error:
        return [str(error)]
    problems = []
    if recorded.document != provenance["final_metrics"]:
        problems.append(
            f"{recorded.path} differs from the final metrics recorded in provenance.json"
        )
    out = results / "audit" / "retrain"
    shutil.rmtree(out, ignore_errors=True)
    log_path = results / "audit" / "retrain.log"
    with log_path.open("w") as log:
        try:
            fresh = retrain.run(recipe, provenance["best"]["params"], results / "data", out, log)
        except ResultError as error:
            return [*problems, f"retraining failed: {error}; see {log_path}"]
    on_gpu = recipe["device"].startswith("cuda")
    rule = f"within {GPU_TOLERANCE}" if on_gpu else "bit-identical"
    retrained = fresh.compared_values()
    for key, value in recorded.compared_values().items():
        new = retrained.get(key)
        same = new == value if not on_gpu else new is not None and abs(new - value) <= GPU_TOLERANCE
        if not same:
            problems.append(f"{key}: recorded {value!r}, retrained {new!r} ({rule} required)")
    return problems


def hunt_problems(results: Path, provenance: dict[str, Any]) -> list[str]:
    """Re-run the hunt as experiment `<name>-audit` under audit/ and compare the best params."""
    from reprohunt import best, hunt

    spec = json.loads((results / "hunt" / "spec.json").read_text())
    audit_hunt = results / "audit" / "hunt"
    shutil.rmtree(audit_hunt, ignore_errors=True)
    audit_hunt.mkdir(parents=True)
    spec |= {"experiment": f"{spec['experiment']}-audit", "storage": {"type": "pickleddb"}}
    (audit_hunt / "spec.json").write_text(json.dumps(spec, indent=2))
    code = hunt.main(
        [
            "--spec",
            str(audit_hunt / "spec.json"),
            "--data",
            str(results / "data/prepared.json"),
            "--out",
            str(audit_hunt / "hunt.json"),
        ]
    )
    if code != 0:
        return [f"the audit hunt failed (exit {code})"]
    best.main(
        [
            "--hunt",
            str(audit_hunt / "hunt.json"),
            "--spec",
            str(audit_hunt / "spec.json"),
            "--out-dir",
            str(audit_hunt),
        ]
    )
    found = json.loads((audit_hunt / "best.json").read_text())
    recorded = provenance["best"]
    problems = []
    if found["params"] != recorded["params"]:
        problems.append(
            f"best params: recorded {recorded['params']}, re-run found {found['params']}"
        )
    if found["objective"] != recorded["objective"]:
        problems.append(
            f"best objective: recorded {recorded['objective']}, re-run {found['objective']}"
        )
    return problems


def audit(results: Path, workflow_python: str, locks: Path, rerun_hunt: bool) -> list[dict]:
    provenance = json.loads((results / "provenance.json").read_text())
    envs = provenance["environments"]
    checks = [
        check(
            "train env matches lock and record",
            env_problems("train", envs["train"], sys.executable, locks),
        ),
        check(
            "workflow env matches lock and record",
            env_problems("workflow", envs["workflow"], workflow_python, locks),
        ),
        check("data and features re-hashed", data_problems(results, provenance)),
        check("retraining reproduces the final metrics", retrain_problems(results, provenance)),
    ]
    spec = json.loads((results / "hunt" / "spec.json").read_text())
    skip = None
    if not rerun_hunt:
        skip = "set AUDIT_HUNT=1 to re-run the hunt"
    elif spec["n_workers"] != 1 or spec.get("parallel_hunts", 1) != 1:
        skip = "parallel trials do not replay a trial sequence; needs one worker, one hunt"
    elif (replay := provenance["orion"]["replay"])["expected"] and not replay["intact"]:
        skip = (
            "the recorded hunt departed from its seeded trial sequence, so a re-run cannot "
            "reproduce it: " + "; ".join(replay["departures"])
        )
    checks.append(
        check(
            "hunt re-run finds the same best params",
            [] if skip else hunt_problems(results, provenance),
            skip,
        )
    )
    return checks


def print_table(checks: list[dict[str, Any]]) -> None:
    width = max(len(c["check"]) for c in checks)
    for item in checks:
        print(f"{item['status']:<5} {item['check']:<{width}}")
        for detail in item["details"]:
            print(f"      - {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="results/<experiment>")
    parser.add_argument("--workflow-python", required=True, help="the workflow env's python")
    parser.add_argument("--locks", type=Path, default=LOCKS, help="folder of the lock files")
    parser.add_argument("--out", type=Path, help="default: <results>/audit/audit.json")
    args = parser.parse_args(argv)
    if not (args.results / "provenance.json").exists():
        print(
            f"error: {args.results / 'provenance.json'} not found: audit a finished run "
            "(run `make run` first)",
            file=sys.stderr,
        )
        return 2
    (args.results / "audit").mkdir(exist_ok=True)
    checks = audit(
        args.results, args.workflow_python, args.locks, os.environ.get("AUDIT_HUNT") == "1"
    )
    print_table(checks)
    passed = all(c["status"] != FAIL for c in checks)
    out = args.out or args.results / "audit" / "audit.json"
    out.write_text(json.dumps({"passed": passed, "checks": checks}, indent=2) + "\n")
    print("audit", "PASSED" if passed else "FAILED", f"({out})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

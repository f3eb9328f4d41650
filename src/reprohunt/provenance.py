"""`results/<exp>/provenance.json`: everything a reviewer needs to know how a result was made.

Collected after retraining, from the files the earlier steps wrote (so no Orion import): code
version, both environments (lock hashes and installed `pip freeze`), hardware and CUDA facts,
data and feature hashes, seeds and determinism flags, the whole Orion experiment with every
trial, the final stage (each seed's tuned and untuned result and their comparison), the exact
commands Snakemake ran, and each rule's wall time and peak memory. The `checklist` section maps
these onto the ACL/NeurIPS reproducibility items for HPO.
Database credentials never appear: storage is recorded through `public_description`.
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpopt.files import digest_of, sha256_file, sha256_text, write_json_atomically
from reprohunt import numerics
from reprohunt.compare import ARMS, TUNED, arm_result
from reprohunt.hunt import configuration
from reprohunt.records import (
    Best,
    Comparison,
    Delivered,
    EnvironmentFacts,
    FinalStage,
    Hardware,
    HuntSpec,
    HuntSummary,
    OrionRecord,
    Provenance,
    RuleCost,
    Seeds,
    load_trials,
)
from reprohunt.result import load as load_result
from reprohunt.scheduler import scheduler_facts

# The code's checkout (the package is installed from it), not Snakemake's working directory.
REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "containers" / "requirements"
# The image reference and digest can only be given from outside the image (docker run -e …);
# the revision is baked in at build time, since the image has no .git.
IMAGE_ENV_VARS = ("REPROHUNT_IMAGE", "REPROHUNT_IMAGE_DIGEST", "REPROHUNT_IMAGE_REVISION")
# A data group with more files than this is recorded as one digest, so that a corpus of
# thousands of files does not swell the record (and the published result made from it).
LISTED_FILES = 20


def run(command: list[str], cwd: Path | None = None) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True, cwd=cwd).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def git_facts() -> dict[str, Any]:
    commit = run(["git", "rev-parse", "HEAD"], cwd=REPO)
    if commit is None:
        return {
            "commit": os.environ.get("REPROHUNT_IMAGE_REVISION"),
            "note": "no git checkout: commit is the image's build revision, if any",
        }
    status = run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO) or ""
    diff = run(["git", "diff", "HEAD"], cwd=REPO) or ""
    return {
        "repository": str(REPO),
        "commit": commit.strip(),
        "dirty": bool(status.strip()),
        "diff_sha256": sha256_text(diff) if diff else None,
        "changed_files": [line[3:] for line in status.splitlines()],
    }


def pip_freeze(python: str) -> list[str]:
    """`pip freeze --all` of the environment that `python` belongs to (empty if it fails)."""
    return (run([python, "-m", "pip", "freeze", "--all"]) or "").splitlines()


def env_facts(python: str) -> EnvironmentFacts:
    """Which lock built this venv (stamps written by containers/setup-env.sh) and what it holds."""
    venv = Path(python).parent.parent
    stamp, name = venv / ".lock-sha256", venv / ".lock-name"
    freeze = pip_freeze(python)
    lock_name = name.read_text().strip() if name.exists() else None
    lock_file = LOCKS / lock_name if lock_name else None
    return EnvironmentFacts(
        python=python,
        lock=lock_name,
        lock_sha256_at_setup=stamp.read_text().strip() if stamp.exists() else None,
        lock_sha256_now=sha256_file(lock_file) if lock_file and lock_file.exists() else None,
        pip_freeze=freeze,
        pip_freeze_sha256=sha256_text("\n".join(freeze)),
    )


def hardware_facts() -> Hardware:
    import torch
    from torch.utils import collect_env

    return Hardware(
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        torch=str(torch.__version__),
        torch_cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        cuda_available=torch.cuda.is_available(),
        gpus=[torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())],
        nvidia_smi=run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"]
        ),
        image={name: os.environ.get(name) for name in IMAGE_ENV_VARS},
        collect_env=collect_env.get_env_info()._asdict(),
    )


def snakemake_command(output: str) -> str | None:
    """The shell command Snakemake recorded for `output` (its metadata store)."""
    record = (
        Path.cwd() / ".snakemake" / "metadata" / base64.urlsafe_b64encode(output.encode()).decode()
    )
    if not record.exists():
        return None
    return json.loads(record.read_text()).get("shellcmd")


def rule_costs(results: Path) -> dict[str, RuleCost]:
    """Wall time (s) and peak memory (MiB) per rule, from Snakemake's `benchmark:` files."""
    costs = {}
    for path in sorted((results / "benchmarks").glob("*.tsv")):
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"), None)
        if row:
            costs[path.stem] = RuleCost(float(row["s"]), _number(row["max_rss"]))
    return costs


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # Snakemake writes NA when it could not measure


def checklist(
    orion: OrionRecord,
    best: Best,
    final_metrics: dict[str, Any],
    final: FinalStage,
    costs: dict[str, RuleCost],
    hardware: Hardware,
    numerics_facts: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    """ACL 2021 / NeurIPS checklist items for hyperparameter search, filled from the record."""
    durations = [t.duration_s for t in orion.trials if t.duration_s is not None]
    return {
        "bounds_of_each_hyperparameter": orion.space,
        "number_of_trials": {
            "completed": best.trials_completed,
            "total": len(orion.trials),
            "max_trials": orion.max_trials,
        },
        "method_of_choosing_hyperparameters": orion.algorithm,
        "selection_criterion": best.selection_rule,
        "best_configuration": best.params,
        "best_validation_objective": best.objective,
        "final_test_metrics": final_metrics["metrics"]["test"],
        "tuned_against_untuned": final.comparison.verdict_text,
        "average_trial_runtime_s": sum(durations) / len(durations) if durations else None,
        "rule_runtimes": {rule: dataclasses.asdict(cost) for rule, cost in costs.items()},
        "computing_infrastructure": {
            "platform": hardware.platform,
            "cpu_count": hardware.cpu_count,
            "gpus": hardware.gpus,
            "torch": hardware.torch,
            "numerics": numerics.describe(numerics_facts),
        },
        "data_splits": data.get("counts"),
    }


def final_facts(final: Path) -> FinalStage:
    """The final stage: its seeds, each run's result (with its run folder), the comparison."""
    comparison = Comparison.load(final / "comparison.json")
    seeds = comparison.seeds
    return FinalStage(
        seeds=seeds,
        delivered=Delivered(arm=TUNED, seed=seeds[0], result="final/metrics.json"),
        runs={
            arm: {str(seed): load_result(arm_result(final, arm, seed)).document for seed in seeds}
            for arm in ARMS
        },
        comparison=comparison,
    )


def data_files(hashes: dict[str, dict[str, str]]) -> dict[str, str]:
    """`path: sha256` of each prepared file, a group of more than LISTED_FILES files as one entry
    `<group>/ (<N> files)`: enough for a published result to name the first file that differs."""
    found: dict[str, str] = {}
    for group, files in hashes.items():
        if len(files) > LISTED_FILES:
            found[f"{group}/ ({len(files)} files)"] = digest_of(files)
        else:
            found |= {path: files[path] for path in sorted(files)}
    return found


def build_record(results: Path, workflow_python: str) -> Provenance:
    """The record of `results/<experiment>/`: its rule's inputs, plus what the whole folder
    tells (each rule's benchmark file, the commands in Snakemake's metadata)."""
    hunt_dir = results / "hunt"
    spec = HuntSpec.load(hunt_dir / "spec.json")
    hunt = HuntSummary.load(hunt_dir / "hunt.json")
    best = Best.load(hunt_dir / "best.json")
    final_dir = results / "final"
    final = final_facts(final_dir)
    configured = configuration(spec)
    hardware = hardware_facts()
    # This rule runs under the profile of every computing rule (reprohunt.logged).
    numerics_facts = numerics.in_use(spec.recipe.get("numerics", numerics.NATIVE))
    data = json.loads((results / "data" / "prepared.json").read_text())
    orion = OrionRecord(
        experiment=hunt.name,
        version=hunt.version,
        storage=hunt.storage,
        space=spec.space,
        algorithm=spec.algorithm,
        max_trials=spec.max_trials,
        max_broken=spec.max_broken,
        n_workers=spec.n_workers,
        status_counts=hunt.status_counts,
        replay=hunt.replay,
        trials=load_trials(hunt_dir / "trials.json"),
    )
    final_metrics = load_result(final_dir / "metrics.json").document
    costs = rule_costs(results)
    return Provenance(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        results=str(results),
        git=git_facts(),
        environments={"train": env_facts(sys.executable), "workflow": env_facts(workflow_python)},
        hardware=hardware,
        numerics=numerics_facts,
        data=data,
        data_hashes_sha256=sha256_file(results / "data" / "hashes.json"),
        data_files_sha256=data_files(json.loads((results / "data" / "hashes.json").read_text())),
        recipe={key: spec.recipe[key] for key in sorted(spec.recipe)},
        # What the Orion experiment name hashes besides the data (reprohunt.hunt.configuration).
        configuration=configured,
        configuration_sha256=sha256_text(json.dumps(configured, sort_keys=True)),
        seeds=Seeds(recipe=spec.recipe["seed"], orion_algorithm=spec.algorithm, final=final.seeds),
        determinism={
            "torch.use_deterministic_algorithms": True,
            "note": "set by the recipe; CPU reruns are bit-identical (make audit checks it)",
        },
        orion=orion,
        best=best,
        final_metrics=final_metrics,
        final=final,
        commands={
            "hunt": hunt.command,
            **{
                step: snakemake_command(str(results / path))
                for step, path in (
                    ("prepare", "data/prepared.json"),
                    ("hunt_rule", "hunt/hunt.json"),
                    ("best", "hunt/best.json"),
                    ("compare", "final/comparison.json"),
                )
            },
            "retrain": {
                f"{arm}/seed{seed}": snakemake_command(str(arm_result(final_dir, arm, seed)))
                for arm in ARMS
                for seed in final.seeds
            },
        },
        rule_costs=costs,
        # SLURM job id, node and state of each rule that ran on SLURM (Snakemake's cwd).
        scheduler=scheduler_facts(Path.cwd()),
        checklist=checklist(
            orion, best, final_metrics, final, costs, hardware, numerics_facts, data
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="results/<experiment>")
    parser.add_argument("--workflow-python", required=True, help="the workflow env's python")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    record = build_record(args.results, args.workflow_python)
    write_json_atomically(args.out, record.document(), indent=2, default=str)
    print(f"provenance written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

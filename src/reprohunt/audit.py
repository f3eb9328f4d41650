"""`make audit`: re-check an existing `results/<exp>/` against its provenance record.

Read-only on what it audits: it is not a Snakemake rule (so no stale upstream rule can rerun
first and replace the evidence), it takes no config (everything comes from the results folder's
own records, so a result made with any config is audited as it was made), and it writes only
under `<results>/audit/`.

1. environments: each env's installed packages against its lock and against the recorded
   `pip freeze` (every difference listed);
2. data: every audio, manifest and feature file re-hashed (`reprohunt.dataverify`), and the hashes
   file itself against the record;
3. final runs: the first final seed of each arm (tuned: the recorded best params; untuned:
   train.yaml as is) retrained in a fresh folder, its objective and every test metric compared
   with the recorded per-seed result (and the tuned one with the delivered final/metrics.json)
   through the result contract, under the numerics profile the record names (bit-identical on
   CPU for a portable record, or a native one made on this CPU; within SPREAD_STDS of the arm's
   seeds, a check named as weaker, for a native record from another CPU; within GPU_TOLERANCE
   on GPU): a recorded result that does not name them fails, so this check can never pass
   without comparing;
4. comparison: every per-seed result against the record, and final/comparison.json against
   the record and against the comparison recomputed from the per-seed results (reprohunt.compare),
   so a tampered per-seed file (of any seed) or comparison fails;
5. with AUDIT_HUNT=1: the whole hunt re-run as a new experiment, which must find the same best
   params and the same trials (a seeded search replays its trial sequence: HuntSpec.replays);
6. when the repository publishes a result for this experiment (`published/<name>.json`), how the
   run compares with it (reprohunt.published), as INFO: a run of another configuration or on
   other data is no wrong run, so this never fails the audit.
Prints a PASS/FAIL/INFO table, writes `audit/audit.json`, and exits 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpopt.files import sha256_file, write_json_atomically
from reprohunt import compare, numerics, published, retrain
from reprohunt.compare import ARMS, TUNED, UNTUNED, arm_result
from reprohunt.orion_storage import storage_config
from reprohunt.provenance import LOCKS, pip_freeze
from reprohunt.published import differences
from reprohunt.records import (
    Comparison,
    EnvironmentFacts,
    FinalStage,
    HuntSpec,
    HuntSummary,
    Provenance,
    RecordError,
    TrialRecord,
    load_trials,
)
from reprohunt.result import Result, ResultError
from reprohunt.result import load as load_result

# Absolute tolerance on a retrained error/loss when the original ran on a GPU: cuDNN/cuBLAS
# kernels are not bit-reproducible across runs even with deterministic flags.
GPU_TOLERANCE = 0.02
# The weaker check of a native-numerics result audited on another CPU: a retrained value must
# lie within this many standard deviations of the recorded arm's mean over the final seeds.
SPREAD_STDS = 3.0
PASS, FAIL, SKIP, INFO = "PASS", "FAIL", "SKIP", "INFO"
REPRODUCES = "retraining reproduces the final runs (first seed, both arms)"
WEAKLY_REPRODUCES = (
    "retraining agrees with the final runs within the seeds' spread (first seed, both arms; "
    "weaker: native numerics, another CPU)"
)
RECOMPUTED = "comparison recomputed from the per-seed results"
COMPARED_WITH_PUBLISHED = "compared with the published result (informational)"
PREDATES_FINAL_STAGE = (
    "provenance.json has no `final` section: the result predates the final stage (tuned and "
    "untuned runs at several seeds); rerun the workflow to make one"
)


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


def env_problems(name: str, recorded: EnvironmentFacts, python: str, locks: Path) -> list[str]:
    problems = []
    installed = freeze_pins(pip_freeze(python))
    lock = locks / recorded.lock if recorded.lock else None
    if lock is None or not lock.exists():
        problems.append(f"{name}: lock file {lock} not found")
    else:
        for package, version in sorted(lock_pins(lock).items()):
            if installed.get(package) != version:
                got = installed.get(package, "not installed")
                problems.append(f"{name}: {package} is {got}, {lock.name} pins {version}")
    before = freeze_pins(recorded.pip_freeze)
    for package in sorted(set(before) | set(installed)):
        if before.get(package) != installed.get(package):
            problems.append(
                f"{name}: {package} was {before.get(package, 'absent')} in the recorded run, "
                f"now {installed.get(package, 'absent')}"
            )
    return problems


def data_problems(results: Path, provenance: Provenance) -> list[str]:
    data = results / "data"
    problems = []
    verify = subprocess.run(
        [sys.executable, "-m", "reprohunt.dataverify", str(data)], capture_output=True, text=True
    )
    if verify.returncode != 0:
        problems += [
            line for line in verify.stdout.splitlines() + verify.stderr.splitlines() if line
        ]
    if sha256_file(data / "hashes.json") != provenance.data_hashes_sha256:
        problems.append(f"{data / 'hashes.json'} differs from the one recorded in provenance.json")
    return problems


@dataclasses.dataclass
class Reproduction:
    """How closely the audit's retraining must match the record here, and why."""

    strict: bool
    note: str | None = None


def reproduction(provenance: Provenance) -> Reproduction:
    """Bit-identity where it is expected; a weaker check where the record says it is not.

    Sets the recorded profile in this process's environment first, so that every retraining
    the audit starts runs under it (reprohunt.numerics)."""
    profile = provenance.recipe.get("numerics", numerics.NATIVE)
    numerics.apply(profile, f"{provenance.results}/provenance.json recipe.numerics")
    recorded, here = provenance.numerics, numerics.in_use(profile)
    where = f"here with {numerics.describe(here)}"
    if recorded is None:
        return Reproduction(False, f"the record predates numerics profiles; audited {where}")
    made = f"made with {numerics.describe(recorded)}"
    if profile == numerics.PORTABLE:
        return Reproduction(True, f"{made}; audited {where}: bit-identity required")
    same = numerics.same_cpu(recorded["cpu"], here["cpu"]) and (
        recorded["torch_cpu_capability"] == here["torch_cpu_capability"]
    )
    if same:
        return Reproduction(True, f"{made}; the same CPU {where}: bit-identity required")
    return Reproduction(
        False,
        f"{made}; bit-identity is not expected {where}. Weaker check: each retrained value must "
        f"lie within {SPREAD_STDS:g} standard deviations of the recorded arm's mean over its seeds",
    )


def seed_spread(final: Path, arm: str, seeds: list[int]) -> dict[str, tuple[float, float]]:
    """`key: (low, high)`: the recorded arm's mean ± SPREAD_STDS std (ddof 1) over its seeds."""
    values: dict[str, list[float]] = {}
    for seed in seeds:
        for key, value in load_result(arm_result(final, arm, seed)).compared_values().items():
            values.setdefault(key, []).append(value)
    spread = {}
    for key, column in values.items():
        width = SPREAD_STDS * statistics.stdev(column) if len(column) > 1 else 0.0
        mean = statistics.fmean(column)
        spread[key] = (mean - width, mean + width)
    return spread


def final_run_problems(
    results: Path, provenance: Provenance, recorded_final: FinalStage, rule: Reproduction
) -> list[str]:
    """Retrain one seed of each arm from the record and compare the objective and every test
    metric with the recorded per-seed result (and, for the tuned run, the delivered one):
    bit-identical on CPU where `rule` is strict, within GPU_TOLERANCE on GPU, else within the
    arm's recorded seed spread."""
    recipe, final = provenance.recipe, results / "final"
    seeds = recorded_final.seeds
    seed = seeds[0]
    problems = []
    try:
        delivered = load_result(final / "metrics.json")
    except ResultError as error:
        return [str(error)]
    if delivered.document != provenance.final_metrics:
        problems.append(
            f"{delivered.path} differs from the final metrics recorded in provenance.json"
        )
    on_gpu = recipe["device"].startswith("cuda")
    if on_gpu:
        required = f"within {GPU_TOLERANCE}"
    else:
        required = "bit-identical" if rule.strict else f"within {SPREAD_STDS:g} std of the seeds"
    for arm in ARMS:
        try:
            recorded = [load_result(arm_result(final, arm, seed))]
            spread = {} if rule.strict or on_gpu else seed_spread(final, arm, seeds)
        except ResultError as error:
            problems.append(str(error))
            continue
        if arm == TUNED:
            recorded.append(delivered)
        params = provenance.best.params if arm == TUNED else {}
        out = results / "audit" / "final" / f"{arm}-seed{seed}"
        shutil.rmtree(out, ignore_errors=True)
        log_path = results / "audit" / f"retrain_{arm}_seed{seed}.log"
        with log_path.open("w") as log:
            try:
                fresh = retrain.run(recipe | {"seed": seed}, params, results / "data", out, log)
            except ResultError as error:
                problems.append(f"{arm} retraining failed: {error}; see {log_path}")
                continue
        retrained = fresh.compared_values()
        for result in recorded:
            for key, value in result.compared_values().items():
                new = retrained.get(key)
                if new is None:
                    same = False
                elif on_gpu:
                    same = abs(new - value) <= GPU_TOLERANCE
                elif rule.strict:
                    same = new == value
                else:
                    low, high = spread.get(key, (value, value))
                    same = low <= new <= high
                if not same:
                    problems.append(
                        f"{result.path}: {key}: recorded {value!r}, {arm} seed {seed} "
                        f"retrained {new!r} ({required} required)"
                    )
    if problems and rule.note:
        problems.append(rule.note)
    return problems


def comparison_problems(results: Path, recorded: FinalStage) -> list[str]:
    """Each per-seed result against the record, and the comparison recomputed from them."""
    final = results / "final"
    seeds = recorded.seeds
    problems = []
    runs: dict[str, list[Result]] = {arm: [] for arm in ARMS}
    for arm in ARMS:
        for seed in seeds:
            try:
                result = load_result(arm_result(final, arm, seed))
            except ResultError as error:
                problems.append(str(error))
                continue
            if result.document != recorded.runs[arm][str(seed)]:
                problems.append(f"{result.path} differs from the one recorded in provenance.json")
            runs[arm].append(result)
    path = final / "comparison.json"
    if not path.is_file():
        return [*problems, f"{path} not found"]
    try:
        comparison = Comparison.load(path)
    except RecordError as error:
        return [*problems, str(error)]
    if comparison != recorded.comparison:
        problems.append(f"{path} differs from the comparison recorded in provenance.json")
    if any(len(arm_runs) != len(seeds) for arm_runs in runs.values()):
        return problems  # an unreadable per-seed result, named above: nothing to recompute
    try:
        recomputed = compare.compare(seeds, runs[TUNED], runs[UNTUNED])
    except ResultError as error:
        return [*problems, f"the comparison cannot be recomputed: {error}"]
    return problems + [
        f"{path}: {key}: recorded {value!r}, recomputed from the per-seed results {new!r}"
        for key, value, new in differences(comparison.document(), recomputed.document())
    ]


def hunt_problems(results: Path, spec: HuntSpec, provenance: Provenance) -> list[str]:
    """Re-run the hunt as experiment `<name>-audit` under audit/ and compare its trials, in
    order, and the best params."""
    from reprohunt import best, hunt

    audit_hunt = results / "audit" / "hunt"
    shutil.rmtree(audit_hunt, ignore_errors=True)
    audit_hunt.mkdir(parents=True)
    spec = dataclasses.replace(
        spec, experiment=f"{spec.experiment}-audit", storage={"type": "pickleddb"}
    )
    # What was hunted, beside what it found (as the workflow's spec.json is).
    write_json_atomically(audit_hunt / "spec.json", spec.document(), indent=2)
    try:
        summary = hunt.hunt(
            spec, audit_hunt, results / "data/prepared.json", audit_hunt / "hunt.json"
        )
        assert isinstance(summary, HuntSummary)  # no worker given: the judged experiment
        storage = storage_config(spec.storage, audit_hunt)
        found = best.write_best(summary, storage, audit_hunt)
    except (hunt.HuntFailure, best.NoCompletedTrial) as error:
        return [f"the audit hunt failed: {error}"]
    recorded = provenance.best
    problems = trial_sequence_problems(
        load_trials(results / "hunt" / "trials.json"), load_trials(audit_hunt / "trials.json")
    )
    if found.params != recorded.params:
        problems.append(f"best params: recorded {recorded.params}, re-run found {found.params}")
    if found.objective != recorded.objective:
        problems.append(f"best objective: recorded {recorded.objective}, re-run {found.objective}")
    return problems


def trial_sequence_problems(recorded: list[TrialRecord], rerun: list[TrialRecord]) -> list[str]:
    """The first trial (in the order they were proposed) whose status, params or objective the
    re-run did not give again, or a different number of trials. Ids differ by design: Orion
    derives them from the experiment's name, and the re-run is experiment `<name>-audit`."""
    for number, (mine, theirs) in enumerate(zip(recorded, rerun, strict=False)):
        was = (mine.status, mine.params, mine.objective)
        now = (theirs.status, theirs.params, theirs.objective)
        if was != now:
            return [f"trial {number} (hunt/trials.json {mine.id}): recorded {was}, re-run {now}"]
    if len(recorded) != len(rerun):
        return [f"trials: {len(recorded)} recorded in hunt/trials.json, {len(rerun)} re-run"]
    return []


def published_check(results: Path) -> list[dict[str, Any]]:
    """The published result's verdict on this run, when the repository holds one for it."""
    path = published.default_path(results)
    if not path.is_file():
        return []
    line = published.verdict(results, path)
    return [{"check": COMPARED_WITH_PUBLISHED, "status": INFO, "details": [line]}]


def audit(results: Path, workflow_python: str, locks: Path, rerun_hunt: bool) -> list[dict]:
    provenance = Provenance.load(results / "provenance.json")
    envs = provenance.environments
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
    ]
    if provenance.final is None:
        for name in (REPRODUCES, RECOMPUTED):
            checks.append(check(name, [PREDATES_FINAL_STAGE]))
    else:
        try:
            rule = reproduction(provenance)
        except numerics.NumericsError as error:
            checks.append(check(REPRODUCES, [f"cannot retrain here: {error}"]))
        else:
            name = REPRODUCES if rule.strict else WEAKLY_REPRODUCES
            found = check(name, final_run_problems(results, provenance, provenance.final, rule))
            if found["status"] == PASS and rule.note:
                found["details"].append(rule.note)
            checks.append(found | {"strength": "bit-identical" if rule.strict else "weaker"})
        checks.append(check(RECOMPUTED, comparison_problems(results, provenance.final)))
    spec = HuntSpec.load(results / "hunt" / "spec.json")
    skip = None
    if not rerun_hunt:
        skip = "set AUDIT_HUNT=1 to re-run the hunt"
    elif not spec.replays:
        skip = (
            "this hunt does not replay a trial sequence: it needs a seeded algorithm, and one "
            "trial at a time unless the algorithm is `optuna` (whose batch makes it replay)"
        )
    elif (replay := provenance.orion.replay) and replay.expected and not replay.intact:
        skip = (
            "the recorded hunt departed from its seeded trial sequence, so a re-run cannot "
            "reproduce it: " + "; ".join(replay.departures)
        )
    checks.append(
        check(
            "hunt re-run gives the same trials and best",
            [] if skip else hunt_problems(results, spec, provenance),
            skip,
        )
    )
    return checks + published_check(results)


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
    recorded_env = Path(HuntSpec.load(args.results / "hunt" / "spec.json").train_env)
    if recorded_env.is_dir() and recorded_env.resolve() != Path(sys.prefix).resolve():
        # The audit reruns the recipe with this interpreter: it must be the env that made the
        # result (a SpeechBrain recipe's env is not the default train env).
        python = str(recorded_env / "bin" / "python")
        print(f"audit: running in the result's train env, {recorded_env}", flush=True)
        os.execv(
            python, [python, "-m", "reprohunt.audit", *(sys.argv[1:] if argv is None else argv)]
        )
    (args.results / "audit").mkdir(exist_ok=True)
    try:
        checks = audit(
            args.results, args.workflow_python, args.locks, os.environ.get("AUDIT_HUNT") == "1"
        )
    except RecordError as error:  # a record of another shape: nothing to audit it against
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(checks)
    passed = all(c["status"] != FAIL for c in checks)
    out = args.out or args.results / "audit" / "audit.json"
    write_json_atomically(out, {"passed": passed, "checks": checks}, indent=2)
    print("audit", "PASSED" if passed else "FAILED", f"({out})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Figure 5: the default workflow end to end, and its hunt with and without the warm launcher.

1. ``snakemake --cores all`` of the default config (what ``make run`` does) in a scratch
   working directory: wall time, peak memory (PSS of everything the run started, sampled every
   0.5 s) and each rule's time and memory from its ``benchmark:`` record. Its hunt runs trials
   through the warm launcher (``hunt.warm_launcher: true``, the default).
2. The same hunt again with ``hunt.warm_launcher: false`` (a cold ``python`` per trial), in a
   second working directory given the first one's prepared data, so only the hunt runs. The
   recipe and TPE are seeded, so both hunts run the same trials; that is checked.

One run each (a repeat costs a whole workflow); the warm start-up per trial is measured, with
repeats, by bench_launcher.py. Targets: the default hunt at least 2x shorter with the warm
launcher; a warm trial start-up of at most 0.5 s.

    .venv/train/bin/python bench/bench_e2e.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import benchlib
import snakemake_run

# --smoke: the tests' tiny workflow (tests/workflow_run.py TINY) with a toy model and, as TINY,
# the fewest final seeds the schema allows.
SMOKE_CONFIG: dict[str, Any] = {
    "data": {"synthetic": {"seed": 7, "n_speakers": 4, "utts_per_speaker": 8}},
    "final": {"seeds": [1987, 1988]},
    "hunt": {
        "algorithm": {"random": {"seed": 3}},
        "max_trials": 2,
        "max_broken": 2,
        "space": {
            "emb_dim": "choices([8, 16])",
            "tdnn_channels": "choices([16])",
            "lr": "loguniform(1e-3, 1e-2)",
        },
    },
}
TARGET_HUNT_SPEEDUP = 2.0
# What hpopt-exec prints into a trial's log when the warm server cannot run the trial.
COLD_FALLBACK = "running the trial cold"
TARGET_WARM_STARTUP_S = 0.5


def comparable(trials: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(json.dumps(t["params"], sort_keys=True), t["objective"]) for t in trials]


def cold_fallbacks(workdir: Path) -> list[str]:
    """The warm hunt's trials that hpopt-exec ran cold after all, with the reason it gave."""
    reasons = []
    for log in sorted((snakemake_run.results(workdir) / "hunt" / "trials").glob("*/trial.log")):
        reasons += [line for line in log.read_text().splitlines() if COLD_FALLBACK in line]
    return reasons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_common_arguments(parser, repeats=False)
    args = parser.parse_args()
    facts = benchlib.machine()
    overrides = SMOKE_CONFIG if args.smoke else {}
    with benchlib.scratch_dir("e2e") as scratch:
        warm_dir, cold_dir = Path(scratch) / "warm", Path(scratch) / "cold"
        config = snakemake_run.write_config(warm_dir, overrides)
        workflow = snakemake_run.run(warm_dir, log=Path(scratch) / "workflow.log")
        rules = snakemake_run.rule_benchmarks(warm_dir)
        warm_trials = snakemake_run.hunt_trials(warm_dir)
        fallbacks = cold_fallbacks(warm_dir)
        final = json.loads((snakemake_run.results(warm_dir) / "final" / "metrics.json").read_text())

        cold_overrides = snakemake_run.merge(overrides, {"hunt": {"warm_launcher": False}})
        snakemake_run.write_config(cold_dir, cold_overrides)
        snakemake_run.install_data(snakemake_run.results(warm_dir) / "data", cold_dir)
        target = f"results/{snakemake_run.EXPERIMENT}/hunt/hunt.json"
        snakemake_run.run(
            cold_dir, target, "--allowed-rules", "hunt_spec", "hunt", log=Path(scratch) / "cold.log"
        )
        cold_hunt_s = snakemake_run.rule_benchmarks(cold_dir)["hunt"]["s"]
        cold_trials = snakemake_run.hunt_trials(cold_dir)
    if comparable(warm_trials) != comparable(cold_trials):
        raise SystemExit(
            "the warm and the cold hunt ran different trials:\n"
            f"{comparable(warm_trials)}\n{comparable(cold_trials)}"
        )

    launcher_json = args.results_dir / "launcher.json"
    warm_startup = None
    if launcher_json.is_file():
        startup = json.loads(launcher_json.read_text())["startup"]["warm"]["imports_done"]
        warm_startup = startup["median_s"]
    warm_hunt_s = rules["hunt"]["s"]
    benchlib.write_result(
        args,
        "e2e",
        {
            "machine": facts,
            "config": {key: config[key] for key in ("data", "recipe", "hunt")},
            "workflow": workflow,
            "rules": rules,
            "final_metrics": {"metrics": final["metrics"], "epochs": final["epochs"]},
            "hunt": {
                "trials": len(warm_trials),
                "warm_s": warm_hunt_s,
                "cold_s": cold_hunt_s,
                "speedup": cold_hunt_s / warm_hunt_s,
                "same_trials": True,
                "warm_trial_s": [t["end"] - t["start"] for t in warm_trials if t["end"]],
                "cold_trial_s": [t["end"] - t["start"] for t in cold_trials if t["end"]],
                # Trials of the warm hunt that the launcher refused and ran cold (should be 0).
                "warm_trials_run_cold": len(fallbacks),
                "cold_fallback_reasons": sorted(set(fallbacks)),
            },
            "warm_startup_median_s": warm_startup,
            "warm_startup_source": "launcher.json (bench_launcher.py), imports_done",
            "targets": {
                "hunt_speedup": TARGET_HUNT_SPEEDUP,
                "warm_startup_s": TARGET_WARM_STARTUP_S,
            },
        },
    )
    print(
        f"workflow: {workflow['wall_s']:.0f} s, peak {workflow['peak_pss_mib']:.0f} MiB PSS; "
        f"hunt ({len(warm_trials)} trials): warm {warm_hunt_s:.0f} s, cold {cold_hunt_s:.0f} s "
        f"(x{cold_hunt_s / warm_hunt_s:.2f})"
    )
    if fallbacks:
        print(f"warning: {len(fallbacks)} trial(s) of the warm hunt ran cold: {fallbacks[0]}")
    for rule, record in rules.items():
        print(f"  {rule:>10}: {record['s']:7.1f} s, max RSS {record['max_rss']} MiB")


if __name__ == "__main__":
    main()

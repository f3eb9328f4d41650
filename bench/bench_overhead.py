"""Figure 1: where a trial's wall time goes — start-up, training, reporting — and its overhead.

One sample is one whole trial process of the speaker-id recipe on the default corpus with the
default hyperparameters and one epoch (``--number_of_epochs 1``), started as ``orion hunt``
starts one (Orion's trial variables, an empty result file), through ``bench/trial_probe.py``.
Three variants alternate, so load drifts hit them alike:

- ``hpopt``: a cold ``python`` process, hpopt writing Orion's result file itself (the workflow);
- ``orion_client``: the same, reporting the SpeechBrain way (``orion.client`` imported by the
  reporter, ``report_objective``): the baseline;
- ``hpopt_warm``: hpopt through the warm launcher (``hpopt-exec``), as the workflow runs trials.

Overhead = start-up + reporting, i.e. everything but the epochs. A default trial trains
``benchlib.trial_epochs()`` epochs (hpopt.yaml's, else train.yaml's), so its wall time is
projected as start-up + that many x one epoch's training + reporting;
the target is an overhead of at most 10 % of that. Every trial's objective is checked to be the
same in all variants.

    .venv/train/bin/python bench/bench_overhead.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import benchlib

VARIANTS = ("hpopt", "orion_client", "hpopt_warm")
SPANS = ("startup_s", "training_s", "reporting_s", "wall_s")
TARGET_OVERHEAD = 0.10


def sample(variant: str, data: Path, workdir: Path, env: dict[str, str], smoke: bool) -> dict:
    overrides: dict[str, Any] = {"number_of_epochs": 1, **(benchlib.SMOKE_MODEL if smoke else {})}
    mode = "orion_client" if variant == "orion_client" else "orion"
    args = benchlib.recipe_args(data, workdir / "out", overrides, hpopt_mode=mode)
    launcher = [benchlib.HPOPT_EXEC] if variant == "hpopt_warm" else [benchlib.PYTHON]
    return benchlib.probed_trial(launcher, args, env, workdir)


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    medians = {span: statistics.median(s[span] for s in samples) for span in SPANS}
    overhead = medians["startup_s"] + medians["reporting_s"]
    default_trial = overhead + benchlib.trial_epochs() * medians["training_s"]
    return {
        "median_s": medians,
        "spread_s": {span: benchlib.spread([s[span] for s in samples]) for span in SPANS},
        "overhead_s": overhead,
        "projected_default_trial_s": default_trial,
        "overhead_fraction_of_default_trial": overhead / default_trial,
        "overhead_fraction_of_measured_trial": overhead / medians["wall_s"],
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_common_arguments(parser)
    args = parser.parse_args()
    benchlib.check_repeats(parser, args, 3)
    data = benchlib.corpus(args)
    facts = benchlib.machine()

    samples: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    with (
        benchlib.scratch_dir("overhead") as scratch,
        benchlib.warm_server(Path(scratch)) as (warm_env, server_start_s),
    ):
        for repeat in range(args.repeats):
            for variant in VARIANTS:
                workdir = Path(scratch) / f"{variant}-{repeat}"
                samples[variant].append(sample(variant, data, workdir, warm_env, args.smoke))
    objectives = {s["objective"] for runs in samples.values() for s in runs}
    if len(objectives) != 1:
        raise SystemExit(f"the variants reported different objectives: {sorted(objectives)}")

    result = {variant: summarise(runs) for variant, runs in samples.items()}
    baseline, ours = result["orion_client"], result["hpopt"]
    benchlib.write_result(
        args,
        "overhead",
        {
            "machine": facts,
            "data": benchlib.prepared_summary(data),
            "trial": "default hyperparameters, 1 epoch, hpopt mode (as an orion hunt trial)",
            "repeats": args.repeats,
            "warm_server_start_s": server_start_s,
            "variants": result,
            "orion_client_overhead_over_hpopt": baseline["overhead_s"] / ours["overhead_s"],
            "target_overhead_fraction": TARGET_OVERHEAD,
        },
    )
    for variant in VARIANTS:
        row = result[variant]
        spans = "  ".join(f"{span[:-2]} {row['median_s'][span]:6.2f}" for span in SPANS)
        print(
            f"{variant:>12}: {spans}  overhead {row['overhead_fraction_of_default_trial']:.1%} "
            "of a default trial"
        )


if __name__ == "__main__":
    main()

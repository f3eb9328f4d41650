# hunt.parallel_hunts > 1: that many `hunt_worker` jobs (one per node on SLURM) join one Orion
# experiment, and `hunt` only judges it once they have all ended. With 1, `hunt` does both.
PARALLEL_HUNTS = config["hunt"]["parallel_hunts"]
# What every trial runs: the recipe's code files (a changed file changes spec.json too).
RECIPE_CODE = [RECIPE_DIR / path for path in RECIPE["code"]]
HUNT_WORKERS = [
    f"{RESULTS}/hunt/workers/{worker}.json" for worker in range(PARALLEL_HUNTS)
]


localrules:
    hunt_spec,


if PARALLEL_HUNTS > 1:

    localrules:
        hunt,


rule hunt_spec:
    """The hunt's full specification as a file, so any change to it reruns the hunt."""
    output:
        f"{RESULTS}/hunt/spec.json",
    log:
        f"{RESULTS}/logs/hunt_spec.log",
    params:
        spec=hunt_spec(),
    run:
        write_text_atomically(
            output[0], json.dumps(params.spec, indent=2, sort_keys=True) + "\n"
        )


rule hunt_worker:
    """One of hunt.parallel_hunts `orion hunt` processes of the experiment (train env)."""
    input:
        data=f"{RESULTS}/data/prepared.json",
        spec=f"{RESULTS}/hunt/spec.json",
        code=RECIPE_CODE,
    output:
        f"{RESULTS}/hunt/workers/{{worker}}.json",
    log:
        f"{RESULTS}/logs/hunt_worker_{{worker}}.log",
    wildcard_constraints:
        worker=r"\d+",
    # Locally the workers share the cores; on SLURM each job gets its own node's CPUs.
    threads: max(1, CORES // PARALLEL_HUNTS)
    params:
        python=TRAIN_PYTHON,
        numerics=config["numerics"],
    shell:
        logged(
            "{params.python} -m reprohunt.hunt --spec {input.spec} --data {input.data}"
            " --worker {wildcards.worker} --out {output}"
        )


rule hunt:
    """`orion hunt` over the recipe, or the judgement of the hunt workers; fails when Orion
    reports a broken experiment, naming the first failing trial's log (train env)."""
    input:
        data=f"{RESULTS}/data/prepared.json",
        spec=f"{RESULTS}/hunt/spec.json",
        code=RECIPE_CODE,
        workers=HUNT_WORKERS if PARALLEL_HUNTS > 1 else [],
    output:
        f"{RESULTS}/hunt/hunt.json",
    log:
        f"{RESULTS}/logs/hunt.log",
    benchmark:
        f"{RESULTS}/benchmarks/hunt.tsv"
    # The hunt is the run's critical path: it starts as soon as the data is ready, and the
    # untuned runs fill the other cores. Without it Snakemake sometimes started two or three
    # untuned runs first on 2 cores, and the whole run ended later (measured: the hunt began
    # 42 s late).
    priority: 10
    # One core per trial slot, so that the untuned baseline's runs (final stage) go alongside.
    threads: min(CORES, hunt_workers()) if PARALLEL_HUNTS == 1 else 1
    params:
        python=TRAIN_PYTHON,
        numerics=config["numerics"],
        mode="--judge" if PARALLEL_HUNTS > 1 else "",
    shell:
        logged(
            "{params.python} -m reprohunt.hunt --spec {input.spec} --data {input.data}"
            " --out {output} {params.mode}"
        )


rule best:
    """`orion info` verbatim, the best trial as best.json/best.yaml, and every trial (train env)."""
    input:
        hunt=f"{RESULTS}/hunt/hunt.json",
        spec=f"{RESULTS}/hunt/spec.json",
    output:
        best_json=f"{RESULTS}/hunt/best.json",
        best_yaml=report(
            f"{RESULTS}/hunt/best.yaml",
            caption="../report/best.rst",
            category="Hyperparameter search",
        ),
        info=f"{RESULTS}/hunt/orion_info.txt",
        trials=f"{RESULTS}/hunt/trials.json",
    log:
        f"{RESULTS}/logs/best.log",
    params:
        python=TRAIN_PYTHON,
        numerics=config["numerics"],
    shell:
        logged(
            "{params.python} -m reprohunt.best --hunt {input.hunt} --spec {input.spec} --out-dir $(dirname {output.best_json})"
        )

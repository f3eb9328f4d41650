rule hunt_spec:
    """The hunt's full specification as a file, so any change to it reruns the hunt."""
    output:
        f"{RESULTS}/hunt/spec.json",
    log:
        f"{RESULTS}/logs/hunt_spec.log",
    params:
        spec=hunt_spec(),
    run:
        Path(output[0]).write_text(
            json.dumps(params.spec, indent=2, sort_keys=True) + "\n"
        )


rule hunt:
    """`orion hunt` over the recipe; fails when Orion reports a broken experiment (train env)."""
    input:
        data=f"{RESULTS}/data/prepared.json",
        spec=f"{RESULTS}/hunt/spec.json",
    output:
        f"{RESULTS}/hunt/hunt.json",
    log:
        f"{RESULTS}/logs/hunt.log",
    benchmark:
        f"{RESULTS}/benchmarks/hunt.tsv"
    threads: workflow.cores
    params:
        python=TRAIN_PYTHON,
    shell:
        "{params.python} -m hpopt.pipeline.hunt --spec {input.spec} --data {input.data}"
        " --out {output} > {log} 2>&1"


rule best:
    """`orion info` verbatim, the best trial as best.json/best.yaml, and every trial (train env)."""
    input:
        f"{RESULTS}/hunt/hunt.json",
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
    shell:
        "{params.python} -m hpopt.pipeline.best --hunt {input} --out-dir $(dirname {output.best_json})"
        " > {log} 2>&1"

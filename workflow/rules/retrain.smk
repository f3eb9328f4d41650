rule retrain:
    """Full-budget training with the best params (train.yaml, checkpoints on), then the test
    split; the recipe's result file, checked against the result contract (train env)."""
    input:
        spec=f"{RESULTS}/hunt/spec.json",
        best=f"{RESULTS}/hunt/best.json",
        data=f"{RESULTS}/data/prepared.json",
        code=RECIPE_CODE,
    output:
        report(
            f"{RESULTS}/final/metrics.json",
            caption="../report/metrics.rst",
            category="Final model",
        ),
    log:
        f"{RESULTS}/logs/retrain.log",
    benchmark:
        f"{RESULTS}/benchmarks/retrain.tsv"
    threads: CORES
    params:
        python=TRAIN_PYTHON,
    shell:
        "{params.python} -m reprohunt.logged {log} -- {params.python} -m reprohunt.retrain --spec {input.spec} --best {input.best}"
        " --data {input.data} --out {output}"

rule retrain:
    """Full-budget training with the best params (train.yaml, checkpoints on), then the test split."""
    input:
        best=f"{RESULTS}/hunt/best.json",
        data=f"{RESULTS}/data/prepared.json",
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
        best=lambda wildcards, input: best_params_args(input.best),
        recipe=RECIPE_DIR,
        train_yaml=RECIPE["train_yaml"],
        device=RECIPE["device"],
        seed=RECIPE["seed"],
    shell:
        "{params.python} {params.recipe}/train.py {params.recipe}/{params.train_yaml}"
        " --data_folder $(dirname {input.data}) --output_folder $(dirname {output})"
        " --device {params.device} --seed {params.seed} {params.best} > {log} 2>&1"

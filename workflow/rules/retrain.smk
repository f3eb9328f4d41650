# The final stage: the tuned configuration (best.json's params) and the untuned one (train.yaml
# as shipped) retrained at each seed of final.seeds, one job per run, then compared.
localrules:
    final_recipe,
    deliver,
    compare,


rule final_recipe:
    """The recipe description every final run trains from, without the hunt's seed: the untuned
    runs depend on it instead of hunt/spec.json, so a new search space or algorithm (or
    recipe.seed) leaves them as they are, and Snakemake can run them alongside the hunt.
    """
    output:
        f"{RESULTS}/final/recipe.json",
    log:
        f"{RESULTS}/logs/final_recipe.log",
    params:
        recipe={key: value for key, value in RECIPE.items() if key != "seed"},
    run:
        write_text_atomically(
            output[0], json.dumps(params.recipe, indent=2, sort_keys=True) + "\n"
        )


rule retrain:
    """One full-budget run (train.yaml, checkpoints on) of one arm at one seed, then the test
    split; the recipe's result file, checked against the result contract (train env)."""
    input:
        recipe=f"{RESULTS}/final/recipe.json",
        best=lambda wildcards: BEST if wildcards.arm == "tuned" else [],
        data=f"{RESULTS}/data/prepared.json",
        code=RECIPE_CODE,
    output:
        f"{RESULTS}/final/{{arm}}/seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/logs/retrain_{{arm}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/retrain_{{arm}}_seed{{seed}}.tsv"
    wildcard_constraints:
        arm="tuned|untuned",
        seed=r"\d+",
    threads: final_threads()
    params:
        python=TRAIN_PYTHON,
        numerics=config["numerics"],
        best=lambda wildcards, input: f"--best {input.best}" if input.best else "",
        runs=f"{RESULTS}/final/runs",
    shell:
        logged(
            "{params.python} -m reprohunt.retrain --recipe {input.recipe} --seed {wildcards.seed}"
            " {params.best} --data {input.data} --runs {params.runs} --out {output}"
        )


rule deliver:
    """The delivered model's result: the tuned run at the first seed, as final/metrics.json."""
    input:
        final_result("tuned", FINAL_SEEDS[0]),
    output:
        report(
            f"{RESULTS}/final/metrics.json",
            caption="../report/metrics.rst",
            category="Final model",
        ),
    log:
        f"{RESULTS}/logs/deliver.log",
    params:
        python=TRAIN_PYTHON,
        numerics=config["numerics"],
    shell:
        logged("cp {input} {output}")


rule compare:
    """Tuned against untuned over the seeds: means, stds, paired differences, a Student-t
    interval and the verdict, as final/comparison.json (train env)."""
    input:
        tuned=[final_result("tuned", seed) for seed in FINAL_SEEDS],
        untuned=[final_result("untuned", seed) for seed in FINAL_SEEDS],
    output:
        f"{RESULTS}/final/comparison.json",
    log:
        f"{RESULTS}/logs/compare.log",
    params:
        python=TRAIN_PYTHON,
        numerics=config["numerics"],
        seeds=" ".join(str(seed) for seed in FINAL_SEEDS),
    shell:
        logged(
            "{params.python} -m reprohunt.compare --seeds {params.seeds}"
            " --tuned {input.tuned} --untuned {input.untuned} --out {output}"
        )

rule prepare:
    """The recipe's own data preparation (its `*_prepare.py`) -> results/<exp>/data (train env)."""
    input:
        script=RECIPE_DIR / RECIPE["prepare"],
    output:
        prepared=f"{RESULTS}/data/prepared.json",
        hashes=f"{RESULTS}/data/hashes.json",
    log:
        f"{RESULTS}/logs/prepare.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare.tsv"
    params:
        python=TRAIN_PYTHON,
        numerics=config["numerics"],
        args=shlex.join(prepare_flags(config["data"])),
        out=lambda wildcards, output: Path(output.prepared).parent,
    shell:
        logged(
            "{params.python} {input.script} {params.args} --out {params.out} --overwrite"
        )

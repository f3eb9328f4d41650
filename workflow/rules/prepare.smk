rule prepare:
    """Corpus -> manifests + cached log-mel features (train env)."""
    output:
        f"{RESULTS}/data/prepared.json",
    log:
        f"{RESULTS}/logs/prepare.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare.tsv"
    params:
        python=TRAIN_PYTHON,
        args=prepare_args(),
        out=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "{params.python} -m hpopt.data.prepare {params.args} --out {params.out} --overwrite"
        " > {log} 2>&1"

rule audit:
    """Re-check an existing results/<experiment>/: envs, data, features, retraining (`make audit`).

    audit/audit.json is written whether the audit passes or fails; the stamp `passed` only on PASS
    (Snakemake runs shell commands with pipefail, so a FAIL skips `touch`). The PASS/FAIL
    table is shown on the terminal too.
    """
    input:
        f"{RESULTS}/provenance.json",
    output:
        f"{RESULTS}/audit/passed",
    log:
        f"{RESULTS}/logs/audit.log",
    benchmark:
        f"{RESULTS}/benchmarks/audit.tsv"
    params:
        python=TRAIN_PYTHON,
        workflow_python=WORKFLOW_PYTHON,
        results=lambda wildcards, input: Path(input[0]).parent,
    shell:
        "{params.python} -m hpopt.pipeline.audit --results {params.results}"
        " --workflow-python {params.workflow_python} 2>&1 | tee {log} && touch {output}"

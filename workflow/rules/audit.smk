rule audit:
    """Re-check an existing results/<experiment>/: envs, data, features, retraining (`make audit`)."""
    input:
        f"{RESULTS}/provenance.json",
    output:
        f"{RESULTS}/audit/audit.json",
    log:
        f"{RESULTS}/logs/audit.log",
    benchmark:
        f"{RESULTS}/benchmarks/audit.tsv"
    params:
        python=TRAIN_PYTHON,
        workflow_python=WORKFLOW_PYTHON,
        results=RESULTS,
    shell:
        "{params.python} -m hpopt.pipeline.audit --results {params.results}"
        " --workflow-python {params.workflow_python} --out {output} > {log} 2>&1"

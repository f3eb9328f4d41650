rule provenance:
    """How this result was made: code, envs, hardware, data, seeds, the whole Orion experiment."""
    input:
        data=f"{RESULTS}/data/prepared.json",
        hashes=f"{RESULTS}/data/hashes.json",
        spec=f"{RESULTS}/hunt/spec.json",
        hunt=f"{RESULTS}/hunt/hunt.json",
        trials=f"{RESULTS}/hunt/trials.json",
        best=f"{RESULTS}/hunt/best.json",
        metrics=f"{RESULTS}/final/metrics.json",
    output:
        f"{RESULTS}/provenance.json",
    log:
        f"{RESULTS}/logs/provenance.log",
    params:
        python=TRAIN_PYTHON,
        workflow_python=WORKFLOW_PYTHON,
        results=lambda wildcards, input: Path(input.data).parent.parent,
    shell:
        "{params.python} -m reprohunt.logged {log} -- {params.python} -m reprohunt.provenance --results {params.results}"
        " --workflow-python {params.workflow_python} --out {output}"


rule report:
    """Self-contained report.html: best params, all trials, plots, test metrics, provenance."""
    input:
        trials=f"{RESULTS}/hunt/trials.json",
        best=f"{RESULTS}/hunt/best.json",
        metrics=f"{RESULTS}/final/metrics.json",
        provenance=f"{RESULTS}/provenance.json",
    output:
        html=f"{RESULTS}/report.html",
        regret=report(
            f"{RESULTS}/plots/regret.png",
            caption="../report/regret.rst",
            category="Hyperparameter search",
        ),
        params=report(
            f"{RESULTS}/plots/params.png",
            caption="../report/params.rst",
            category="Hyperparameter search",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    params:
        python=TRAIN_PYTHON,
    shell:
        "{params.python} -m reprohunt.logged {log} -- {params.python} -m reprohunt.report --trials {input.trials} --best {input.best}"
        " --metrics {input.metrics} --provenance {input.provenance} --out {output.html}"
        " --regret {output.regret} --params {output.params}"

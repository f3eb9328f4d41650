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
        tuned=[final_result("tuned", seed) for seed in FINAL_SEEDS],
        untuned=[final_result("untuned", seed) for seed in FINAL_SEEDS],
        comparison=f"{RESULTS}/final/comparison.json",
    output:
        f"{RESULTS}/provenance.json",
    log:
        f"{RESULTS}/logs/provenance.log",
    params:
        python=TRAIN_PYTHON,
        numerics=config["numerics"],
        workflow_python=WORKFLOW_PYTHON,
        results=lambda wildcards, input: Path(input.data).parent.parent,
    shell:
        logged(
            "{params.python} -m reprohunt.provenance --results {params.results}"
            " --workflow-python {params.workflow_python} --out {output}"
        )


rule report:
    """Self-contained report.html: best params, all trials, plots, test metrics, tuned against
    untuned, provenance."""
    input:
        trials=f"{RESULTS}/hunt/trials.json",
        best=f"{RESULTS}/hunt/best.json",
        metrics=f"{RESULTS}/final/metrics.json",
        comparison=f"{RESULTS}/final/comparison.json",
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
        comparison=report(
            f"{RESULTS}/plots/comparison.png",
            caption="../report/comparison.rst",
            category="Final model",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    params:
        python=TRAIN_PYTHON,
        numerics=config["numerics"],
    shell:
        logged(
            "{params.python} -m reprohunt.report --trials {input.trials} --best {input.best}"
            " --metrics {input.metrics} --comparison {input.comparison} --provenance {input.provenance}"
            " --out {output.html} --regret {output.regret} --params {output.params}"
            " --comparison-plot {output.comparison}"
        )

# A SpeechBrain recipe as it is (recipe.speechbrain) does not follow the data contract itself:
# the workflow builds its data folder, on the embedded corpus, and calls its prepare function.
SPEECHBRAIN = RECIPE.get("speechbrain")
EMBEDDED_CORPUS = sorted((SPEAKER_ID_RECIPE / "speaker_data").glob("*.py"))


if SPEECHBRAIN:

    rule prepare:
        """A SpeechBrain recipe as it is: the workflow builds the data folder and calls the
        recipe's prepare function in it (reprohunt.speechbrain_prepare; SpeechBrain env).
        """
        input:
            function=RECIPE_DIR / RECIPE["prepare"],
            corpus=EMBEDDED_CORPUS,
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
            command=shlex.join(prepare_command(RECIPE, config["data"])),
            out=lambda wildcards, output: Path(output.prepared).parent,
        shell:
            logged("{params.python} {params.command} --out {params.out} --overwrite")

else:

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

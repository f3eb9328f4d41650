# reprohunt: data prep -> Orion hunt -> best trial -> retraining -> provenance + report.
# Run from the repository root with the workflow env: `snakemake --cores N` (see README.md and docs/running.md).
import time

from snakemake.utils import min_version

min_version("9.0")


# `--configfile FILE` replaces this default instead of merging into it: a user's file fully
# defines the recipe and the search space (no default space keys left next to the user's).
# Keys it leaves out take the schema's defaults (workflow/schemas/config.schema.yaml).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# The image built from ./Dockerfile holds every rule's software (both venvs). It is only used
# with `--sdm apptainer`; a local or Docker run uses the venvs of `make setup` / the image.
container: config["container_image"]


include: "workflow/rules/prepare.smk"
include: "workflow/rules/hunt.smk"
include: "workflow/rules/retrain.smk"
include: "workflow/rules/report.smk"


# One live run per results folder (reprohunt.runlock): once every config check above has
# passed, a second run of the experiment is refused before any job, naming the live one.
refuse_a_second_run()


onstart:
    take_run_lock()


report: "workflow/report/workflow.rst"


# When this run (re)built final/comparison.json, its verdict is the last line the user sees; a
# run that did not build it (e.g. up to the hunt only) prints none, so an older result's verdict
# is never shown as this run's. Likewise, a run that rebuilt provenance.json says whether it
# reproduced the published result (published/<experiment>.json) bit for bit.
STARTED = time.time()


onsuccess:
    if rebuilt(f"{RESULTS}/final/comparison.json", STARTED):
        comparison = Path(f"{RESULTS}/final/comparison.json").read_text()
        print(json.loads(comparison)["verdict_text"])
    if (
        rebuilt(f"{RESULTS}/provenance.json", STARTED)
        and Path(TRAIN_PYTHON).exists()
    ):
        shell(f"{TRAIN_PYTHON} -m reprohunt.published --results {RESULTS}")


rule all:
    default_target: True
    input:
        f"{RESULTS}/report.html",
        f"{RESULTS}/provenance.json",

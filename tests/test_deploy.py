"""The workflow deployed as a Snakemake module with snakedeploy gives the repository's numbers.

`snakedeploy deploy-workflow SOURCE DEST --branch B` takes an https:// URL or an existing local
path (its local provider; a file:// URL matches no provider in snakedeploy 0.17.1). A local path
is copied whole, so the source is a `git clone --branch B` of this checkout: what is committed
on that branch, without venvs or results. The local provider ignores the branch and writes the
module's `snakefile:` as a path relative to the source (`workflow/Snakefile`), which Snakemake
would resolve inside the deployment; the test anchors that one line at the clone, the only edit
made to what snakedeploy wrote, and then runs the deployment with the tiny config of the shared
`tiny_run` (train env by absolute path, recipe from the clone). It is also the suite's check
that a second run in a fresh folder agrees bit for bit: the prepared features, the hunt's pick and
objective, the per-seed results and the comparison must equal the run in the repository's.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_run import SNAKEMAKE, TINY, merge, write_config

REPO = Path(__file__).resolve().parents[1]
SNAKEDEPLOY = REPO / ".venv" / "workflow" / "bin" / "snakedeploy"
MODULE_SNAKEFILE = re.compile(r'(    snakefile:\s*\n\s*)"([^"]+)"')


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def per_seed_results(results: Path) -> dict[str, dict]:
    """final/<arm>/seed<S>/metrics.json, without the run folder (an absolute path)."""
    found = {}
    for path in sorted((results / "final").glob("*/seed*/metrics.json")):
        document = json.loads(path.read_text())
        document.pop("run_folder")
        found[str(path.relative_to(results))] = document
    return found


@pytest.mark.slow
def test_snakedeploy_module_gives_the_repository_result(tiny_run: Path, tmp_path: Path) -> None:
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    source, deployed = tmp_path / "reprohunt", tmp_path / "deployed"
    git("clone", "--quiet", "--branch", branch, str(REPO), str(source), cwd=tmp_path)
    deploy = subprocess.run(
        [str(SNAKEDEPLOY), "deploy-workflow", str(source), str(deployed), "--branch", branch],
        capture_output=True,
        text=True,
        check=False,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    snakefile = deployed / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert "use rule * from" in text, text
    match = MODULE_SNAKEFILE.search(text)
    assert match, f"no module snakefile in {snakefile}:\n{text}"
    module = Path(match.group(2))
    if not module.is_absolute():  # snakedeploy's local provider: relative to the source
        module = source / module
    assert module.is_file(), f"{snakefile} declares {match.group(2)}, not a file of {source}"
    snakefile.write_text(MODULE_SNAKEFILE.sub(lambda m: f'{m.group(1)}"{module}"', text))
    assert (deployed / "config" / "README.md").is_file(), "snakedeploy did not copy config/"

    config = write_config(
        deployed, merge(TINY, {"recipe": {"dir": str(source / "recipes/speaker_id")}})
    )
    assert Path(config["train_env"]).is_absolute()
    run = subprocess.run(
        [
            str(SNAKEMAKE),
            "--snakefile",
            str(snakefile),
            "--directory",
            str(deployed),
            "--workflow-profile",
            str(deployed / "profiles" / "default"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    experiment = yaml.safe_load((tiny_run / "config" / "config.yaml").read_text())["experiment"]
    here, there = tiny_run / "results" / experiment, deployed / "results" / config["experiment"]
    prepared = [json.loads((r / "data/prepared.json").read_text()) for r in (here, there)]
    assert prepared[0]["features_sha256"] == prepared[1]["features_sha256"]
    best = [json.loads((r / "hunt/best.json").read_text()) for r in (here, there)]
    assert best[0]["params"] == best[1]["params"]
    assert best[0]["objective"] == best[1]["objective"]
    assert per_seed_results(there) == per_seed_results(here)
    assert len(per_seed_results(here)) == 2 * len(config["final"]["seeds"])
    comparison = "final/comparison.json"
    assert (there / comparison).read_bytes() == (here / comparison).read_bytes()

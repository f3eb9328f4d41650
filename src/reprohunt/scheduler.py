"""Which scheduler ran each rule: the `scheduler` section of provenance.json.

On SLURM (`profiles/slurm`), snakemake-executor-plugin-slurm writes one log per job,
`.snakemake/slurm_logs/rule_<rule>/[<wildcards>/]<jobid>.log`, and the profile keeps those of
successful jobs too (`slurm-keep-successful-logs`). That folder names every SLURM job of every
rule, over all runs in this working directory (a cancelled hunt and its rerun are both listed);
`sacct` adds each job's node, state and times where it answers. Rules without such a log ran on the
submitting host (`hunt_spec`, the hunt judge) or locally. Self-contained: it reads files and
runs `sacct`, nothing else of the pipeline.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

SLURM_LOGS = Path(".snakemake") / "slurm_logs"
SACCT_FIELDS = (
    "JobIDRaw",
    "State",
    "NodeList",
    "Partition",
    "Account",
    "Submit",
    "Start",
    "End",
    "Elapsed",
    "ExitCode",
    "AllocTRES",
)
# The log header the job's Snakemake prints ("  Host: node17").
HOST_LINE = re.compile(r"^\s*Host:\s*(\S+)\s*$", re.M)


def sacct_records(job_ids: list[str]) -> dict[str, dict[str, str]] | None:
    """sacct's view of `job_ids` (allocations only), or None where sacct does not answer."""
    if not job_ids:
        return {}
    command = [
        "sacct",
        "--allocations",
        "--parsable2",
        "--noheader",
        f"--format={','.join(SACCT_FIELDS)}",
        f"--jobs={','.join(job_ids)}",
    ]
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    records = {}
    for line in out.stdout.splitlines():
        values = line.split("|")
        if len(values) == len(SACCT_FIELDS):
            record = dict(zip(SACCT_FIELDS, values, strict=True))
            records[record.pop("JobIDRaw")] = record
    return records


def slurm_jobs(workdir: Path) -> list[dict[str, Any]]:
    """One entry per SLURM job of a rule, from the plugin's logs under `workdir`; a rule with
    wildcards is named `rule/values` (`hunt_worker/0`)."""
    jobs = []
    logs = workdir / SLURM_LOGS
    for log in logs.glob("rule_*/**/*.log"):
        # rule_<rule>/<jobid>.log, or rule_<rule>/<wildcard values>/<jobid>.log
        folders = log.relative_to(logs).parent.parts
        rule, wildcards, job_id = folders[0].removeprefix("rule_"), folders[1:], log.stem
        if not job_id.isdigit():
            continue
        host = HOST_LINE.search(log.read_text(errors="replace")[:4000])
        jobs.append(
            {
                "rule": "/".join((rule, *wildcards)),
                "slurm_job_id": job_id,
                "host": host.group(1) if host else None,
                "log": str(log),
            }
        )
    return sorted(jobs, key=lambda job: int(job["slurm_job_id"]))


def scheduler_facts(workdir: Path) -> dict[str, Any]:
    """`{"type": "slurm", "jobs": [...], "rules": {rule: last job}}`, or `{"type": "local"}`."""
    jobs = slurm_jobs(workdir)
    if not jobs:
        return {"type": "local", "note": "no SLURM job logs: every rule ran on this host"}
    accounting = sacct_records([job["slurm_job_id"] for job in jobs])
    for job in jobs:
        record = (accounting or {}).get(job["slurm_job_id"], {})
        job["node"] = record.get("NodeList") or job["host"]
        job["sacct"] = record or None
    return {
        "type": "slurm",
        "sacct": accounting is not None,
        "jobs": jobs,
        # The job whose result is in this folder: each rule's latest one.
        "rules": {
            job["rule"]: {
                "slurm_job_id": job["slurm_job_id"],
                "node": job["node"],
                "state": (job["sacct"] or {}).get("State"),
            }
            for job in jobs
        },
        "note": "rules not listed ran on the submitting host (Snakemake localrules)",
    }

"""The final stage's `[progress]` lines, in the retrain logs of a real tiny run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

DONE = re.compile(
    r"^\[progress\] final stage: retrain (\w+) seed (\d+) done in \d+:\d\d:\d\d \((.*)\); "
    r"(\d+) retrain result\(s\) of \S+ finished so far$",
    re.M,
)


@pytest.mark.slow
def test_each_retrain_says_it_started_and_ended_with_its_result(tiny_run: Path) -> None:
    config = yaml.safe_load((tiny_run / "config" / "config.yaml").read_text())
    results = tiny_run / "results" / config["experiment"]
    seeds = config["final"]["seeds"]
    counts = []
    for arm in ("tuned", "untuned"):
        for seed in seeds:
            log = (results / "logs" / f"retrain_{arm}_seed{seed}.log").read_text()
            assert f"[progress] final stage: retrain {arm} seed {seed} started\n" in log
            (done,) = DONE.findall(log)
            assert done[:2] == (arm, str(seed))
            metrics = json.loads(
                (results / "final" / arm / f"seed{seed}" / "metrics.json").read_text()
            )
            assert f"test.error {metrics['metrics']['test']['error']:.4g}" in done[2], done
            counts.append(int(done[3]))
    # Each run counts the results on disk when it ends: the last one sees them all.
    assert max(counts) == 2 * len(seeds) and min(counts) >= 1, counts

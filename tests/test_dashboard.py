"""`make dashboard RESULTS=…` over a real finished tiny hunt, looked at in headless Chromium.

The page must show the experiment in its list and, once it is selected (a real mouse click),
its trials: the count Orion's own records give, one table row per trial id. An HTTP 200 alone
would pass with a broken API address or CORS settings; this does not. The server is stopped
whatever happens, and the result's database must be left as it was (the dashboard serves a copy).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from headless import Browser, chromium_or_skip

from hpopt.files import sha256_file

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
URL_LINE = re.compile(r"Orion dashboard of .*: (http://127\.0\.0\.1:(\d+)/)")


def results_of(workdir: Path) -> Path:
    experiment = yaml.safe_load((workdir / "config" / "config.yaml").read_text())["experiment"]
    return workdir / "results" / experiment


def read_url(server: subprocess.Popen, timeout: float = 90.0) -> tuple[str, int]:
    """The URL `make dashboard` prints, or the failure with everything it printed."""
    seen = []
    with selectors.DefaultSelector() as selector:
        selector.register(server.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.poll() is None:
            if selector.select(timeout=1):
                line = server.stdout.readline()
                seen.append(line)
                if match := URL_LINE.search(line):
                    return match.group(1), int(match.group(2))
    raise AssertionError(f"make dashboard printed no URL (exit {server.poll()}):\n{''.join(seen)}")


@contextlib.contextmanager
def make_dashboard(results: Path) -> Iterator[tuple[str, int]]:
    """`make dashboard` on a free port; its whole process group is stopped whatever happens."""
    server = subprocess.Popen(
        ["make", "-s", "dashboard", f"RESULTS={results}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield read_url(server)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_dashboard_shows_the_experiment_and_its_trials(tiny_run: Path, tmp_path: Path) -> None:
    chromium = chromium_or_skip(tmp_path / "chromium-install.log")
    results = results_of(tiny_run)
    hunt = json.loads((results / "hunt" / "hunt.json").read_text())
    name, trials = hunt["name"], sum(hunt["status_counts"].values())
    ids = [trial["id"] for trial in json.loads((results / "hunt" / "trials.json").read_text())]
    assert len(ids) == trials
    database = results / "hunt" / "orion_db.pkl"
    before = sha256_file(database)

    with make_dashboard(results) as (url, port), Browser(chromium) as page:
        page.goto(url + "#/database")
        row = f'label.bx--structured-list-row span[title="{name}"]'
        page.wait_for(f"!!document.querySelector({json.dumps(row)})")
        page.click(row)
        heading = f'{trials} trial(s) for experiment "{name}"'
        page.wait_for(f"document.body.innerText.includes({json.dumps(heading)})")
        shown = page.evaluate("document.body.innerText")
        page.screenshot(ARTIFACTS / "dashboard.png")
    for trial in ids:  # the table shows ids cut to 7 characters
        assert trial[:7] in shown, f"trial {trial} is not in the dashboard's table:\n{shown}"
    assert not port_open(port), "the dashboard still listens after make dashboard was stopped"
    assert sha256_file(database) == before, "serving the dashboard changed the result's database"


def test_a_folder_without_a_finished_hunt_is_refused_by_name(tmp_path: Path) -> None:
    run = subprocess.run(
        ["make", "-s", "dashboard", f"RESULTS={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode != 0
    assert f"{tmp_path / 'hunt' / 'hunt.json'}" in run.stderr, run.stderr
    assert "RESULTS=results/<experiment>" in run.stderr

"""Fixtures shared by several test files.

``prepared_tiny`` is a tiny synthetic corpus (4 speakers x 6 utterances of 0.5-0.8 s) prepared
once per test session by the real command line, ``python recipes/speaker_id/speaker_id_prepare.py``.
It returns the prepared folder; tests that modify it must work on a copy (``shutil.copytree``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
# The speaker-id recipe's own data preparation (SpeechBrain keeps *_prepare.py beside train.py).
PREPARE_SCRIPT = REPO / "recipes" / "speaker_id" / "speaker_id_prepare.py"

# Arguments of the tiny corpus, for tests that rebuild it and compare with the fixture.
TINY_PREPARE_ARGS = [
    "--source",
    "synthetic",
    "--seed",
    "7",
    "--n-speakers",
    "4",
    "--utts-per-speaker",
    "6",
    "--min-seconds",
    "0.5",
    "--max-seconds",
    "0.8",
]


def run_prepare(*args: str) -> subprocess.CompletedProcess[str]:
    """``python recipes/speaker_id/speaker_id_prepare.py ARGS`` in the train env."""
    return subprocess.run(
        [sys.executable, str(PREPARE_SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """Folder `name` made by `build(folder)` once per test run, whichever process asks first.

    Session fixtures are per process, and under pytest-xdist each worker is one: without this
    every worker would build its own tiny run. The workers share the parent of their base temp
    folders; the first takes the lock and builds, the others wait and reuse. A folder without
    its `.built` mark (a build that failed) is built again, so each worker sees the failure.
    tests/suite.sh runs two pytest processes and names one folder for both in
    $REPROHUNT_TEST_SHARED, so that the SLURM process reuses the tiny run too.
    """
    shared = os.environ.get("REPROHUNT_TEST_SHARED")
    root = tmp_path_factory.getbasetemp()
    if shared:
        root = Path(shared)
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (root / f"{name}.built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (root / f"{name}.built").touch()
    return folder


def _prepare_tiny(folder: Path) -> None:
    run = run_prepare(*TINY_PREPARE_ARGS, "--out", str(folder / "prepared"))
    assert run.returncode == 0, run.stdout + run.stderr


def _run_tiny(workdir: Path) -> None:
    from workflow_run import TINY, snakemake, write_config

    write_config(workdir, TINY)
    run = snakemake(workdir)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.fixture(scope="session")
def prepared_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a complete prepared folder made from the tiny synthetic corpus (read-only use)."""
    return built_once(tmp_path_factory, "prepared_tiny", _prepare_tiny) / "prepared"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory of one complete default workflow run at tiny size (read-only use).

    Shared by the end-to-end, audit and reproducibility tests, because a run costs minutes.
    """
    return built_once(tmp_path_factory, "tiny_run", _run_tiny)


def reads_tiny_run(item: pytest.Item) -> bool:
    return "tiny_run" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that read tiny_run after all the others (stable order otherwise), so that its
    build, started with the session (tiny_run_started_early), is done when they begin, instead
    of both xdist workers waiting for it at the start (test_audit.py sorts early)."""
    items.sort(key=reads_tiny_run)


@pytest.fixture(scope="session", autouse=True)
def tiny_run_started_early(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Start building tiny_run in the background as the session starts, when a selected test
    needs it, in one process only (xdist's first worker, or a run without xdist).

    Why: the build takes about two minutes, and the first test to ask for it used to build it
    while the second xdist worker's first tiny_run test waited on the lock, idle. Started here,
    both workers run other tests meanwhile (its readers run last), and a test that needs
    the run waits on the same lock (built_once) only for what is left of the build. A failed
    build leaves no `.built` mark, so the fixture builds again and the test shows the failure.
    """
    needed = any(reads_tiny_run(item) for item in request.session.items)
    if not needed or os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        yield
        return

    def build() -> None:
        # A failure is the tiny_run fixture's to report: it builds again.
        with contextlib.suppress(AssertionError):
            built_once(tmp_path_factory, "tiny_run", _run_tiny)

    builder = threading.Thread(target=build, name="tiny_run builder", daemon=True)
    builder.start()
    yield
    builder.join()


# hpopt's tests (test_hpopt*.py): the trial environment Orion gives, and none leaking.
ORION_ENV = {
    "ORION_EXPERIMENT_NAME": "speaker-id",
    "ORION_EXPERIMENT_VERSION": "1",
    "ORION_TRIAL_ID": "0123abcd",
}


@pytest.fixture
def clean_environment() -> Iterator[None]:
    """No Orion, torchrun or lease variables leak in, and none set by hpopt leak out."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("ORION_", "HPOPT_", "TORCHELASTIC_")) or name in (
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
        ):
            del os.environ[name]
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def orion_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment ``orion hunt`` gives a trial, with an existing (empty) results file."""
    results = tmp_path / "results_x.log"
    results.touch()
    for name, value in ORION_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ORION_RESULTS_PATH", str(results))
    return results

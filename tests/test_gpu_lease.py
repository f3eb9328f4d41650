"""GPU leases on a CPU machine: fake device ids, real processes, real flock, real SIGKILL."""

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hpopt as hp
from hpopt.gpu_lease import ENV_LEASED, LeaseConfig, lease_from_environment

HOLDER = Path(__file__).parent / "fixtures" / "hpopt_gpu_holder.py"
DEADLINE_S = 120  # only against hangs; nothing here asserts on time


@pytest.fixture
def lease_env(tmp_path):
    """Environment of a trial with leasing on: fake GPUs ``a,b`` and locks in tmp_path."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("HPOPT_")
        and name not in ("CUDA_VISIBLE_DEVICES", "RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    env.update(HPOPT_GPUS="a,b", HPOPT_LEASE_DIR=str(tmp_path / "leases"))
    return env


def holder(markers: Path, hold_s: float, env: dict, via_cli: bool, **popen) -> subprocess.Popen:
    markers.mkdir(exist_ok=True)
    command = [sys.executable, str(HOLDER), str(markers), str(hold_s)]
    if via_cli:
        command = [sys.executable, "-m", "hpopt.gpu_lease", "--", *command]
    return subprocess.Popen(command, env=env, **popen)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("gpus", "per_trial", "via_cli"),
    [("a,b", "1", False), ("a,b", "1", True), ("a,b,c", "2", True)],
)
def test_concurrent_trials_never_share_a_device(tmp_path, lease_env, gpus, per_trial, via_cli):
    lease_env.update(HPOPT_GPUS=gpus, HPOPT_GPUS_PER_TRIAL=per_trial)
    markers = tmp_path / "markers"
    trials = [holder(markers, 0.3, lease_env, via_cli) for _ in range(6)]
    exit_codes = [trial.wait(timeout=DEADLINE_S) for trial in trials]

    assert not (markers / "overlap").exists(), (markers / "overlap").read_text()
    assert exit_codes == [0] * 6
    held = [
        line.split()[1].split(",") for line in (markers / "holders.log").read_text().splitlines()
    ]
    assert len(held) == 6
    assert all(len(devices) == int(per_trial) for devices in held)
    assert all(set(devices) <= set(gpus.split(",")) for devices in held)


def test_a_sigkilled_holder_frees_its_device(tmp_path, lease_env):
    lease_env["HPOPT_GPUS"] = "a"
    first_markers, second_markers = tmp_path / "first", tmp_path / "second"
    first = holder(first_markers, 3600, lease_env, via_cli=False)
    wait_until(lambda: (first_markers / "holders.log").exists(), "the first trial to hold GPU a")

    waiting_log = tmp_path / "second.stderr"
    with waiting_log.open("w") as stderr:
        second = holder(second_markers, 0, lease_env, via_cli=True, stderr=stderr)
        wait_until(lambda: "waiting for 1 free GPU(s) of a" in waiting_log.read_text(), "a wait")
        assert f"pid {first.pid}" in waiting_log.read_text()  # the log names the holder
        assert second.poll() is None and not (second_markers / "holders.log").exists()

        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=DEADLINE_S) == -signal.SIGKILL
        assert second.wait(timeout=DEADLINE_S) == 0
    assert (second_markers / "holders.log").read_text().split()[1] == "a"


def test_the_cli_holds_the_lock_for_the_commands_lifetime(tmp_path, lease_env):
    lease_env["HPOPT_GPUS"] = "a"
    command = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    child = subprocess.Popen(
        [sys.executable, "-m", "hpopt.gpu_lease", "--", *command],
        env=lease_env,
        stdin=subprocess.PIPE,
    )
    lock = LeaseConfig.from_environment(lease_env).lock_path("a")

    def held_by_someone() -> bool:
        if not lock.exists():
            return False
        with lock.open("a") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    wait_until(held_by_someone, "the CLI to lock GPU a")
    child.communicate(b"", timeout=DEADLINE_S)  # the command ends ...
    assert child.returncode == 0
    assert not held_by_someone()  # ... and the lock went with it


def test_cli_passes_the_exit_status_and_the_devices(lease_env):
    code = "import os, sys; print(os.environ['CUDA_VISIBLE_DEVICES']); sys.exit(5)"
    finished = subprocess.run(
        [sys.executable, "-m", "hpopt.gpu_lease", "--", sys.executable, "-c", code],
        env=lease_env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert finished.returncode == 5
    assert finished.stdout.strip() == "a"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "no command given"),
        (["--", "/nonexistent/tool"], 127, "cannot run '/nonexistent/tool'"),
        (
            ["--per-trial", "3", "--", "true"],
            2,
            "HPOPT_GPUS_PER_TRIAL=3 must be between 1 and the 2",
        ),
    ],
)
def test_cli_errors(lease_env, args, code, message):
    finished = subprocess.run(
        [sys.executable, "-m", "hpopt.gpu_lease", *args],
        env=lease_env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert finished.returncode == code
    assert message in finished.stderr


@pytest.mark.parametrize(
    ("gpus", "per_trial", "message"),
    [
        ("0,0", "1", "lists a device twice"),
        ("0,gpu 1", "1", "invalid device id"),
        ("0,1", "0", "must be between 1 and the 2"),
        ("0,1", "two", "is not an integer"),
    ],
)
def test_bad_configuration_is_refused(gpus, per_trial, message):
    with pytest.raises(hp.HpoptError, match=message):
        LeaseConfig.from_environment({"HPOPT_GPUS": gpus, "HPOPT_GPUS_PER_TRIAL": per_trial})


def test_no_lease_without_hpopt_gpus(monkeypatch):
    monkeypatch.delenv("HPOPT_GPUS", raising=False)
    monkeypatch.delenv(ENV_LEASED, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    assert LeaseConfig.from_environment({}) is None
    assert lease_from_environment() is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "untouched"


def test_a_rank_of_a_distributed_trial_must_not_lease_itself(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_LEASED, raising=False)
    monkeypatch.setenv("HPOPT_GPUS", "a,b")
    monkeypatch.setenv("HPOPT_LEASE_DIR", str(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(hp.HpoptError, match="python -m hpopt.gpu_lease -- torchrun"):
        lease_from_environment()
    monkeypatch.setenv(ENV_LEASED, "b")  # leased by the parent: nothing to do
    assert lease_from_environment() == ("b",)

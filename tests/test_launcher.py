"""hpopt-exec against ``python script.py``: real clients, real warm servers, real trials."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from workflow_run import without_coverage

from warmexec.client import SERVER_LOST_EXIT
from warmexec.protocol import messages, send_message
from warmexec.trial import SETUP_FAILED_EXIT

FIXTURES = Path(__file__).parent / "fixtures"
TRIAL = FIXTURES / "launcher_trial.py"
PROBE = FIXTURES / "launcher_probe.py"
WAIT = FIXTURES / "launcher_wait.py"
PYTHON = sys.executable
HPOPT_EXEC = str(Path(sys.executable).with_name("hpopt-exec"))
ORION = str(Path(sys.executable).with_name("orion"))
LAUNCHERS = {"cold": [PYTHON], "warm": [HPOPT_EXEC]}
DEADLINE_S = 120  # only so that a hanging launcher fails the test instead of blocking the suite


def base_env(socket_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPOPT_", "ORION_"))}
    return {**env, "HPOPT_EXEC_SOCKET": str(socket_path), **extra}


def hpopt_exec(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([HPOPT_EXEC, *args], env)


def run(command: list, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [str(part) for part in command]
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=DEADLINE_S
    )


def probe(mode: str, env: dict[str, str], *args: str, cwd: Path | None = None) -> dict:
    finished = run([*LAUNCHERS[mode], PROBE, *args], env, cwd)
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def start(mode: str, env: dict[str, str], *args: object) -> tuple[subprocess.Popen, int]:
    """Start the wait fixture; the process and the pid of the trial it announced."""
    command = [str(part) for part in (*LAUNCHERS[mode], WAIT, *args)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first_line = process.stdout.readline()
    assert first_line.startswith("pid "), first_line + process.stderr.read()
    return process, int(first_line.split()[1])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def eventually(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def server_state(env: dict[str, str]) -> dict:
    finished = hpopt_exec("--status", env=env)
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


@pytest.fixture(scope="module")
def warm_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """One warm server with torch preloaded, shared by the tests that do not stop or kill it."""
    socket_path = tmp_path_factory.mktemp("warm") / "warm.sock"
    env = base_env(socket_path, HPOPT_EXEC_PRELOAD="numpy,torch")
    started = hpopt_exec("--serve", env={**env, "HPOPT_TEST_SERVER_ONLY": "1"})
    assert started.returncode == 0, started.stderr
    yield env
    hpopt_exec("--stop", env=env)


@pytest.fixture
def light_env(tmp_path) -> Iterator[dict[str, str]]:
    """A server of its own that preloads nothing (starts in a blink), for tests that end it."""
    env = base_env(tmp_path / "light.sock", HPOPT_EXEC_PRELOAD="")
    assert hpopt_exec("--serve", env=env).returncode == 0
    yield env
    hpopt_exec("--stop", env=env)


@pytest.mark.parametrize(("outcome", "returncode"), [("pass", 0), ("fail", 3), ("crash", 1)])
def test_trial_outputs_match_a_cold_run(warm_env, tmp_path, outcome, returncode):
    outputs = {}
    for mode, launcher in LAUNCHERS.items():
        results = tmp_path / f"results_{mode}.log"
        results.touch()  # Orion creates the file empty
        env = {**warm_env, "ORION_RESULTS_PATH": str(results)}
        finished = run([*launcher, TRIAL, "--lr", "0.7", "--outcome", outcome], env, tmp_path)
        outputs[mode] = (finished.returncode, finished.stdout, finished.stderr, results.read_text())

    assert outputs["cold"][0] == returncode
    assert outputs["warm"] == outputs["cold"]  # status, stdout, stderr (tracebacks), result file
    if outcome == "pass":
        assert json.loads(outputs["warm"][3])[0]["value"] == pytest.approx(0.16)


def test_trial_sees_the_clients_argv_env_cwd_and_streams(warm_env, tmp_path):
    env = {**warm_env, "HPOPT_TEST_MARKER": "from the client", "ORION_TRIAL_ID": "abc123"}
    cold = probe("cold", env, "--flag", "value with spaces", cwd=tmp_path)
    warm = probe("warm", env, "--flag", "value with spaces", cwd=tmp_path)

    assert warm["warm"] and not cold["warm"]
    assert warm["env"]["HPOPT_TEST_MARKER"] == "from the client"
    assert "HPOPT_TEST_SERVER_ONLY" not in warm["env"]  # the server's own environment does not leak
    for fact in ("argv", "file", "name", "cwd", "env", "path0", "fds", "stdin", "stdout", "stderr"):
        assert warm[fact] == cold[fact], fact


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_stdio_buffering_follows_the_clients_environment(warm_env, unbuffered):
    env = {**warm_env, "PYTHONUNBUFFERED": unbuffered}
    cold, warm = probe("cold", env), probe("warm", env)

    assert warm["warm"]
    assert (warm["stdout"], warm["stderr"]) == (cold["stdout"], cold["stderr"])


def test_each_trial_gets_fresh_random_state(warm_env):
    first, second = probe("warm", warm_env, "--torch"), probe("warm", warm_env, "--torch")

    assert first["warm"] and second["warm"]
    for generator in ("random", "numpy", "torch"):
        assert first[generator] != second[generator], generator


@pytest.mark.parametrize("omp_num_threads", ["1", None])
def test_thread_count_follows_the_clients_environment(warm_env, omp_num_threads):
    env = dict(warm_env)
    if omp_num_threads:
        env["OMP_NUM_THREADS"] = omp_num_threads
    cold, warm = probe("cold", env, "--torch"), probe("warm", env, "--torch")

    assert warm["warm"]
    assert warm["threads"] == cold["threads"]
    if omp_num_threads:
        assert warm["threads"] == int(omp_num_threads)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_client_ends_the_trial_as_it_ends_a_cold_one(warm_env, signum):
    endings = {}
    # Not under coverage's subprocess measurement (make test): a SIGINT that lands while
    # coverage starts up in the cold process was swallowed there and the script waited on.
    env = without_coverage(warm_env)
    for mode in LAUNCHERS:
        process, trial_pid = start(mode, env)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=DEADLINE_S)
        endings[mode] = (process.returncode, stderr)
        assert not alive(trial_pid)

    assert endings["cold"][0] == -signum  # SIGINT: KeyboardInterrupt, then death by SIGINT
    assert endings["warm"][0] == endings["cold"][0]
    # Where the KeyboardInterrupt hits the script varies between runs; how it is reported must not.
    for _, stderr in endings.values():
        if signum == signal.SIGINT:
            assert stderr.startswith("Traceback") and stderr.endswith("\nKeyboardInterrupt\n")
            assert stderr.count('  File "') == 1, stderr  # the script's frame only
        else:
            assert stderr == ""


def test_trial_dies_with_its_client(warm_env):
    process, trial_pid = start("warm", warm_env)
    process.kill()
    process.wait(timeout=DEADLINE_S)

    assert eventually(lambda: not alive(trial_pid))


def test_concurrent_clients_get_independent_trials(warm_env, tmp_path):
    meet = tmp_path / "meet"
    meet.mkdir()
    # Each trial waits until both exist: a server running trials one after the other deadlocks.
    started = [start("warm", warm_env, "--meet", meet, "--peers", 2) for _ in range(2)]
    for process, _ in started:
        process.communicate(timeout=DEADLINE_S)

    assert [process.returncode for process, _ in started] == [0, 0]
    assert sorted(int(p.name) for p in meet.iterdir()) == sorted(pid for _, pid in started)


def test_clients_arriving_together_start_one_server(tmp_path):
    env = base_env(tmp_path / "lazy.sock", HPOPT_EXEC_PRELOAD="")
    command = [HPOPT_EXEC, str(PROBE)]
    clients = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    try:
        facts = [json.loads(client.communicate(timeout=DEADLINE_S)[0]) for client in clients]
    finally:
        hpopt_exec("--stop", env=env)

    assert all(fact["warm"] for fact in facts)
    assert len({fact["ppid"] for fact in facts}) == 1
    assert len({fact["pid"] for fact in facts}) == 3


def test_server_killed_mid_trial_fails_the_trial(light_env):
    process, trial_pid = start("warm", light_env)
    os.kill(server_state(light_env)["pid"], signal.SIGKILL)
    _, stderr = process.communicate(timeout=DEADLINE_S)

    assert process.returncode == SERVER_LOST_EXIT
    assert "went away while the trial was running" in stderr
    assert eventually(lambda: not alive(trial_pid))


def test_trial_that_cannot_start_says_why_on_its_stderr(light_env, tmp_path):
    stderr_read, stderr_write = os.pipe()
    request = {
        "op": "run",
        "argv": [str(PROBE)],
        "cwd": str(tmp_path / "removed"),
        "env": light_env,
        "prefix": sys.prefix,
    }
    with socket.socket(socket.AF_UNIX) as client, open(os.devnull, "r+b") as null:
        client.connect(light_env["HPOPT_EXEC_SOCKET"])
        send_message(client, request, fds=(null.fileno(), null.fileno(), stderr_write))
        os.close(stderr_write)
        replies = list(messages(client))
    with open(stderr_read, encoding="utf-8") as stderr:
        said = stderr.read()

    assert [reply["op"] for reply in replies] == ["started", "exited"]
    assert replies[-1]["returncode"] == SETUP_FAILED_EXIT
    assert "could not start" in said and "removed" in said


def test_stale_socket_of_a_killed_server_is_replaced(light_env):
    killed = server_state(light_env)["pid"]
    os.kill(killed, signal.SIGKILL)
    assert eventually(lambda: not alive(killed))
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(ConnectionRefusedError):
        client.connect(light_env["HPOPT_EXEC_SOCKET"])

    facts = probe("warm", light_env)

    assert facts["warm"] and facts["ppid"] != killed


def test_stop_lets_running_trials_finish_then_exits(light_env, tmp_path):
    release = tmp_path / "release"
    trial, _ = start("warm", light_env, "--until", release)
    server = server_state(light_env)["pid"]
    stopping = subprocess.Popen([HPOPT_EXEC, "--stop"], env=light_env, stderr=subprocess.PIPE)
    assert eventually(lambda: not Path(light_env["HPOPT_EXEC_SOCKET"]).exists())
    release.touch()

    assert trial.wait(timeout=DEADLINE_S) == 0
    assert stopping.wait(timeout=DEADLINE_S) == 0
    assert not alive(server)
    assert hpopt_exec("--status", env=light_env).returncode == 1


def test_idle_server_exits_and_removes_its_socket(tmp_path):
    env = base_env(tmp_path / "idle.sock", HPOPT_EXEC_PRELOAD="", HPOPT_EXEC_IDLE_TIMEOUT="1")
    facts = probe("warm", env)

    assert facts["warm"]
    assert eventually(lambda: not alive(facts["ppid"]))
    assert not (tmp_path / "idle.sock").exists()


def test_overlong_socket_path_is_replaced_by_a_short_private_one(tmp_path):
    requested = tmp_path / ("d" * 60) / ("e" * 60) / "warm.sock"
    env = base_env(requested, HPOPT_EXEC_PRELOAD="")
    try:
        facts = probe("warm", env)
        state = server_state(env)
    finally:
        hpopt_exec("--stop", env=env)
    used = Path(state["socket"])
    mode = used.parent.stat().st_mode
    for leftover in (used.with_name(used.name + ".lock"), used.with_name(used.name + ".log")):
        leftover.unlink()  # in the shared private directory, not in tmp_path

    assert facts["warm"]
    assert used != requested and len(os.fsencode(used)) <= 107
    assert mode & 0o777 == 0o700


def test_falls_back_to_cold_when_no_server_can_start(tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.touch()
    env = base_env(not_a_directory / "warm.sock")
    finished = run([HPOPT_EXEC, PROBE, "--flag"], env)

    assert finished.returncode == 0
    assert not json.loads(finished.stdout)["warm"]
    assert finished.stderr.count("hpopt-exec:") == 1
    assert "running the trial cold" in finished.stderr


# A numerics variable (reprohunt.numerics) is read once when torch/oneDNN/numpy load, like
# PYTHONHASHSEED: a server started under another profile must not run the trial.
@pytest.mark.parametrize(
    "name, value", [("PYTHONHASHSEED", "123"), ("ATEN_CPU_CAPABILITY", "default")]
)
def test_server_started_with_other_interpreter_settings_is_not_used(light_env, name, value):
    env = {**light_env, name: value}
    finished = run([HPOPT_EXEC, PROBE], env)

    assert finished.returncode == 0
    assert not json.loads(finished.stdout)["warm"]
    assert name in finished.stderr and "running the trial cold" in finished.stderr


@pytest.mark.slow
def test_orion_hunt_runs_its_trials_warm(tmp_path):
    from orion.client import get_experiment

    database = tmp_path / "orion.pkl"
    socket_path = tmp_path / "warm.sock"
    env = base_env(
        socket_path,
        HPOPT_EXEC_PRELOAD="numpy,torch",
        ORION_DB_TYPE="pickleddb",
        ORION_DB_ADDRESS=str(database),
    )
    command = [ORION, "hunt", "-n", "launcher", "--exp-max-trials", "2"]
    command += ["--working-dir", tmp_path / "work", HPOPT_EXEC, TRIAL, "--lr~uniform(0, 1)"]
    try:
        hunt = run(command, env, tmp_path)
    finally:
        hpopt_exec("--stop", env=env)
    assert hunt.returncode == 0, hunt.stdout + hunt.stderr

    storage = {"type": "legacy", "database": {"type": "pickleddb", "host": str(database)}}
    trials = get_experiment("launcher", storage=storage).fetch_trials()
    assert [trial.status for trial in trials] == ["completed", "completed"]
    for trial in trials:
        assert trial.objective.value == pytest.approx((trial.params["/lr"] - 0.3) ** 2)
    server_log = socket_path.with_name("warm.sock.log").read_text()
    assert server_log.count("started: ") == 2 and server_log.count("exited with 0") == 2

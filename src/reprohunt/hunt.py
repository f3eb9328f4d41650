"""The workflow's hunt step: check, recover, run `orion hunt`, then judge it by Orion's records.

Why a wrapper around `orion hunt`:
- `orion hunt` exits 0 even when the experiment broke, so success is read back through Orion's
  API (completed/broken trials), and a failure names the first broken trial's log;
- inputs, priors, writable folders, free space, GPUs and the database are checked before any
  trial runs (reprohunt.preflight);
- the Orion experiment name carries a hash of everything that defines the search (space,
  algorithm, recipe arguments, data), so a changed space starts a new experiment instead of
  mixing its trials with old ones, while a raised budget (max_trials) continues the same one;
- after a crash, what dead processes left (reserved trials, the PickledDB soft lock, the
  algorithm lock) is released, but only when no hunt process holds this experiment
  (reprohunt.recovery).

Three modes, so that one experiment can be hunted by several processes (hosts, SLURM jobs):
- default: hunt, then judge the experiment and write hunt.json (one hunt process);
- `--worker I`: one of `hunt.parallel_hunts` processes joining the same experiment; it fails only
  when its own `orion hunt` failed or the experiment broke, and writes a small worker record;
- `--judge`: once every worker has ended, judge the experiment and write hunt.json.
With W trial slots in all (`n_workers` x `parallel_hunts`), Orion completes between max_trials and
max_trials + W - 1 trials: a slot that starts a trial while fewer than max_trials are complete
finishes it (see docs/scaling-out.md). Every completed trial is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpopt.files import sha256_text, write_text_atomically
from hpopt.process import die_with_parent
from reprohunt import dbguard, first_trial, hunt_progress, orion_noise
from reprohunt.dataverify import data_identity
from reprohunt.orion_storage import (
    public_description,
    redact,
    storage_config,
    storage_env,
)
from reprohunt.preflight import (
    DEFAULT_MIN_FREE_MB,
    HuntError,
    check_data,
    check_device,
    check_inputs,
    check_mongodb,
    check_writable,
    trial_gpus,
    validate_search,
)
from reprohunt.recipe import command as recipe_command
from reprohunt.records import (
    ExperimentState,
    HuntSpec,
    HuntSummary,
    RecordError,
    Replay,
    WorkerRecord,
    write_record,
)
from reprohunt.recovery import clear_stale_db_lock, hunt_membership, recover_dead_workers

LOG_TAIL_LINES = 15


def configuration(spec: HuntSpec) -> dict[str, Any]:
    """What makes trials comparable apart from the data: the space, the algorithm and the recipe
    (every argument, its code files through their digest `code_sha256`). Kept apart from the data
    so that a published result can tell another configuration from the same one on other data."""
    found: dict[str, Any] = {
        "space": spec.space,
        "algorithm": spec.algorithm,
        "recipe": {key: value for key, value in spec.recipe.items() if key != "code"},
    }
    if spec.gpus_per_trial != 1:  # DDP trials are not comparable with 1-process ones
        found["gpus_per_trial"] = spec.gpus_per_trial
    if spec.start_with_train_yaml:  # another sequence of trials
        found["start_with_train_yaml"] = True
    return found


def experiment_name(spec: HuntSpec, data_folder: Path) -> str:
    """`<experiment>-<hash>`: the hash covers what makes trials comparable, not the budget:
    the configuration and the data."""
    identity = configuration(spec) | {"data": data_identity(data_folder)}
    return f"{spec.experiment}-{sha256_text(json.dumps(identity, sort_keys=True))[:8]}"


def trials_dir(hunt_dir: Path, name: str) -> Path:
    """Each experiment's own trial folders: Orion names a trial's folder by a hash of its params,
    so two experiments of one results folder would otherwise share folders and logs."""
    return hunt_dir / name / "trials"


def departures_file(hunt_dir: Path, name: str) -> Path:
    """Where a hunt notes what made its trial sequence depart from a straight run's."""
    return hunt_dir / name / "departures.txt"


def note_departures(hunt_dir: Path, name: str, messages: list[str]) -> None:
    """Record what made this hunt's trial sequence depart from a straight run's (replay reads
    them into hunt.json), so that no record claims a replay that did not happen."""
    with departures_file(hunt_dir, name).open("a") as record:
        record.writelines(f"{message}\n" for message in messages)


def replay(spec: HuntSpec, hunt_dir: Path, state: ExperimentState) -> Replay:
    """Whether re-running this hunt must give the same trials (HuntSpec.replays), and no trial
    broke or was retried after breaking."""
    departures = []
    record = departures_file(hunt_dir, state.name)
    if record.exists():
        departures += record.read_text().splitlines()
    broken = state.status_counts.get("broken", 0)
    if broken:
        departures.append(f"{broken} trial(s) broke")
    expected = spec.replays
    return Replay(expected=expected, intact=expected and not departures, departures=departures)


def write_orion_config(spec: HuntSpec, hunt_dir: Path, name: str) -> Path:
    """The `-c` file of `orion hunt` (storage travels in env vars, so no credentials here)."""
    import yaml

    config = {
        "experiment": {
            "max_trials": spec.max_trials,
            "max_broken": spec.max_broken,
            "working_dir": str(trials_dir(hunt_dir, name).resolve()),
            "algorithm": spec.algorithm,
        },
        "worker": {
            "n_workers": spec.n_workers,
            "heartbeat": spec.heartbeat,
            "max_broken": spec.max_broken,
            # A worker waiting for another process's trials must not give up after Orion's 60 s.
            "idle_timeout": max(600, 2 * (spec.trial_timeout or 0)),
        },
        "evc": {"enable": False},
    }
    path = hunt_dir / "orion.yaml"
    # Concurrent hunt processes write the same file; a reader never sees half of one.
    write_text_atomically(path, yaml.safe_dump(config, sort_keys=False))
    return path


def trial_launcher(spec: HuntSpec, gpus: list[str]) -> list[str]:
    """The command that runs a trial's script: `hpopt-trial` runs `[*launcher, script, args…]`.

    One process per trial: the warm launcher when configured and installed, else the train
    env's python. `gpus_per_trial: N > 1`: torchrun with N workers, started cold (its agent
    imports torch itself and starts every worker as a fresh `python`, so the warm server's
    preloaded interpreter is never used). With GPUs to lease, `python -m hpopt.gpu_lease`
    takes all N devices before torchrun starts: the workers inherit CUDA_VISIBLE_DEVICES and
    must not lease on their own (each would take a different single device).
    """
    bin_dir = Path(spec.train_env).resolve() / "bin"
    processes = spec.gpus_per_trial
    if processes > 1:
        torchrun = [str(bin_dir / "torchrun"), "--standalone", f"--nproc_per_node={processes}"]
        if not gpus:
            return torchrun
        return [str(bin_dir / "python"), "-m", "hpopt.gpu_lease", "--", *torchrun]
    warm = bin_dir / "hpopt-exec"
    return [str(warm if spec.warm_launcher and warm.exists() else bin_dir / "python")]


def hunt_command(spec: HuntSpec, name: str, config_path: Path) -> list[str]:
    trial = str(Path(spec.train_env).resolve() / "bin" / "hpopt-trial")
    recipe_argv = recipe_command(
        spec.recipe,
        data_folder=spec.data_folder,
        output_folder="{trial.working_dir}",
        trial=True,
    )
    priors = [f"--{key}~{prior}" for key, prior in sorted(spec.space.items())]
    orion = str(Path(spec.train_env).resolve() / "bin" / "orion")
    return [orion, "hunt", "-n", name, "-c", str(config_path), trial, *recipe_argv, *priors]


def hunt_environment(
    spec: HuntSpec, storage: dict[str, Any], hunt_dir: Path, gpus: list[str]
) -> dict[str, str]:
    """What `orion hunt` and, through it, every trial get: storage, launcher, timeout, GPUs."""
    launcher, *launcher_args = trial_launcher(spec, gpus)
    env = os.environ | storage_env(storage) | {"HPOPT_TRIAL_LAUNCHER": launcher}
    env.pop("HPOPT_TRIAL_LAUNCHER_ARGS", None)
    env["PYTHONWARNINGS"] = orion_noise.python_warnings(os.environ.get("PYTHONWARNINGS"))
    if launcher_args:
        env["HPOPT_TRIAL_LAUNCHER_ARGS"] = shlex.join(launcher_args)
    # OpenMP reads this when torch loads, i.e. once in the warm server: set it for server and
    # trials alike. Spin-waiting threads made epochs 10x slower on a loaded 2-core machine.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # `orion hunt` imports scikit-learn, which sets these two in the environment its trials
    # inherit; the warm server refuses trials whose KMP_* differ from its own (they are read
    # at start-up), so every trial ran cold. Set them for server and trials alike.
    env.setdefault("KMP_DUPLICATE_LIB_OK", "True")
    env.setdefault("KMP_INIT_AT_FORK", "FALSE")
    # One warm server per host: hunt processes of other nodes may share this folder.
    env["HPOPT_EXEC_SOCKET"] = str((hunt_dir / f"warm-{socket.gethostname()}.sock").resolve())
    if spec.trial_timeout:
        env["HPOPT_TRIAL_TIMEOUT"] = str(spec.trial_timeout)
    if gpus:
        env["HPOPT_GPUS"] = ",".join(gpus)
        env["HPOPT_GPUS_PER_TRIAL"] = str(spec.gpus_per_trial)
        env["HPOPT_LEASE_DIR"] = str((hunt_dir / "gpu-leases").resolve())
    return env


def run_orion(command: list[str], env: dict[str, str]) -> int:
    """Run `orion hunt`, passing SIGTERM/SIGINT on so Orion can release its trials cleanly."""
    process = subprocess.Popen(command, env=env, preexec_fn=die_with_parent)

    def forward(signum: int, _frame: object) -> None:
        process.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return process.wait()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return f"    ({path} was not written: the trial did not start)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


def outcome(storage: dict[str, Any], name: str) -> ExperimentState:
    """Orion's own account of the experiment: counts by status and the broken trials' logs."""
    from orion.client import get_experiment

    experiment = get_experiment(name, storage=storage)
    trials = experiment.fetch_trials(with_evc_tree=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    broken = sorted(
        (t for t in trials if t.status == "broken"), key=lambda t: t.end_time or t.submit_time
    )
    return ExperimentState(
        name=name,
        version=experiment.version,
        is_done=experiment.is_done,
        is_broken=experiment.is_broken,
        status_counts=counts,
        completed=counts.get("completed", 0),
        broken_trial_logs=[str(Path(t.working_dir) / "trial.log") for t in broken],
    )


def failure_message(state: ExperimentState, max_broken: int) -> str | None:
    completed, logs = state.completed, state.broken_trial_logs
    if state.is_broken or completed == 0:
        reason = (
            f"{len(logs)} trial(s) broke (max_broken is {max_broken})"
            if logs
            else "no trial completed"
        )
        message = f"Orion experiment {state.name}: {reason}; {completed} completed."
        if logs:
            message += f"\nFirst failing trial's log: {logs[0]}\n{tail(Path(logs[0]))}"
        return message
    return None


def unfinished_message(state: ExperimentState, max_trials: int) -> str | None:
    """After every hunt process has ended, an unfinished experiment means one stopped early."""
    if state.is_done:
        return None
    return (
        f"Orion experiment {state.name} is not finished ({state.completed} of "
        f"{max_trials} trials completed, {state.status_counts}) although every hunt process "
        "has ended: see the hunt logs for the one that stopped early; rerun to continue"
    )


def preflight(spec: HuntSpec, hunt_dir: Path, data: Path, storage: dict[str, Any]) -> list[str]:
    """Every check that can fail before work starts; returns the GPUs trials will lease."""
    check_inputs(spec.recipe, spec.data_folder, data, spec.config_file)
    check_data(Path(spec.data_folder), spec.config_file)
    validate_search(spec.space, spec.algorithm, spec.config_file)
    check_device(spec.recipe["device"], spec.config_file)
    min_free_mb = DEFAULT_MIN_FREE_MB if spec.min_free_mb is None else spec.min_free_mb
    check_writable(
        [hunt_dir, trials_dir(hunt_dir, experiment_name(spec, data.parent))], min_free_mb
    )
    gpus = trial_gpus(spec.gpus or [], os.environ)
    if not spec.pickled:
        check_mongodb(storage["database"], spec.storage.get("host", "localhost"))
    return gpus


def join_hunt(
    spec: HuntSpec,
    hunt_dir: Path,
    command: list[str],
    storage: dict[str, Any],
    gpus: list[str],
) -> int:
    """Recover if alone, then run `orion hunt` as one member of the experiment's hunters."""
    name = command[command.index("-n") + 1]
    write_orion_config(spec, hunt_dir, name)
    env = hunt_environment(spec, storage, hunt_dir, gpus)

    def when_alone() -> None:
        if spec.pickled:  # alone: no live hunter can be between a trial's result and its record
            dbguard.check(hunt_dir)
        messages = clear_stale_db_lock(hunt_dir) if spec.pickled else []
        recovered = recover_dead_workers(storage, name, spec.max_broken)
        for message in messages + recovered.messages:
            print(f"recovery: {message}", flush=True)
        if recovered.departures:  # retried broken trials: the seeded sequence no longer replays
            note_departures(hunt_dir, name, recovered.departures)
        if spec.start_with_train_yaml:
            start_with_train_yaml(spec, command, env, storage, name)

    with hunt_membership(hunt_dir, when_alone) as alone:
        print(f"orion experiment: {name}\ncommand: {' '.join(command)}", flush=True)
        if not alone and spec.parallel_hunts == 1:
            extra = (
                f"another hunt process (PID {os.getpid()} on {socket.gethostname()}) joined "
                "the experiment while one was hunting, although hunt.parallel_hunts is 1"
            )
            print(f"warning: {extra}", flush=True)
            note_departures(hunt_dir, name, [extra])
        if gpus:
            lease_dir = env["HPOPT_LEASE_DIR"]
            print(f"trials lease GPUs {','.join(gpus)} (locks in {lease_dir})", flush=True)
            wanted = spec.n_workers * spec.gpus_per_trial
            if len(gpus) < wanted:
                print(
                    f"note: {spec.n_workers} workers need {wanted} GPU(s) at once, "
                    f"{len(gpus)} listed: trials will wait for devices",
                    flush=True,
                )
        with (
            warm_server(env, stop_at_end=spec.parallel_hunts == 1),
            hunt_progress.watching(name, storage, spec.max_trials),
        ):
            return run_orion(command, env)


def start_with_train_yaml(
    spec: HuntSpec,
    command: list[str],
    env: dict[str, str],
    storage: dict[str, Any],
    name: str,
) -> None:
    """Insert the recipe as shipped as the experiment's first trial (reprohunt.first_trial)."""
    point, description = first_trial.train_yaml_point(
        Path(spec.recipe["dir"]) / spec.recipe["train_yaml"], spec.space
    )
    if point is None:
        print(f"note: hunt.start_with_train_yaml: no first trial: {description}", flush=True)
    elif first_trial.insert(command, env, storage, name, point):
        print(f"first trial: {description}", flush=True)


@contextlib.contextmanager
def warm_server(env: dict[str, str], stop_at_end: bool) -> Iterator[None]:
    """Start the warm launcher's server alongside Orion's start-up; stop it when the hunt ends.

    Trials would start it lazily anyway; starting it now overlaps its imports with Orion's.
    Another hunt process on this host may still use it, so only a lone hunt stops it (the
    server's idle timeout ends it otherwise).
    """
    launcher = env["HPOPT_TRIAL_LAUNCHER"]
    if Path(launcher).name != "hpopt-exec":
        yield
        return
    starting = subprocess.Popen([launcher, "--serve"], env=env, stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        starting.wait()
        if stop_at_end:
            subprocess.run([launcher, "--stop"], env=env, stdout=subprocess.DEVNULL, check=False)


class HuntFailure(Exception):
    """A hunt that did not give a judged experiment: the message, and the step's exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def hunt(
    spec: HuntSpec,
    hunt_dir: Path,
    data: Path,
    out: Path,
    worker: int | None = None,
    judge: bool = False,
) -> HuntSummary | WorkerRecord:
    """The hunt step in one of its three modes (see the module's docstring): check, hunt and
    judge the experiment, then write `out` (hunt.json, or with `worker` its worker record) and
    return what it wrote. Raises HuntFailure, which carries the step's exit code."""
    orion_noise.install()  # orion is imported lazily below (preflight, recovery, outcome)
    storage = storage_config(spec.storage, hunt_dir)
    if not judge:
        try:
            gpus = preflight(spec, hunt_dir, data, storage)
        except HuntError as error:
            raise HuntFailure(redact(str(error)), 2) from error

    name = experiment_name(spec, data.parent)
    command = hunt_command(spec, name, hunt_dir / "orion.yaml")
    if not judge:
        try:
            code = join_hunt(spec, hunt_dir, command, storage, gpus)
        except dbguard.DatabaseError as error:
            raise HuntFailure(str(error), 2) from error
        if code != 0:
            raise HuntFailure(f"`orion hunt` exited with {code}", code)

    state = outcome(storage, name)
    print(json.dumps(state.status_counts), flush=True)
    failure = failure_message(state, spec.max_broken)
    if failure is None and worker is None:
        failure = unfinished_message(state, spec.max_trials)
    if failure:
        raise HuntFailure(failure, 1)
    if spec.pickled:
        dbguard.snapshot(hunt_dir)
    if worker is not None:
        record = WorkerRecord(
            worker=worker,
            host=socket.gethostname(),
            pid=os.getpid(),
            experiment=name,
            status_counts_at_exit=state.status_counts,
        )
        write_record(out, record)
        return record
    summary = HuntSummary(
        **dataclasses.asdict(state),
        replay=replay(spec, hunt_dir, state),
        storage=public_description(storage),
        command=command,
        orion_config=str(hunt_dir / "orion.yaml"),
        max_trials=spec.max_trials,
        trial_slots=spec.trial_slots,
    )
    write_record(out, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="hunt/spec.json of the workflow")
    parser.add_argument("--data", type=Path, required=True, help="the data's prepared.json")
    parser.add_argument("--out", type=Path, required=True, help="hunt.json, or the worker record")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--worker", type=int, help="join as hunt process I of hunt.parallel_hunts")
    mode.add_argument("--judge", action="store_true", help="only judge, after every worker ended")
    args = parser.parse_args(argv)
    try:
        spec = HuntSpec.load(args.spec)
        hunt(spec, args.spec.parent, args.data, args.out, args.worker, args.judge)
    except RecordError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except HuntFailure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.code
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The workflow's hunt step: validate, recover, run `orion hunt`, then judge it by Orion's records.

Why a wrapper around `orion hunt`:
- `orion hunt` exits 0 even when the experiment broke, so success is read back through Orion's
  API (completed/broken trials), and a failure names the first broken trial's log;
- priors and search-space keys are checked before any trial runs;
- the Orion experiment name carries a hash of everything that defines the search (space,
  algorithm, recipe arguments, data), so a changed space starts a new experiment instead of
  mixing its trials with old ones, while a raised budget (max_trials) continues the same one;
- after a crash, state left by dead processes (reserved trials, the PickledDB soft lock, the
  algorithm lock) is cleared, but only when no other hunt process holds this experiment.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hpopt.pipeline.orion_storage import (
    DB_FILE,
    public_description,
    storage_config,
    storage_env,
)
from hpopt.pipeline.process import die_with_parent

# A reserved trial of a dead worker is only reclaimed by Orion after 5 x heartbeat; the
# PickledDB soft lock is held for milliseconds by a live process.
STALE_DB_LOCK_AGE_S = 60
LOG_TAIL_LINES = 15


class HuntError(Exception):
    """A problem the user must fix; the message says what and where."""


def load_spec(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def validate_space(space: dict[str, str], train_yaml: Path) -> None:
    """Every searched key is a top-level key of train.yaml and every prior parses in Orion."""
    from orion.core.io.space_builder import SpaceBuilder

    top_level = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", train_yaml.read_text(), re.M))
    problems = [
        f"hunt.space.{key}: '{key}' is not a top-level key of {train_yaml}; only top-level keys "
        "can be searched (lift nested values to the top level and !ref them)"
        for key in space
        if key not in top_level
    ]
    for key, prior in space.items():
        try:
            SpaceBuilder().build({f"/{key}": prior})
        except (TypeError, ValueError, SyntaxError) as error:
            problems.append(f"hunt.space.{key}: invalid Orion prior {prior!r}: {error}")
    if problems:
        raise HuntError("invalid search space in config/config.yaml:\n  " + "\n  ".join(problems))


def experiment_name(spec: dict[str, Any], prepared: dict[str, Any]) -> str:
    """`<experiment>-<hash>`: the hash covers what makes trials comparable, not the budget."""
    identity = {
        "space": spec["space"],
        "algorithm": spec["algorithm"],
        "recipe_args": spec["recipe_args"],
        "data": {key: prepared.get(key) for key in ("corpus_sha256", "features_sha256")},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{spec['experiment']}-{digest[:8]}"


def write_orion_config(spec: dict[str, Any], hunt_dir: Path) -> Path:
    """The `-c` file of `orion hunt` (storage travels in env vars, so no credentials here)."""
    import yaml

    config = {
        "experiment": {
            "max_trials": spec["max_trials"],
            "max_broken": spec["max_broken"],
            "working_dir": str((hunt_dir / "trials").resolve()),
            "algorithm": spec["algorithm"],
        },
        "worker": {
            "n_workers": spec["n_workers"],
            "heartbeat": spec["heartbeat"],
            "max_broken": spec["max_broken"],
            # A worker waiting for another process's trials must not give up after Orion's 60 s.
            "idle_timeout": max(600, 2 * (spec.get("trial_timeout") or 0)),
        },
        "evc": {"enable": False},
    }
    path = hunt_dir / "orion.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def trial_launcher(spec: dict[str, Any]) -> str:
    """The warm launcher when configured and installed, else the train env's python."""
    bin_dir = Path(spec["train_env"]).resolve() / "bin"
    warm = bin_dir / "hpopt-exec"
    return str(warm if spec.get("warm_launcher") and warm.exists() else bin_dir / "python")


def hunt_command(spec: dict[str, Any], name: str, config_path: Path) -> list[str]:
    trial = str(Path(spec["train_env"]).resolve() / "bin" / "hpopt-trial")
    priors = [f"--{key}~{prior}" for key, prior in sorted(spec["space"].items())]
    orion = str(Path(spec["train_env"]).resolve() / "bin" / "orion")
    return [orion, "hunt", "-n", name, "-c", str(config_path), trial, *spec["recipe_args"], *priors]


@contextlib.contextmanager
def hunt_membership(hunt_dir: Path, recover: Callable[[], None]) -> Iterator[None]:
    """Hold a shared lock on `hunt.lock` while hunting; run `recover` when no one else does.

    Every hunt process of this experiment folder holds the lock shared, and the kernel drops the
    lock of a dead process. Getting it exclusively therefore proves that every earlier hunter is
    dead, so whatever they left reserved or locked can be released safely.
    """
    with (hunt_dir / "hunt.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(handle, fcntl.LOCK_SH)
        else:
            recover()
            fcntl.flock(handle, fcntl.LOCK_SH)  # let other hunters join from now on
        yield


def clear_stale_db_lock(hunt_dir: Path) -> list[str]:
    """Remove a PickledDB soft lock (left on overlayfs/NFS/tmpfs by a killed process)."""
    lock = hunt_dir / f"{DB_FILE}.lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_DB_LOCK_AGE_S:
        lock.unlink()
        return [f"removed stale PickledDB lock {lock} (its owner is gone)"]
    return []


def recover_dead_workers(storage: dict[str, Any], name: str) -> list[str]:
    """Give trials of dead workers (and broken ones) back to the pool; free the algorithm lock."""
    from orion.core.io.experiment_builder import ExperimentBuilder
    from orion.core.utils.exceptions import NoConfigurationError

    builder = ExperimentBuilder(storage)
    try:
        experiment = builder.load(name=name, mode="w")
    except NoConfigurationError:
        return []
    messages = []
    reserved = builder.storage.update_trials(
        experiment, where={"status": "reserved"}, status="interrupted"
    )
    if reserved:
        messages.append(f"{reserved} trial(s) reserved by a dead worker returned to the pool")
    # A rerun after a failed hunt retries the broken trials (their trial.log is appended to)
    # instead of stopping at once on the old broken count.
    broken = builder.storage.update_trials(
        experiment, where={"status": "broken"}, status="interrupted"
    )
    if broken:
        messages.append(f"{broken} broken trial(s) of an earlier run will be retried")
    if builder.storage.release_algorithm_lock(uid=experiment.id):
        messages.append("released the algorithm lock left by a dead worker")
    return messages


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


def outcome(storage: dict[str, Any], name: str) -> dict[str, Any]:
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
    return {
        "name": name,
        "version": experiment.version,
        "is_done": experiment.is_done,
        "is_broken": experiment.is_broken,
        "status_counts": counts,
        "completed": counts.get("completed", 0),
        "broken_trial_logs": [str(Path(t.working_dir) / "trial.log") for t in broken],
    }


def failure_message(result: dict[str, Any], max_broken: int) -> str | None:
    completed, logs = result["completed"], result["broken_trial_logs"]
    if result["is_broken"] or completed == 0:
        reason = (
            f"{len(logs)} trial(s) broke (max_broken is {max_broken})"
            if logs
            else "no trial completed"
        )
        message = f"Orion experiment {result['name']}: {reason}; {completed} completed."
        if logs:
            message += f"\nFirst failing trial's log: {logs[0]}\n{tail(Path(logs[0]))}"
        return message
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="hunt/spec.json of the workflow")
    parser.add_argument("--data", type=Path, required=True, help="the data's prepared.json")
    parser.add_argument("--out", type=Path, required=True, help="hunt.json to write on success")
    args = parser.parse_args(argv)

    spec = load_spec(args.spec)
    hunt_dir = args.spec.parent
    try:
        train_yaml = Path(spec["recipe_args"][1])
        validate_space(spec["space"], train_yaml)
        if not os.access(hunt_dir, os.W_OK):
            raise HuntError(f"results folder {hunt_dir} is not writable")
    except HuntError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    prepared = json.loads(args.data.read_text())
    name = experiment_name(spec, prepared)
    storage = storage_config(spec["storage"], hunt_dir)
    config_path = write_orion_config(spec, hunt_dir)
    command = hunt_command(spec, name, config_path)
    env = os.environ | storage_env(storage) | {"HPOPT_TRIAL_LAUNCHER": trial_launcher(spec)}
    env |= {"HPOPT_EXEC_SOCKET": str((hunt_dir / "warm.sock").resolve())}
    if spec.get("trial_timeout"):
        env["HPOPT_TRIAL_TIMEOUT"] = str(spec["trial_timeout"])
    if spec.get("gpus"):
        env["HPOPT_GPUS"] = ",".join(str(gpu) for gpu in spec["gpus"])
        env["HPOPT_LEASE_DIR"] = str((hunt_dir / "gpu-leases").resolve())

    def recover() -> None:
        messages = clear_stale_db_lock(hunt_dir) if spec["storage"]["type"] == "pickleddb" else []
        for message in messages + recover_dead_workers(storage, name):
            print(f"recovery: {message}", flush=True)

    with hunt_membership(hunt_dir, recover):
        print(f"orion experiment: {name}\ncommand: {' '.join(command)}", flush=True)
        code = run_orion(command, env)

    result = outcome(storage, name)
    print(json.dumps(result["status_counts"]), flush=True)
    if code != 0:
        print(f"error: `orion hunt` exited with {code}", file=sys.stderr)
        return code
    failure = failure_message(result, spec["max_broken"])
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    summary = result | {
        "storage": public_description(storage),
        "command": command,
        "orion_config": str(config_path),
        "max_trials": spec["max_trials"],
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

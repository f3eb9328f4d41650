"""Faults (README "Scaling out" / "Faults"): a hunt killed hard and rerun, locks left by dead
processes, trials that crash, hang or return NaN, and bad inputs caught before any work.

Real `orion hunt`, real SIGKILL, real flock and PickledDB soft locks (on tmpfs, where Orion does
not trust flock); the quadratic fixture recipe stands in for the speaker-id recipe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprohunt.orion_storage import DB_FILE
from reprohunt.recovery import (
    MEMBERSHIP_LOCK,
    STALE_DB_LOCK_AGE_S,
    clear_stale_db_lock,
    hunt_membership,
)

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from hunt_harness import (  # noqa: E402
    HUNT_TIMEOUT_S,
    RECIPE,
    Hunt,
    clean_env,
    make_hunt,
    result_files,
    write_workflow_config,
)
from workflow_run import TINY, snakemake, snakemake_command  # noqa: E402

SOFT_LOCK_FOLDER = Path("/dev/shm")


def wait_until(condition, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + HUNT_TIMEOUT_S
    while not condition():
        assert process is None or process.poll() is None, f"ended before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def soft_lock_dir() -> Iterator[Path]:
    """A folder on a filesystem where PickledDB uses its soft lock file (as on NFS/overlayfs)."""
    from filelock import SoftFileLock
    from orion.core.io.database.pickleddb import _create_lock

    if not SOFT_LOCK_FOLDER.is_dir():
        pytest.skip(f"{SOFT_LOCK_FOLDER} (tmpfs) is missing")
    folder = Path(tempfile.mkdtemp(dir=SOFT_LOCK_FOLDER, prefix="reprohunt-faults-"))
    try:
        if not isinstance(_create_lock(str(folder / "probe.lock")), SoftFileLock):
            pytest.skip(f"PickledDB trusts flock on {SOFT_LOCK_FOLDER}")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def hold_algorithm_lock_then_die(hunt: Hunt) -> None:
    """What a worker killed while suggesting leaves: the DB's algorithm lock set, owner gone."""
    script = (
        "import json, sys, time\n"
        "from orion.core.io.experiment_builder import ExperimentBuilder\n"
        "builder = ExperimentBuilder(json.loads(sys.argv[1]))\n"
        "experiment = builder.load(name=sys.argv[2], mode='w')\n"
        "with builder.storage.acquire_algorithm_lock(uid=experiment.id):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(3600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(hunt.storage()), hunt.name()],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()


def algorithm_locked(hunt: Hunt) -> bool:
    from orion.core.io.experiment_builder import ExperimentBuilder

    builder = ExperimentBuilder(hunt.storage())
    experiment = builder.load(name=hunt.name(), mode="r")
    return bool(builder.storage.get_algorithm_lock_info(uid=experiment.id).locked)


@pytest.mark.slow
def test_killed_hunt_rerun_recovers_and_matches_an_uninterrupted_one(
    tmp_path: Path, soft_lock_dir: Path
) -> None:
    options = {"hold_seconds": 1}
    straight = make_hunt(tmp_path / "straight", options, max_trials=4)
    run = straight.run()
    assert run.returncode == 0, run.stderr[-3000:]

    # Same hunt, killed with SIGKILL (every process of it: a node crash) during its third trial.
    killed = make_hunt(soft_lock_dir, options, max_trials=4)
    process = subprocess.Popen(
        killed.command(),
        cwd=killed.root,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    running = killed.shared / "running"
    wait_until(
        lambda: len(killed.records()) >= 2 and running.is_dir() and any(running.iterdir()),
        "a trial running after two completed ones",
        process,
    )
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {t.id: t for t in killed.trials()}
    stuck = [t.id for t in before.values() if t.status == "reserved"]
    assert len(stuck) == 1, {t.id: t.status for t in before.values()}
    done_before = {i: t.objective.value for i, t in before.items() if t.status == "completed"}
    assert len(done_before) >= 2

    # A crashed node may also leave the PickledDB soft lock and the algorithm lock behind.
    hold_algorithm_lock_then_die(killed)
    assert algorithm_locked(killed)
    db_lock = killed.hunt_dir / f"{DB_FILE}.lock"
    db_lock.write_text("4242\nnode-that-crashed\n")
    old = time.time() - 2 * STALE_DB_LOCK_AGE_S
    os.utime(db_lock, (old, old))

    rerun = killed.run()
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "recovery: 1 trial(s) reserved by a dead worker returned to the pool" in rerun.stdout
    assert "recovery: removed stale PickledDB lock" in rerun.stdout
    assert "recovery: released the algorithm lock left by a dead worker" in rerun.stdout

    after = {t.id: t for t in killed.trials()}
    completed = {i: t.objective.value for i, t in after.items() if t.status == "completed"}
    straight_completed = [t for t in straight.trials() if t.status == "completed"]
    assert len(completed) == len(straight_completed) == 4
    assert stuck[0] in completed, "the trial the kill interrupted was not run again"
    assert all(completed.get(i) == value for i, value in done_before.items()), "a result was lost"
    assert not [t for t in after.values() if t.status == "reserved"]
    written = {path.parent.name for path in result_files(killed.hunt_dir)}
    assert written <= set(completed)

    # The trial the kill interrupted ran again to the same result, and the algorithm's registry
    # was brought up to date: the killed hunt replays the straight one, trial for trial.
    def sequence(hunt: Any) -> list[tuple[str, float]]:
        ordered = sorted(hunt.trials(), key=lambda t: t.submit_time)
        return [(json.dumps(t.params, sort_keys=True), t.objective.value) for t in ordered]

    assert sequence(killed) == sequence(straight)
    for hunt in (straight, killed):
        replay = json.loads((hunt.hunt_dir / "hunt.json").read_text())["replay"]
        assert replay == {"expected": True, "intact": True, "departures": []}, replay


def test_a_live_hunter_keeps_recovery_away(soft_lock_dir: Path) -> None:
    """Recovery runs only when no hunt process of the folder is alive, proven by flock."""
    db_lock = soft_lock_dir / f"{DB_FILE}.lock"
    db_lock.write_text("4242\nother-node\n")
    old = time.time() - 2 * STALE_DB_LOCK_AGE_S
    os.utime(db_lock, (old, old))
    hunter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "handle = open(sys.argv[1], 'a')\n"
            "fcntl.flock(handle, fcntl.LOCK_SH)\n"
            "print('joined', flush=True)\n"
            "time.sleep(3600)\n",
            str(soft_lock_dir / MEMBERSHIP_LOCK),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert hunter.stdout.readline().strip() == "joined"
    recovered: list[str] = []
    with hunt_membership(
        soft_lock_dir, lambda: recovered.extend(clear_stale_db_lock(soft_lock_dir))
    ):
        pass
    assert recovered == [] and db_lock.exists()

    hunter.kill()
    hunter.wait()
    with hunt_membership(
        soft_lock_dir, lambda: recovered.extend(clear_stale_db_lock(soft_lock_dir))
    ):
        pass
    assert not db_lock.exists()
    assert "pid 4242 on other-node" in recovered[0]


def test_stale_db_lock_needs_a_dead_owner(soft_lock_dir: Path) -> None:
    import socket

    db_lock = soft_lock_dir / f"{DB_FILE}.lock"
    db_lock.write_text(f"{os.getpid()}\n{socket.gethostname()}\n")
    assert "is alive" in clear_stale_db_lock(soft_lock_dir)[0] and db_lock.exists()
    db_lock.write_text("4242\nother-node\n")
    assert "may be alive" in clear_stale_db_lock(soft_lock_dir)[0] and db_lock.exists()
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    db_lock.write_text(f"{dead.pid}\n{socket.gethostname()}\n")
    assert "is dead" in clear_stale_db_lock(soft_lock_dir)[0] and not db_lock.exists()


def test_the_empty_flock_file_of_a_local_disk_is_no_stale_lock(tmp_path: Path) -> None:
    from filelock import SoftFileLock
    from orion.core.io.database.pickleddb import _create_lock

    db_lock = tmp_path / f"{DB_FILE}.lock"
    if isinstance(_create_lock(str(db_lock)), SoftFileLock):
        pytest.skip(f"{tmp_path} is on a filesystem where Orion uses soft locks")
    db_lock.touch()  # what every Orion command leaves behind where it locks with flock
    assert clear_stale_db_lock(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "in_log"),
    [
        ("crash", "the quadratic fixture crashes on purpose"),
        ("nan", "is nan (not finite)"),
    ],
)
def test_faulty_trials_break_the_hunt_with_their_log(tmp_path: Path, fault: str, in_log: str):
    hunt = make_hunt(tmp_path, {"fault": fault}, max_trials=4, max_broken=2)
    run = hunt.run()
    assert run.returncode == 1
    assert "2 trial(s) broke (max_broken is 2); 0 completed" in run.stderr
    match = re.search(r"First failing trial's log: (\S+)", run.stderr)
    assert match, run.stderr[-3000:]
    assert in_log in Path(match.group(1)).read_text()
    broken = [t for t in hunt.trials() if t.status == "broken"]
    assert len(broken) == 2
    assert all(in_log in (Path(t.working_dir) / "trial.log").read_text() for t in broken)
    assert not (hunt.hunt_dir / "hunt.json").exists()


@pytest.mark.slow
def test_hanging_trials_time_out_and_fail_the_parallel_hunt_rule(tmp_path: Path) -> None:
    # Through Snakemake: hunt.trial_timeout from config.yaml reaches every trial, and a hunt
    # worker that reaches max_broken fails its rule with the reason.
    recipe = tmp_path / "hanging_recipe"
    shutil.copytree(RECIPE, recipe)
    train_yaml = recipe / "train.yaml"
    train_yaml.write_text(train_yaml.read_text().replace("fault: none", "fault: hang"))
    hunt = {"parallel_hunts": 2, "trial_timeout": 2, "max_broken": 2}
    write_workflow_config(tmp_path, {"recipe": {"dir": str(recipe)}, "hunt": hunt})
    run = snakemake(tmp_path, "results/speaker_id/hunt/hunt.json", timeout=900)
    assert run.returncode != 0
    results = tmp_path / "results" / "speaker_id"
    logs = " ".join(p.read_text() for p in (results / "logs").glob("hunt_worker_*.log"))
    assert "trial(s) broke (max_broken is 2)" in logs, logs[-3000:]
    assert "killed after the 2 s trial timeout" in logs
    assert "hangs on purpose" in logs  # the tail of the failing trial's log
    assert "trial(s) broke (max_broken is 2)" in run.stdout + run.stderr  # shown by Snakemake
    assert not (results / "hunt" / "hunt.json").exists()
    trial_logs = list((results / "hunt").glob("*/trials/*/trial.log"))
    assert len(trial_logs) >= 2
    assert all("killed after the 2 s trial timeout" in p.read_text() for p in trial_logs)


def assert_refused_before_work(hunt: Hunt, message: str) -> None:
    run = hunt.run()
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert message in run.stderr, run.stderr[-2000:]
    assert not (hunt.hunt_dir / DB_FILE).exists()
    assert not (hunt.hunt_dir / "orion.yaml").exists()


def test_missing_data_is_refused_before_work(tmp_path: Path) -> None:
    hunt = make_hunt(tmp_path)
    hunt.data.unlink()
    assert_refused_before_work(hunt, f"missing data: {hunt.data} does not exist")


def test_unwritable_trials_folder_is_refused_before_work(tmp_path: Path) -> None:
    hunt = make_hunt(tmp_path)
    trials = hunt.hunt_dir / hunt.name() / "trials"
    trials.parent.mkdir()
    trials.write_text("a file where the trial folders go\n")
    assert_refused_before_work(hunt, f"results folder {trials} is not writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through folder permissions")
def test_read_only_results_folder_is_refused_before_work(tmp_path: Path) -> None:
    hunt = make_hunt(tmp_path)
    hunt.hunt_dir.chmod(0o555)
    try:
        assert_refused_before_work(hunt, f"results folder {hunt.hunt_dir} is not writable")
    finally:
        hunt.hunt_dir.chmod(0o755)


def test_full_disk_is_refused_before_work(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    hunt = make_hunt(tmp_path, min_free_mb=free_mb + 10**6)
    assert_refused_before_work(hunt, "MB free on the filesystem of")


def test_bad_algorithm_options_are_refused_before_work(tmp_path: Path) -> None:
    hunt = make_hunt(tmp_path, algorithm={"tpe": {"seed": 1, "n_inital_points": 5}})
    assert_refused_before_work(hunt, "hunt.algorithm in the config: Orion cannot build 'tpe'")


def test_corrupt_prepared_json_is_refused_before_work(tmp_path: Path) -> None:
    hunt = make_hunt(tmp_path)
    hunt.data.write_text('{"format_version": 1, "cou')
    assert_refused_before_work(hunt, f"{hunt.data} is not valid JSON")


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="a GPU host: cuda would be right here"
)
def test_cuda_without_a_gpu_is_refused_before_work(tmp_path: Path) -> None:
    hunt = make_hunt(tmp_path)
    spec = hunt.spec_dict()
    spec["recipe"]["device"] = "cuda"
    hunt.spec.write_text(json.dumps(spec))
    assert_refused_before_work(hunt, "recipe.device is 'cuda' in the config, but torch")


def real_data_hunt(root: Path, prepared: Path) -> Hunt:
    """A hunt whose data folder is a copy of a real prepared folder (tests tamper with it)."""
    hunt = make_hunt(root)
    shutil.rmtree(hunt.data.parent)
    shutil.copytree(prepared, hunt.data.parent)
    return hunt


@pytest.mark.parametrize(
    ("damage", "expected"),
    [("truncate", "changed: "), ("delete", "missing: "), ("replace", "changed: ")],
)
def test_damaged_data_is_refused_before_work_naming_the_file(
    tmp_path: Path, prepared_tiny: Path, damage: str, expected: str
) -> None:
    hunt = real_data_hunt(tmp_path, prepared_tiny)
    target = hunt.data.parent / "features" / "train.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "delete":
        target.unlink()
    else:
        manifest = hunt.data.parent / "manifests" / "valid.json"
        manifest.write_text(manifest.read_text().replace("flac", "wav", 1))
        target = manifest
    assert_refused_before_work(hunt, f"{expected}{target}")


def finished_hunt(root: Path) -> Hunt:
    hunt = make_hunt(root, max_trials=3)
    run = hunt.run()
    assert run.returncode == 0, run.stderr[-3000:]
    return hunt


@pytest.mark.parametrize(
    ("cut", "message"), [(0, "is empty, but 3 completed"), (0.5, "is damaged")]
)
def test_damaged_database_is_refused_and_the_snapshot_resumes(
    tmp_path: Path, cut: float, message: str
) -> None:
    hunt = finished_hunt(tmp_path)
    database = hunt.hunt_dir / DB_FILE
    backup = database.with_name(DB_FILE + ".bak")
    assert backup.read_bytes() == database.read_bytes()  # snapshot after the hunt
    database.write_bytes(database.read_bytes()[: int(database.stat().st_size * cut)])
    damaged = database.read_bytes()

    refused = hunt.run()
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert f"{database} {message}" in refused.stderr
    assert f"cp {backup} {database}" in refused.stderr
    assert database.read_bytes() == damaged  # nothing written, no trial started over
    assert len(result_files(hunt.hunt_dir)) == 3

    shutil.copyfile(backup, database)  # the fix the message gives
    hunt.spec.write_text(json.dumps(hunt.spec_dict() | {"max_trials": 4}))
    resumed = hunt.run()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((hunt.hunt_dir / "hunt.json").read_text())["completed"] == 4
    assert len(result_files(hunt.hunt_dir)) == 4  # the 3 earlier trials were kept, not rerun


def test_a_trial_killed_between_its_result_and_its_record_runs_again(tmp_path: Path) -> None:
    """A SIGKILL after a trial filled in its result file and before Orion recorded it leaves
    the trial `reserved` with its result on disk (CI hit this once): the rerun must not take
    that for a stale database, but return the trial to the pool and finish the hunt."""
    from orion.core.io.database.pickleddb import PickledDB

    hunt = finished_hunt(tmp_path)
    last = max(hunt.trials(), key=lambda trial: trial.end_time)
    database = PickledDB(host=str(hunt.hunt_dir / DB_FILE))
    database.write("trials", {"status": "reserved", "end_time": None}, query={"id": last.id})

    resumed = hunt.run()
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "1 trial(s) reserved by a dead worker returned to the pool" in resumed.stdout
    statuses = {trial.id: trial.status for trial in hunt.trials()}
    assert statuses[last.id] == "completed" and list(statuses.values()).count("completed") == 3


def test_a_database_older_than_the_trial_folders_is_refused(tmp_path: Path) -> None:
    """An older database (here: the one of 3 trials, after the hunt went on to 4) does not know
    the newest trial at all: resuming from it would run that trial's point again."""
    hunt = finished_hunt(tmp_path)
    database = hunt.hunt_dir / DB_FILE
    older = database.read_bytes()
    hunt.spec.write_text(json.dumps(hunt.spec_dict() | {"max_trials": 4}))
    assert hunt.run().returncode == 0
    database.write_bytes(older)

    refused = hunt.run()
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert f"{database} lacks 1 trial(s) whose folders hold a result" in refused.stderr
    assert database.read_bytes() == older


def mount_tmpfs(folder: Path, size: str) -> None:
    """Mount a tmpfs of `size` (mount's syntax: 2m, 1500k) on `folder`, or skip: needs root."""
    folder.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")


def resize_tmpfs(folder: Path, size: str) -> None:
    """Give the tmpfs on `folder` another size, its files kept (what freeing space does)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a results disk that fills up, with more than FULL_BELOW_BYTES free when
    the step has cleaned up (so a check made after the step could not tell)."""
    mount = tmp_path / "small"
    mount_tmpfs(mount, "2m")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# The disk fills after the step's first line was logged, or before it: then every write to the
# log fails too, and what the step printed reaches Snakemake's output from the tail alone.
FILLERS = {
    "after_the_first_line": (
        "import sys\n"
        "print('step started', flush=True)\n"
        "with open(sys.argv[1], 'wb') as out:\n"
        "    out.write(b'x' * 4 * 2**20)\n"
    ),
    "before_the_first_line": (
        "import sys\n"
        "try:\n"
        "    with open(sys.argv[1], 'wb') as out:\n"
        "        out.write(b'x' * 4 * 2**20)\n"
        "except OSError as error:\n"
        "    print('step started', error, flush=True)\n"
        "    sys.exit(1)\n"
    ),
    # The step frees the space before it prints anything: only its output tells of the ENOSPC.
    "freed_before_the_first_line": (
        "import os, sys\n"
        "try:\n"
        "    with open(sys.argv[1], 'wb') as out:\n"
        "        out.write(b'x' * 4 * 2**20)\n"
        "except OSError as error:\n"
        "    os.remove(sys.argv[1])\n"
        "    sys.exit(f'step started {error}')\n"
    ),
}


@pytest.mark.parametrize("filler", FILLERS.values(), ids=FILLERS.keys())
def test_a_full_disk_is_named_and_the_log_tail_reaches_snakemakes_output(
    small_disk: Path, filler: str
) -> None:
    command = [sys.executable, "-m", "reprohunt.logged", str(small_disk / "logs/step.log"), "--"]
    command += [sys.executable, "-c", filler, str(small_disk / "output.bin")]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith(f"error: disk full at {small_disk}/logs: "), run.stderr
    assert "step started" in run.stderr and "No space left on device" in run.stderr


def fill(path: Path) -> None:
    """Write more than the small disk holds, as a library that keeps ENOSPC does."""
    path.write_bytes(b"x" * 4 * 2**20)


def fill_hiding_enospc(path: Path) -> None:
    """Fill the disk as libsndfile or torch.save do: the ENOSPC is lost in their own error."""
    try:
        fill(path)
    except OSError:
        raise RuntimeError("System error.") from None


@pytest.mark.parametrize("write", [fill, fill_hiding_enospc])
def test_a_write_that_fills_the_disk_is_named_and_leaves_no_partial_file(
    small_disk: Path, write
) -> None:
    from hpopt.files import DiskFullError, atomic_path

    target = small_disk / "epoch-001.ckpt"
    with pytest.raises(DiskFullError) as raised, atomic_path(target) as temp:
        write(temp)
    assert str(raised.value).startswith(f"[Errno 28] disk full at {target}: 0.0 MB free of 2.0 MB")
    assert "fix: free space" in str(raised.value)
    assert list(small_disk.iterdir()) == []


def disk_full_shown(run: subprocess.CompletedProcess, where: Path) -> str:
    """The first error line of a failed Snakemake run, checked to name a full disk under
    `where`, with the free space and the fix, before Snakemake's own account of the failure."""
    shown = run.stdout + run.stderr
    assert run.returncode != 0, shown[-3000:]
    first = next((line for line in shown.splitlines() if line.startswith("error:")), "")
    assert first.startswith(f"error: disk full at {where}/"), shown[-3000:]
    assert " MB free of " in first and "fix: free space" in first, first
    assert shown.index(first) < shown.index("Error in rule"), shown[-3000:]
    return first


def partial_files(results: Path) -> list[Path]:
    """What a failed write or preparation would leave: temp files and folders."""
    return [path for path in results.rglob("*") if ".tmp" in path.name]


# The results disk grown step by step, as a user frees space: what fails at each size.
GROWING_DISK = [
    ("1m", "/corpus/"),  # an audio file (libsndfile: "System error.")
    ("1300k", "/features/train.npy"),  # the features' memory-mapped array (was a SIGBUS)
    ("4m", "/save/epoch-001.ckpt"),  # the retrain's first checkpoint (torch: "unexpected pos")
]


def test_a_full_results_disk_is_named_where_it_happens_and_the_rerun_completes(
    tmp_path: Path,
) -> None:
    """Real data preparation and retrain on a small tmpfs: each failure names the full disk in
    Snakemake's first error line, leaves no partial file, and the run completes once there is
    room."""
    from workflow_run import write_config

    results = tmp_path / "results"
    mount_tmpfs(results, GROWING_DISK[0][0])
    try:
        write_config(tmp_path, TINY)
        target = "results/speaker_id/final/untuned/seed1987/metrics.json"
        for size, failed in GROWING_DISK:
            resize_tmpfs(results, size)
            first = disk_full_shown(snakemake(tmp_path, target), results / "speaker_id")
            assert failed in first, first
            assert partial_files(results) == []
            assert not list(results.rglob("*.ckpt"))
        resize_tmpfs(results, "16m")
        rerun = snakemake(tmp_path, target)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    finally:
        subprocess.run(["umount", str(results)], check=True)


def test_a_trial_that_fills_the_disk_fails_the_hunt_naming_it_and_the_rerun_completes(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    mount_tmpfs(results, "4m")
    try:
        hunt = {"max_broken": 1, "min_free_mb": 1}
        write_workflow_config(tmp_path, {"recipe": {"args": {"write_mb": 8}}, "hunt": hunt})
        target = "results/speaker_id/hunt/hunt.json"
        first = disk_full_shown(snakemake(tmp_path, target), results / "speaker_id" / "hunt")
        assert first.split(":")[1].endswith("/checkpoint.bin"), first
        assert partial_files(results) == []
        resize_tmpfs(results, "64m")
        rerun = snakemake(tmp_path, target)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        summary = json.loads((results / "speaker_id" / "hunt" / "hunt.json").read_text())
        assert summary["completed"] == 4  # the broken trial retried, as after any broken trial
    finally:
        subprocess.run(["umount", str(results)], check=True)


def test_a_hunt_that_a_second_process_joins_says_it_does_not_replay(tmp_path: Path) -> None:
    """Two hunt processes in one experiment whose spec gives one (e.g. a run started past the
    run lock by hand): both finish, and hunt.json's replay names the extra process."""
    # The second joins after the first's first trial: the first's four trials left, 2 s each,
    # outlast the second's start-up (imports under coverage, on a loaded machine), which with
    # three 1 s trials left it once did not, so the second found itself alone.
    hunt = make_hunt(tmp_path, {"hold_seconds": 2}, max_trials=5)
    first = subprocess.Popen(
        hunt.command(), cwd=hunt.root, env=clean_env(), stdout=subprocess.DEVNULL, text=True
    )
    wait_until(lambda: len(hunt.records()) >= 1, "a first completed trial", first)
    second = hunt.run()
    assert first.wait(timeout=HUNT_TIMEOUT_S) == 0
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "warning: another hunt process" in second.stdout
    replay = json.loads((hunt.hunt_dir / "hunt.json").read_text())["replay"]
    assert replay["expected"] is True and replay["intact"] is False
    assert any("although hunt.parallel_hunts is 1" in line for line in replay["departures"])


def test_a_second_run_in_the_results_folder_is_refused_unlock_or_not(tmp_path: Path) -> None:
    """Two real Snakemake runs of one experiment: the second is refused before any job, naming
    the first's PID and host, also after `--unlock`; the first completes unharmed."""
    import socket

    write_workflow_config(tmp_path, {"recipe": {"args": {"hold_seconds": 1}}})
    target = "results/speaker_id/hunt/hunt.json"
    first = subprocess.Popen(
        snakemake_command(tmp_path, target),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        results = tmp_path / "results" / "speaker_id"
        wait_until(lambda: (results / "logs" / "hunt.log").exists(), "the hunt running", first)
        for args in ([target], ["--unlock"], [target]):
            second = snakemake(tmp_path, *args, timeout=HUNT_TIMEOUT_S)
            shown = second.stdout + second.stderr
            assert second.returncode != 0, shown[-3000:]
            assert f"PID {first.pid} on host {socket.gethostname()}" in shown, shown[-3000:]
            assert "rule " not in shown  # no job of the second run started
        assert first.wait(timeout=HUNT_TIMEOUT_S) == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    summary = json.loads((results / "hunt" / "hunt.json").read_text())
    assert summary["completed"] == 4 and summary["replay"]["intact"] is True
    # The lock is the live run's only: once it ended, the next run goes ahead.
    assert snakemake(tmp_path, target).returncode == 0


def processes_of_run(run_pid: int) -> list[int]:
    """Live processes that a run started: each inherits the run's PID in its environment."""
    from reprohunt.runlock import RUN_PID_VARIABLE

    marker = f"{RUN_PID_VARIABLE}={run_pid}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            alive = (environ.parent / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            if alive and marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue  # ended meanwhile
    return found


def command_line(pid: int) -> str:
    """What a process runs, its state and its parent, for a failure message: a survivor whose
    parent is 1 escaped the wrapper's subreaper; one in state D is still dying."""
    proc = Path(f"/proc/{pid}")
    try:
        state, parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except (OSError, ValueError):
        return "(ended)"
    return f"state {state}, parent {parent}: {command}"


# A real Ctrl-C (SIGINT to the run's process group), and a SIGKILL of Snakemake alone, of a
# hunt with two Orion workers (which a Ctrl-C left blocked) beside the warm launcher's server (a
# session of its own, out of reach of a Ctrl-C); and a Ctrl-C of the default one-worker hunt,
# which must replay: its rerun gives an uninterrupted run's trials and best, bit for bit.
INTERRUPTS = {
    "ctrl_c": (True, signal.SIGINT, 2),
    "kill_9_of_snakemake": (False, signal.SIGKILL, 2),
    "ctrl_c_of_a_replayable_hunt": (True, signal.SIGINT, 1),
}
# The hunt log's line for a trial that starts (not the notes' "first trial"), naming its id.
TRIAL_START = re.compile(r"^trial (\w+): /", re.M)


def interrupt_and_check_nothing_is_left(run: subprocess.Popen, group: bool, signum: int) -> None:
    """Send `signum` to the run (its process group when `group`): within 10 s no process the run
    started may be left."""
    assert processes_of_run(run.pid), "the marker of the run's processes is missing"
    (os.killpg if group else os.kill)(run.pid, signum)
    run.wait(timeout=HUNT_TIMEOUT_S)
    deadline = time.monotonic() + 10
    while processes_of_run(run.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: command_line(pid) for pid in processes_of_run(run.pid)}
    for pid in left:  # not to leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the run alive 10 s after {signum!r}: {left}"


def hunt_outcome(workdir: Path) -> tuple[list[tuple[str, str, object]], dict]:
    """What a replay must give again: each trial's id, params and objective in the order they
    were suggested (times differ between runs), and best.json, its trial folder taken relative
    to the run's folder."""
    hunt_dir = workdir / "results" / "speaker_id" / "hunt"
    trials = json.loads((hunt_dir / "trials.json").read_text())
    trials.sort(key=lambda trial: trial["submit_time"])
    outcome = [(t["id"], json.dumps(t["params"], sort_keys=True), t["objective"]) for t in trials]
    best = json.loads((hunt_dir / "best.json").read_text())
    best["working_dir"] = str(Path(best["working_dir"]).relative_to(workdir))
    return outcome, best


@pytest.mark.parametrize(("group", "signum", "workers"), INTERRUPTS.values(), ids=INTERRUPTS)
def test_an_interrupted_run_leaves_no_process_and_the_rerun_completes(
    tmp_path: Path, group: bool, signum: int, workers: int
) -> None:
    hunt = {"warm_launcher": True, "n_workers": workers}
    overrides = {"recipe": {"args": {"hold_seconds": 1}}, "hunt": hunt}
    workdir = tmp_path / "interrupted"
    write_workflow_config(workdir, overrides)
    target = "results/speaker_id/hunt/hunt.json"
    run = subprocess.Popen(
        snakemake_command(workdir, target),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    hunt_log = workdir / "results" / "speaker_id" / "logs" / "hunt.log"
    wait_until(
        lambda: hunt_log.exists() and TRIAL_START.search(hunt_log.read_text()), "a trial", run
    )
    interrupt_and_check_nothing_is_left(run, group, signum)
    # Read once the run is over: the trials that ended, and those begun and stopped by the
    # interrupt (whether Orion released them on SIGTERM or the rerun's recovery does).
    log = hunt_log.read_text()
    begun = set(TRIAL_START.findall(log))
    ended = set(re.findall(r"^trial (\w+): exit 0$", log, re.M))
    trials_file = workdir / "results" / "speaker_id" / "hunt" / "trials.json"

    if workers == 1:  # the replay below needs a trial that the interrupt stopped
        assert begun - ended, "the interrupt came too late: it stopped no trial"
    if signum == signal.SIGKILL:  # Snakemake cannot tell its own stale lock from a live one
        assert snakemake(workdir, "--unlock").returncode == 0
    # On to best.json, which lists the trials.
    rerun = snakemake(workdir, "results/speaker_id/hunt/best.json", timeout=HUNT_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    summary = json.loads((workdir / "results" / "speaker_id" / "hunt" / "hunt.json").read_text())
    assert 4 <= summary["completed"] <= 4 + workers - 1  # max_trials + trial slots - 1 at most
    trials = json.loads(trials_file.read_text())
    assert len({t["id"] for t in trials}) == len(trials)
    completed = {t["id"]: t for t in trials if t["status"] == "completed"}
    # Nothing completed before the interrupt ran again, and nothing it stopped was lost.
    assert begun - ended <= set(completed), "a trial the interrupt stopped never completed"
    rerun_log = hunt_log.read_text()
    assert not ended & set(TRIAL_START.findall(rerun_log)), "a trial ran twice"
    if workers == 1:
        assert summary["replay"] == {"expected": True, "intact": True, "departures": []}
        straight = tmp_path / "uninterrupted"
        write_workflow_config(straight, overrides)
        run = snakemake(straight, "results/speaker_id/hunt/best.json", timeout=HUNT_TIMEOUT_S)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert hunt_outcome(workdir) == hunt_outcome(straight)


@pytest.mark.slow
def test_ctrl_c_in_the_final_stage_stops_every_retrain_and_the_rerun_is_bit_identical(
    tiny_run: Path, tmp_path: Path
) -> None:
    """The shared tiny run's final stage done again and stopped by a Ctrl-C while its retrains
    train: nothing is left after 10 s, and the rerun (resuming the retrains from their
    checkpoints) gives the uninterrupted run's results byte for byte."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    final = workdir / "results" / "speaker_id" / "final"
    records = ["metrics.json", "comparison.json", "tuned/*/metrics.json", "untuned/*/metrics.json"]

    def results() -> dict[str, bytes]:
        found = {str(p.relative_to(final)): p.read_bytes() for r in records for p in final.glob(r)}
        assert len(found) == 2 + 2 * len(TINY["final"]["seeds"])
        return found

    uninterrupted = results()
    # Snakemake reruns a missing file's job only for a missing or outdated target downstream.
    shutil.rmtree(final)
    for downstream in ("provenance.json", "report.html"):
        (final.parent / downstream).unlink()
    run = subprocess.Popen(
        snakemake_command(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until(lambda: any(final.glob("runs/*/save/*")), "a retrain's first checkpoint", run)
    interrupt_and_check_nothing_is_left(run, True, signal.SIGINT)
    assert not (final / "comparison.json").exists(), "the interrupt came too late"

    rerun = snakemake(workdir, timeout=HUNT_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    resumed = [
        log for log in final.glob("runs/*/train_log.txt") if "resumed from" in log.read_text()
    ]
    assert resumed, "no retrain resumed from the checkpoint the interrupt left"
    assert results() == uninterrupted

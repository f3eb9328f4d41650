"""Multi-process trials: the speaker-id recipe under torchrun (DDP), alone and under `orion hunt`.

Everything runs on the CPU with gloo, the backend this machine has; on GPUs only the backend
(nccl) and the device change, which containers/gpu-smoke.sh checks on a 2-GPU host. Real
processes throughout: torchrun, `orion hunt` through the workflow's hunt step, the GPU lease's
file locks (with fake device ids), and an audit hook (Python's `sys.addaudithook`, installed
through a `sitecustomize` on PYTHONPATH) that records which process writes which file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PREPARE_SCRIPT

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from hunt_harness import REPO, TRAIN_ENV, Hunt, base_spec, clean_env  # noqa: E402
from speaker_data import loader  # noqa: E402
from workflow_run import snakemake, write_config  # noqa: E402

from reprohunt.hunt import hunt_environment  # noqa: E402
from reprohunt.orion_storage import storage_config  # noqa: E402
from reprohunt.recipe import describe  # noqa: E402
from reprohunt.records import HuntSpec  # noqa: E402

RECIPE = REPO / "recipes" / "speaker_id"
TORCHRUN = TRAIN_ENV / "bin" / "torchrun"
PYTHON = TRAIN_ENV / "bin" / "python"
# 8 clearly separated synthetic speakers x 40 utterances of ~1 s: 256/32/32 utterances. The
# fixture prepared_tiny has 4 validation utterances, which fit in one evaluation batch even at
# the smallest DDP batch (4), so rank 1 would evaluate nothing and the cross-rank reduction
# would go untested; 32 give 4 batches of 8.
CORPUS_ARGS = [
    "--source",
    "synthetic",
    "--seed",
    "7",
    "--n-speakers",
    "8",
    "--utts-per-speaker",
    "40",
    "--min-seconds",
    "0.8",
    "--max-seconds",
    "1.2",
    "--snr-db",
    "20",
    "30",
]
# Against hangs only; no test asserts on time.
PROCESS_TIMEOUT_S = 600


def test_every_process_takes_its_slice_of_every_global_batch() -> None:
    frames = [40 + position % 9 for position in range(23)]
    plan = loader.train_batches(frames, 8, 30, np.random.default_rng(5))
    assert plan == loader.train_batches(frames, 8, 30, np.random.default_rng(5))
    shards = [loader.shard_batches(plan, rank, 3) for rank in range(3)]
    for index, batch in enumerate(plan):
        slices = [shards[rank][index][0] for rank in range(3)]
        assert sorted(item for part in slices for item in part) == sorted(batch)
        assert max(map(len, slices)) - min(map(len, slices)) <= 1
        assert {shards[rank][index][1] for rank in range(3)} == {len(batch)}
    with pytest.raises(ValueError, match="rank 3 is not in 0..2"):
        loader.shard_batches(plan, 3, 3)


def test_a_last_batch_too_small_to_split_joins_the_one_before() -> None:
    frames = [50] * 21
    kept = loader.train_batches(frames, 8, 30, np.random.default_rng(1))
    assert [len(batch) for batch in kept] == [8, 8, 5]
    merged = loader.train_batches(frames, 8, 30, np.random.default_rng(1), min_last=6)
    assert [len(batch) for batch in merged] == [8, 13]
    assert sum(merged, []) == sum(kept, [])


def test_the_hunt_launches_ddp_trials_under_one_lease_per_trial(tmp_path: Path) -> None:
    storage = storage_config({"type": "pickleddb"}, tmp_path)
    unread = {"experiment": "ddp", "max_trials": 1, "max_broken": 1, "space": {}, "recipe": {}}
    spec = HuntSpec(**base_spec(tmp_path) | unread | {"data_folder": str(tmp_path)})
    ddp = dataclasses.replace(spec, gpus_per_trial=2)
    bin_dir = TRAIN_ENV.resolve() / "bin"
    os.environ["HPOPT_TRIAL_LAUNCHER_ARGS"] = "stale"  # what a caller's environment may hold
    try:
        single = hunt_environment(spec, storage, tmp_path, [])
        cpu = hunt_environment(ddp, storage, tmp_path, [])
        gpus = hunt_environment(ddp, storage, tmp_path, ["0", "1", "2"])
    finally:
        del os.environ["HPOPT_TRIAL_LAUNCHER_ARGS"]
    assert single["HPOPT_TRIAL_LAUNCHER"] == str(bin_dir / "python")
    assert "HPOPT_TRIAL_LAUNCHER_ARGS" not in single
    torchrun = f"{bin_dir / 'torchrun'} --standalone --nproc_per_node=2"
    assert cpu["HPOPT_TRIAL_LAUNCHER"] == torchrun.split()[0]
    assert cpu["HPOPT_TRIAL_LAUNCHER_ARGS"] == "--standalone --nproc_per_node=2"
    assert gpus["HPOPT_TRIAL_LAUNCHER"] == str(bin_dir / "python")
    assert gpus["HPOPT_TRIAL_LAUNCHER_ARGS"] == f"-m hpopt.gpu_lease -- {torchrun}"
    assert (gpus["HPOPT_GPUS"], gpus["HPOPT_GPUS_PER_TRIAL"]) == ("0,1,2", "2")


def test_a_batch_too_small_to_split_is_refused_before_training(
    prepared_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.syspath_prepend(str(RECIPE))
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; refused before joining a group
    import train

    out = tmp_path / "out"
    args = flags({"data_folder": prepared_tiny, "output_folder": out, "batch_size": 3})
    assert train.main([str(RECIPE / "train.yaml"), *args, "--device", "cpu"]) == 2
    assert "batch_size must be at least 4 with 2 process(es)" in capsys.readouterr().err
    assert not out.exists()


# One rank of a probe trial: records what it sees, which lease locks are held, and whether its
# own (in-process) lease step accepts the parent's lease.
LEASE_PROBE = """
import fcntl, json, os, sys
from pathlib import Path

from hpopt.gpu_lease import LeaseConfig, lease_from_environment

config = LeaseConfig.from_environment()
held = []
for device in config.devices:
    with open(config.lock_path(device), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(device)
seen = {name: os.environ.get(name) for name in ("RANK", "CUDA_VISIBLE_DEVICES")}
seen |= {"held": held, "own_lease": list(lease_from_environment())}
Path(sys.argv[1], f"rank-{os.environ['RANK']}.json").write_text(json.dumps(seen))
"""


def hpopt_trial(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`hpopt-trial ARGS` as `orion hunt` runs it, in `tmp_path` as the trial's folder."""
    return subprocess.run(
        [str(TRAIN_ENV / "bin" / "hpopt-trial"), *args],
        env=clean_env() | {"ORION_WORKING_DIR": str(tmp_path), "ORION_TRIAL_ID": "t1"} | env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )


def test_the_trial_leases_all_its_gpus_before_torchrun_starts_the_ranks(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(LEASE_PROBE)
    env = {
        "HPOPT_TRIAL_LAUNCHER": str(PYTHON),
        "HPOPT_TRIAL_LAUNCHER_ARGS": shlex.join(
            ["-m", "hpopt.gpu_lease", "--", str(TORCHRUN), "--standalone", "--nproc_per_node=2"]
        ),
        "HPOPT_GPUS": "4,5,6",
        "HPOPT_GPUS_PER_TRIAL": "2",
        "HPOPT_LEASE_DIR": str(tmp_path / "leases"),
    }
    run = hpopt_trial(tmp_path, env, str(probe), str(tmp_path))
    assert run.returncode == 0, (tmp_path / "trial.log").read_text()
    ranks = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    for rank, seen in enumerate(ranks):
        # Both ranks see the same two devices, leased (and still locked) by their parent.
        assert seen == {
            "RANK": str(rank),
            "CUDA_VISIBLE_DEVICES": "4,5",
            "held": ["4", "5"],
            "own_lease": ["4", "5"],
        }


@pytest.mark.slow
def test_a_timed_out_ddp_trial_leaves_no_rank_running(tmp_path: Path) -> None:
    # torchrun starts its workers in sessions of their own: killing the trial's process group
    # alone would leave them running.
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "Path(sys.argv[1], f\"pid-{os.environ['RANK']}\").write_text(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    env = {
        "HPOPT_TRIAL_LAUNCHER": str(TORCHRUN),
        "HPOPT_TRIAL_LAUNCHER_ARGS": "--standalone --nproc_per_node=2",
        "HPOPT_TRIAL_TIMEOUT": "30",  # long enough for torchrun to start both ranks
    }
    run = hpopt_trial(tmp_path, env, str(sleeper), str(tmp_path))
    assert run.returncode == 124, run.stdout
    pids = [int((tmp_path / f"pid-{rank}").read_text()) for rank in (0, 1)]
    assert not [pid for pid in pids if running(pid)]


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its parent's wait() is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_gpus_per_trial_is_checked_and_reaches_the_hunt_spec(tmp_path: Path) -> None:
    write_config(tmp_path / "zero", {"trial": {"gpus_per_trial": 0}})
    run = snakemake(tmp_path / "zero", "-n")
    assert run.returncode != 0 and "0 is less than the minimum of 1" in run.stdout + run.stderr
    write_config(tmp_path / "short", {"trial": {"gpus_per_trial": 3}, "hunt": {"gpus": [0, 1]}})
    run = snakemake(tmp_path / "short", "-n")
    assert run.returncode != 0
    assert "trial.gpus_per_trial is 3, but hunt.gpus lists only 2" in run.stdout + run.stderr
    spec = "results/speaker_id/hunt/spec.json"
    write_config(tmp_path / "two", {"trial": {"gpus_per_trial": 2}, "hunt": {"gpus": [0, 1]}})
    assert snakemake(tmp_path / "two", spec).returncode == 0
    assert json.loads((tmp_path / "two" / spec).read_text())["gpus_per_trial"] == 2
    write_config(tmp_path / "default", {})
    assert snakemake(tmp_path / "default", spec).returncode == 0
    assert "gpus_per_trial" not in json.loads((tmp_path / "default" / spec).read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp_corpus") / "prepared"
    run = subprocess.run(
        [sys.executable, str(PREPARE_SCRIPT), *CORPUS_ARGS, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr
    return out


def launcher(processes: int) -> list[str]:
    """The train env's python (1) or `torchrun --standalone --nproc_per_node=N`."""
    if processes == 1:
        return [str(PYTHON)]
    return [str(TORCHRUN), "--standalone", f"--nproc_per_node={processes}"]


def recipe_command(processes: int, *args: str) -> list[str]:
    return [*launcher(processes), str(RECIPE / "train.py"), str(RECIPE / "train.yaml"), *args]


def flags(settings: dict[str, object]) -> list[str]:
    return [token for key, value in settings.items() for token in (f"--{key}", str(value))]


# Put on PYTHONPATH for the whole hunt: every torchrun worker (a process with RANK set)
# records who it is, then every file under $AUDIT_FOLDER it opens for writing, renames into
# place or deletes, as JSON lines in $AUDIT_LOG/<pid>.jsonl.
SITECUSTOMIZE = """
import json
import os
import sys

_FOLDER = os.environ.get("AUDIT_FOLDER")
_LOG = os.environ.get("AUDIT_LOG")
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_SEEN = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "ORION_TRIAL_ID", "HPOPT_LEASED_GPUS",
         "CUDA_VISIBLE_DEVICES")


def _record(event, **fields):
    line = json.dumps({"event": event, "pid": os.getpid(), "rank": os.environ["RANK"], **fields})
    with open(os.path.join(_LOG, f"{os.getpid()}.jsonl"), "a") as stream:
        stream.write(line + "\\n")


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & _WRITING
    elif event in ("os.rename", "os.remove"):
        path, writes = (args[1] if event == "os.rename" else args[0]), True
    else:
        return
    if not writes or not isinstance(path, (str, bytes, os.PathLike)):
        return
    path = os.path.realpath(os.fsdecode(path))
    if path.startswith(_FOLDER + os.sep):
        _record(event, path=path)


if _FOLDER and _LOG and "RANK" in os.environ:
    _record("start", argv=sys.argv, env={name: os.environ.get(name) for name in _SEEN})
    sys.addaudithook(_hook)
"""


def ddp_hunt(root: Path, corpus: Path) -> Hunt:
    """The workflow's hunt step (spec.json as `hunt_spec` writes it) with 2-process trials."""
    hunt = Hunt(root)
    hunt.hunt_dir.mkdir(parents=True)
    (root / "data").symlink_to(corpus)
    config = {
        "dir": str(RECIPE),
        "script": "train.py",
        "train_yaml": "train.yaml",
        "hpopt_yaml": "hpopt.yaml",
        "prepare": "speaker_id_prepare.py",
        "result": "metrics.json",
        # ckpt_enable (which needs valid_each_epoch): to find rank 0's final model afterwards;
        # 2 epochs (hpopt.yaml keeps train.yaml's budget)
        "args": {
            "tdnn_channels": 16,
            "batch_size": 8,
            "ckpt_enable": "true",
            "valid_each_epoch": "true",
            "number_of_epochs": 2,
        },
        "device": "cpu",
        "seed": 1986,
    }
    spec = base_spec(root) | {
        "experiment": "ddp",
        "max_trials": 2,
        "max_broken": 1,
        "gpus": [0, 1],  # fake ids: leased (file locks) but unused by a CPU trial
        "gpus_per_trial": 2,
        "warm_launcher": True,  # not used by DDP trials
        "space": {"emb_dim": "choices([16, 32])", "lr": "loguniform(1e-3, 1e-2)"},
        "recipe": describe(config, {}, "the test's spec"),
        "data_folder": str(corpus),
    }
    hunt.spec.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return hunt


def rank0_alone_on_the_validation_set(folder: Path, corpus: Path) -> dict[str, float]:
    """What rank 0's final model scores on the whole validation set, in this one process."""
    import torch
    import train
    from speaker_data.prepared import open_prepared

    hparams = yaml.safe_load((folder / "hyperparams.yaml").read_text())
    last = folder / "save" / f"epoch-{hparams['number_of_epochs']:03d}.ckpt"
    torch.set_num_threads(1)  # as in the trial
    prepared = open_prepared(corpus, hparams["n_mels"], None)
    model = train.build_model(hparams, prepared)
    model.load_state_dict(torch.load(last, weights_only=True)["model"])
    split = prepared.split("valid")
    batches = loader.eval_batches(split.frames, hparams["batch_size"])
    assert len(batches) >= 2  # or rank 1 evaluated nothing and nothing was reduced
    dataset = loader.SpeakerFrames(prepared, split, "cache")
    rows = train.evaluate_batches(
        model,
        loader.make_loader(dataset, batches, 0),
        torch.device("cpu"),
        contextlib.nullcontext,
    )
    return train.summarise(rows)


@pytest.mark.slow
def test_ddp_trials_under_orion_hunt_report_once_what_rank_0_computes(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(RECIPE))
    site, audit = tmp_path / "site", tmp_path / "audit"
    site.mkdir()
    audit.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    hunt = ddp_hunt(tmp_path / "experiment", corpus)
    trials_dir = hunt.hunt_dir.resolve() / hunt.name() / "trials"
    env = clean_env() | {
        "PYTHONPATH": str(site),
        "AUDIT_FOLDER": str(trials_dir),
        "AUDIT_LOG": str(audit),
    }
    run = hunt.run(env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert json.loads((hunt.hunt_dir / "hunt.json").read_text())["completed"] == 2
    trials = hunt.trials()
    assert [trial.status for trial in trials] == ["completed", "completed"]
    events = [
        json.loads(line)
        for record in audit.glob("*.jsonl")
        for line in record.read_text().splitlines()
    ]
    for trial in trials:
        folder = Path(trial.working_dir).resolve()
        assert folder.parent == trials_dir
        starts = [
            e for e in events if e["event"] == "start" and e["env"]["ORION_TRIAL_ID"] == trial.id
        ]
        # Two ranks with the same command line (so the same output folder), both inside the
        # 2-GPU lease their parent took before torchrun started them.
        assert sorted(e["rank"] for e in starts) == ["0", "1"]
        assert starts[0]["argv"] == starts[1]["argv"]
        argv = starts[0]["argv"]
        assert Path(argv[argv.index("--output_folder") + 1]).resolve() == folder
        for start in starts:
            assert start["env"]["WORLD_SIZE"] == "2"
            assert start["env"]["HPOPT_LEASED_GPUS"] == start["env"]["CUDA_VISIBLE_DEVICES"]
            assert start["env"]["HPOPT_LEASED_GPUS"] == "0,1"
        writes = [e for e in events if e["event"] != "start" and e["path"].startswith(f"{folder}/")]
        assert {e["rank"] for e in writes} == {"0"}, "a rank other than 0 wrote into the trial"
        assert len({e["pid"] for e in writes}) == 1
        written = Counter(
            Path(e["path"]).relative_to(folder).as_posix()
            for e in writes
            if e["event"] != "os.remove"  # pruning an older checkpoint
        )
        # Every output once: atomic ones by one rename, the appended log by one open.
        outputs = ["metrics.json", "train_log.txt", "hyperparams.yaml"]
        outputs += ["save/epoch-001.ckpt", "save/epoch-002.ckpt"]
        outputs += [path.name for path in folder.glob("results_*.log")]  # Orion's result file
        assert len(outputs) == 6
        assert [written[name] for name in outputs] == [1] * len(outputs), written

        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["processes"] == 2 and metrics["trial_id"].endswith(trial.id)
        log = (folder / "train_log.txt").read_text().splitlines()
        assert [line for line in log if line.startswith("trial_id")] == [
            f"trial_id: {metrics['trial_id']}"
        ]
        epochs = [line.split(",")[0] for line in log if line.startswith("epoch")]
        assert epochs == ["epoch: 1", "epoch: 2"]

        objectives = [result.value for result in trial.results if result.type == "objective"]
        losses = [result.value for result in trial.results if result.name == "loss"]
        alone = rank0_alone_on_the_validation_set(folder, corpus)
        assert objectives == [alone["error"]] and losses == [alone["loss"]]
        assert metrics["metrics"]["valid"] == alone


# The comparison's budget: 12 epochs of 8 steps of 32 utterances (16 per process under DDP).
CONVERGED = {
    "tdnn_channels": 64,
    "emb_dim": 64,
    "batch_size": 32,
    "number_of_epochs": 12,
    "lr": 0.01,
    "num_threads": 1,
    "device": "cpu",
    "seed": 1986,
}
# How far the final validation errors of a 2-process and a 1-process run may differ: 4 of the
# 32 validation utterances. Both runs see the same global batches and the same averaged
# gradient formula, but they are not the same computation: batch normalisation normalises each
# process's 16 utterances instead of all 32 (CPU DDP has no SyncBatchNorm), and the second
# process draws its own dropout masks. Measured here for seeds 1986, 1987, 1988: differences of
# 1, 0 and 0 utterances (errors 0-12.5 %), against ~4 % sampling noise of a 32-utterance error.
ERROR_TOLERANCE = 4 / 32
# Both runs must have learnt (chance: 7/8), or equal errors would prove nothing.
LEARNT = 0.25


@pytest.mark.slow
def test_a_ddp_run_reaches_the_validation_error_of_a_single_process_run(
    corpus: Path, tmp_path: Path
) -> None:
    errors = {}
    for processes in (1, 2):
        out = tmp_path / f"processes-{processes}"
        run = subprocess.run(
            recipe_command(
                processes, *flags(CONVERGED | {"data_folder": corpus, "output_folder": out})
            ),
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["processes"] == processes and "test" in metrics["metrics"]
        errors[processes] = metrics["metrics"]["valid"]["error"]
    assert max(errors.values()) <= LEARNT, errors
    assert abs(errors[1] - errors[2]) <= ERROR_TOLERANCE, errors
    # A 2-process checkpoint does not silently continue as a 1-process run.
    resumed = CONVERGED | {"data_folder": corpus, "output_folder": tmp_path / "processes-2"}
    run = subprocess.run(
        recipe_command(1, *flags(resumed)),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert run.returncode == 2
    assert "different training (processes: checkpoint 2, now None)" in run.stderr


# One DDP step of a model without batch normalisation or dropout, on slices of unequal size
# (batches of 7 over 2 processes), must give the parameters of one single-process step on the
# whole batches. SGD, unlike Adam, is sensitive to the gradient's scale, so a wrong loss weight
# shows.
STEP_PROBE = """
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
from ddp import Processes
from train import train_epoch

from speaker_data import loader
from speaker_data.prepared import open_prepared


class MeanFrameClassifier(torch.nn.Module):
    def __init__(self, n_mels, n_classes):
        super().__init__()
        self.out = torch.nn.Linear(n_mels, n_classes)

    def forward(self, feats, lengths):
        return torch.log_softmax(self.out(feats.sum(dim=1) / lengths[:, None]), dim=1)


class NoProgress:
    def update(self, n):
        pass


torch.set_num_threads(1)
prepared = open_prepared(Path(sys.argv[2]), 40, None)
split = prepared.split("train")
processes = Processes.start(torch.device("cpu"), None)
torch.manual_seed(0)
model = MeanFrameClassifier(40, len(prepared.labels)).double()
before = {name: value.clone() for name, value in model.state_dict().items()}
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
batches = loader.train_batches(split.frames, 7, 60, np.random.default_rng(3))[:3]
shards = loader.shard_batches(batches, processes.rank, processes.size)
dataset = loader.SpeakerFrames(prepared, split, "cache")
steps = (
    batch | {"feats": batch["feats"].double()}
    for batch in loader.make_loader(dataset, [items for items, _ in shards], 0)
)
scales = [processes.size * len(items) / full for items, full in shards]
train_epoch(
    processes.wrap(model),
    optimizer,
    steps,
    scales,
    torch.device("cpu"),
    contextlib.nullcontext,
    NoProgress(),
)
if processes.rank == 0:
    torch.save({"before": before, "after": model.state_dict()}, sys.argv[3])
processes.close()
"""


@pytest.mark.slow
def test_a_ddp_step_on_unequal_slices_equals_the_global_batch_step(
    corpus: Path, tmp_path: Path
) -> None:
    import torch

    probe = tmp_path / "step.py"
    probe.write_text(STEP_PROBE)
    states = {}
    for processes in (1, 2):
        out = tmp_path / f"state-{processes}.pt"
        run = subprocess.run(
            [*launcher(processes), str(probe), str(RECIPE), str(corpus), str(out)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        states[processes] = torch.load(out)
    single, ddp = states[1], states[2]
    assert not torch.equal(single["after"]["out.weight"], single["before"]["out.weight"])
    for name, value in single["after"].items():
        torch.testing.assert_close(ddp["after"][name], value, rtol=0, atol=1e-12)

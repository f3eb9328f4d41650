"""The pins hold: each env is what its lock says, and every lock is fully hashed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "containers" / "requirements"
LOCKS = sorted(REQUIREMENTS.glob("*.lock"))
WORKFLOW_PYTHON = REPO / ".venv" / "workflow" / "bin" / "python"
SPEECHBRAIN_PYTHON = REPO / ".venv" / "speechbrain" / "bin" / "python"


def lock_entries(lock: Path) -> list[tuple[str, str, list[str]]]:
    """(name, version, hashes) for every requirement of a pip-style hashed lock."""
    entries = []
    for block in re.split(r"\n(?=\S)", lock.read_text()):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if match:
            entries.append((match[1], match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block)))
    return entries


def test_every_lock_is_found():
    assert {lock.name for lock in LOCKS} >= {
        "pip.lock",
        "train.lock",
        "train-cpu.lock",
        "speechbrain.lock",
        "workflow.lock",
    }


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.name)
def test_every_lock_entry_has_a_hash(lock: Path):
    entries = lock_entries(lock)
    assert entries, f"{lock} has no pinned requirement"
    unhashed = [name for name, _, hashes in entries if not hashes]
    assert not unhashed, f"{lock.name}: entries without --hash: {unhashed}"
    unpinned = re.findall(r"^([A-Za-z0-9_.-]+)\s*(?:[<>~!]=?|$)", lock.read_text(), re.M)
    assert not unpinned, f"{lock.name}: requirements without ==: {unpinned}"


def test_lock_parser_sees_a_missing_hash(tmp_path: Path):
    broken = tmp_path / "broken.lock"
    broken.write_text(
        "tqdm==4.70.1 \\\n    # via -r x.in\nnumpy==2.4.6 \\\n    --hash=sha256:" + "a" * 64
    )
    assert [name for name, _, hashes in lock_entries(broken) if not hashes] == ["tqdm"]


def test_train_env_has_the_pinned_stack():
    import hyperpyyaml  # noqa: F401
    import orion.core  # noqa: F401
    import torch
    import yaml

    assert sys.version_info[:2] == (3, 11)
    assert yaml.__version__ == "5.4.1"
    assert torch.__version__.split("+")[0] == "2.13.0"
    assert metadata.version("orion") == "0.2.7"


def test_train_env_matches_its_lock():
    """Whichever torch build was installed, every package is at its locked version."""
    torch_build = metadata.version("torch")
    lock = REQUIREMENTS / ("train-cpu.lock" if "+cpu" in torch_build else "train.lock")
    wrong = {
        name: (metadata.version(name), version)
        for name, version, _ in lock_entries(lock)
        if metadata.version(name) != version
    }
    assert not wrong, f"installed vs {lock.name}: {wrong}"


def test_workflow_env_is_snakemake_9_without_the_train_stack():
    version = subprocess.run(
        [str(WORKFLOW_PYTHON), "-m", "snakemake", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.startswith("9.")
    has_torch = subprocess.run(
        [str(WORKFLOW_PYTHON), "-c", "import torch"], capture_output=True
    ).returncode
    assert has_torch != 0, "the workflow env must not contain the train stack"


def test_the_speechbrain_lock_only_adds_to_the_cuda_train_lock():
    """Every pin the two envs share is the same version with the same hashes: a SpeechBrain
    recipe runs on the default recipe's stack, plus SpeechBrain."""
    train = {
        name: (version, hashes)
        for name, version, hashes in lock_entries(REQUIREMENTS / "train.lock")
    }
    speechbrain = {
        name: (version, hashes)
        for name, version, hashes in lock_entries(REQUIREMENTS / "speechbrain.lock")
    }
    moved = {name: speechbrain.get(name) for name in train if speechbrain.get(name) != train[name]}
    assert not moved, f"speechbrain.lock differs from train.lock on {sorted(moved)}"
    assert speechbrain["speechbrain"][0] == "1.1.2"
    assert speechbrain["torchaudio"][0] == "2.11.1"


def normalised(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_speechbrain_env_loads_torchaudio_and_matches_its_lock():
    """torchaudio's C extension loads (an IIR filter runs) next to the CUDA build of torch, on
    a CPU-only machine; every package is at the version speechbrain.lock pins."""
    script = (
        "import json, torch, torchaudio, speechbrain\n"
        "from importlib import metadata\n"
        "x = torch.linspace(-1, 1, 8)\n"
        "torchaudio.functional.lfilter(x, torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.5]))\n"
        "print(json.dumps({d.metadata['Name']: d.version for d in metadata.distributions()}))"
    )
    ran = subprocess.run([SPEECHBRAIN_PYTHON, "-c", script], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    installed = {
        normalised(name): version
        for name, version in json.loads(ran.stdout.splitlines()[-1]).items()
    }
    wrong = {
        name: (installed.get(normalised(name)), version)
        for name, version, _ in lock_entries(REQUIREMENTS / "speechbrain.lock")
        if installed.get(normalised(name)) != version
    }
    assert not wrong, f"installed vs speechbrain.lock: {wrong}"

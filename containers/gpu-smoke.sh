#!/usr/bin/env bash
# GPU smoke test for a GPU host, run inside the image:
#
#   docker run --rm --gpus all IMAGE containers/gpu-smoke.sh
#
# Prints the driver, CUDA, cuDNN and NCCL versions and the GPU names, asserts that torch sees a
# GPU, runs one training step (forward, backward, optimizer step) of an x-vector-like TDNN on
# it (the recipe's SpeakerIdModel from recipes/speaker_id/model.py, small sizes; else a built-in
# TDNN), and with 2+ visible GPUs one 2-process DDP step over NCCL via torchrun, then one short
# epoch of the real recipe (recipes/speaker_id/train.py) as a 2-GPU DDP job on a tiny synthetic
# corpus, checking that rank 0 alone wrote its outputs. Exits non-zero on any failure, with the
# likely cause.
#
#   containers/gpu-smoke.sh --device cpu   the same steps with 2 gloo processes on the CPU:
#                                          checks this script itself where no GPU is.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
venv=${REPROHUNT_TRAIN_ENV:-$repo/.venv/train}
[[ "$venv" == /* ]] || venv="$repo/$venv"
device=cuda
case "${1:-}" in
"") ;;
--device) device=${2:?usage: gpu-smoke.sh [--device cuda|cpu]} ;;
*) echo "usage: gpu-smoke.sh [--device cuda|cpu]" >&2; exit 2 ;;
esac
[[ -x "$venv/bin/python" ]] || { echo "gpu-smoke: no train env at $venv (REPROHUNT_TRAIN_ENV)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/gpu_smoke.py" <<'PY'
"""One training step of a small TDNN (single process, or one DDP rank under torchrun)."""

import ctypes
import importlib.util
import inspect
import os
import sys
from pathlib import Path

import torch
from torch import nn

N_MELS, N_SPEAKERS, BATCH, FRAMES = 40, 10, 8, 200


def cuda_driver_version() -> str:
    """The CUDA version the host driver supports, from libcuda itself (no nvidia-smi needed)."""
    try:
        version = ctypes.c_int()
        ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
    except OSError:
        return "none (libcuda.so.1 not found: no NVIDIA driver mounted into the container)"
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


class SmallTDNN(nn.Module):
    """x-vector-like: dilated 1-D convolutions over mel frames, statistics pooling, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = nn.Sequential(
            nn.Conv1d(N_MELS, 64, 5), nn.ReLU(), nn.BatchNorm1d(64),
            nn.Conv1d(64, 64, 3, dilation=2), nn.ReLU(), nn.BatchNorm1d(64),
        )
        self.embed = nn.Linear(128, 64)
        self.classify = nn.Linear(64, N_SPEAKERS)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (batch, frames, n_mels)
        h = self.frames(feats.transpose(1, 2))
        return self.classify(torch.relu(self.embed(torch.cat([h.mean(2), h.std(2)], 1))))


# Small sizes for the recipe model's constructor arguments, by name.
SMOKE_SIZES = {"n_mels": N_MELS, "tdnn_channels": 64, "tdnn_channels_out": 128, "emb_dim": 64,
               "n_classes": N_SPEAKERS, "dropout": 0.1}


def recipe_model(repo: Path) -> nn.Module | None:
    """The recipe's SpeakerIdModel, built with small sizes, when recipes/speaker_id has one."""
    path = repo / "recipes" / "speaker_id" / "model.py"
    if not path.is_file():
        return None
    sys.path.insert(0, str(path.parent))  # its own imports (speaker_data) live beside it
    spec = importlib.util.spec_from_file_location("speaker_id_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model_class = getattr(module, "SpeakerIdModel", None)
    if model_class is None:
        return None
    wanted = [name for name, p in inspect.signature(model_class).parameters.items()
              if p.default is inspect.Parameter.empty]
    unknown = [name for name in wanted if name not in SMOKE_SIZES]
    if unknown:
        sys.exit(f"gpu-smoke: FAIL {path}: SpeakerIdModel needs {unknown}; add them to SMOKE_SIZES")
    return model_class(**{name: SMOKE_SIZES[name] for name in wanted})


def train_step(model: nn.Module, device: torch.device) -> float:
    """Forward, backward and an optimizer step on random log-mel frames [batch, time, n_mels]."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    feats = torch.randn(BATCH, FRAMES, N_MELS, device=device)
    labels = torch.randint(0, N_SPEAKERS, (BATCH,), device=device)
    forward = model.module.forward if hasattr(model, "module") else model.forward
    if "lengths" in inspect.signature(forward).parameters:
        out = model(feats, torch.full((BATCH,), FRAMES, device=device))
    else:
        out = model(feats)
    loss = nn.functional.cross_entropy(out.float(), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss.item()}")
    return loss.item()


def build_model(repo: Path) -> tuple[nn.Module, str]:
    model = recipe_model(repo)
    return (model, "recipes/speaker_id/model.py") if model else (SmallTDNN(), "built-in TDNN")


def single(repo: Path, device_type: str) -> None:
    print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}, "
          f"NCCL {'.'.join(map(str, torch.cuda.nccl.version())) if torch.version.cuda else '-'}")
    print(f"driver supports CUDA {cuda_driver_version()}")
    if device_type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("gpu-smoke: FAIL torch.cuda.is_available() is False: run with --gpus all on a host "
                     "with the NVIDIA Container Toolkit and a driver >= 580 (this image is CUDA "
                     f"{torch.version.cuda}; older drivers: rebuild with --build-arg TORCH_INDEX=...)")
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            print(f"GPU {i}: {props.name}, compute capability {props.major}.{props.minor}, "
                  f"{props.total_memory / 2**30:.1f} GiB")
    device = torch.device(device_type, 0) if device_type == "cuda" else torch.device("cpu")
    model, source = build_model(repo)
    loss = train_step(model.to(device), device)
    print(f"gpu-smoke: one training step of the {source} on {device}: loss {loss:.4f}")


def ddp(repo: Path, device_type: str) -> None:
    """One DDP step; all ranks must end with identical gradients (DDP averaged them)."""
    import torch.distributed as dist

    rank = int(os.environ["LOCAL_RANK"])
    backend = "nccl" if device_type == "cuda" else "gloo"
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    try:
        torch.manual_seed(0)
        model, source = build_model(repo)
        ddp_model = nn.parallel.DistributedDataParallel(
            model.to(device), device_ids=[rank] if device_type == "cuda" else None
        )
        torch.manual_seed(1 + rank)  # different data per rank
        loss = train_step(ddp_model, device)
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        checksum = grads.double().sum().reshape(1)
        gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, checksum)
        if not all(torch.allclose(g, gathered[0]) for g in gathered):
            raise RuntimeError(f"gradients differ across ranks: {[g.item() for g in gathered]}")
        if rank == 0:
            print(f"gpu-smoke: DDP step of the {source}, {dist.get_world_size()} processes over "
                  f"{backend}: gradients agree, loss {loss:.4f}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mode, device_type, repo_dir = sys.argv[1:4]
    (single if mode == "single" else ddp)(Path(repo_dir), device_type)
PY

cd "$work"
if [[ "$device" == cuda ]]; then
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
    else
        echo "nvidia-smi: not in the container (NVIDIA_DRIVER_CAPABILITIES lacks utility?)"
    fi
fi
"$venv/bin/python" gpu_smoke.py single "$device" "$repo"

if [[ "$device" == cpu ]]; then
    n_ddp=2
else
    n_ddp=$("$venv/bin/python" -c 'import torch; print(torch.cuda.device_count())')
    ((n_ddp >= 2)) || { echo "gpu-smoke: 1 GPU visible, DDP step skipped"; echo "gpu-smoke: OK"; exit 0; }
    n_ddp=2
fi
timeout 600 "$venv/bin/torchrun" --standalone --nproc_per_node="$n_ddp" gpu_smoke.py ddp "$device" "$repo"

# The recipe itself as a DDP job (what a trial with trial.gpus_per_trial: 2 runs), one epoch.
recipe="$repo/recipes/speaker_id"
if [[ -f "$recipe/train.py" ]]; then
    timeout 300 "$venv/bin/python" "$recipe/speaker_id_prepare.py" --source synthetic --seed 7 \
        --n-speakers 4 --utts-per-speaker 8 --min-seconds 0.5 --max-seconds 0.8 \
        --out "$work/data" >/dev/null ||
        { echo "gpu-smoke: FAIL preparing the tiny corpus for the recipe step" >&2; exit 1; }
    timeout 600 "$venv/bin/torchrun" --standalone --nproc_per_node="$n_ddp" \
        "$recipe/train.py" "$recipe/train.yaml" --data_folder "$work/data" \
        --output_folder "$work/recipe" --device "$device" --number_of_epochs 1 \
        --tdnn_channels 16 --emb_dim 16 --batch_size 8 --ckpt_enable false ||
        { echo "gpu-smoke: FAIL the recipe under torchrun (its output is above)" >&2; exit 1; }
    "$venv/bin/python" - "$work/recipe" "$n_ddp" <<'PY'
import json
import sys
from pathlib import Path

out, processes = Path(sys.argv[1]), int(sys.argv[2])
metrics = json.loads((out / "metrics.json").read_text())
epochs = [line for line in (out / "train_log.txt").read_text().splitlines() if line.startswith("epoch")]
if metrics.get("processes") != processes or len(epochs) != 1:
    sys.exit(f"gpu-smoke: FAIL recipe DDP run: processes {metrics.get('processes')} (want "
             f"{processes}), {len(epochs)} epoch line(s) in train_log.txt (want 1: rank 0 only)")
print(f"gpu-smoke: recipe epoch as a {processes}-process DDP job: valid error "
      f"{metrics['metrics']['valid']['error']:.3f}, written once by rank 0")
PY
fi
echo "gpu-smoke: OK"

#!/usr/bin/env bash
# GPU throughput of the speaker-id recipe at a realistic size: utterances/s and GPU utilisation.
#
#   bench/gpu.sh [bench_throughput.py options, e.g. --repeats 5 --epochs 10 --precision bf16]
#
# Runs the real recipe (bench/trial_probe.py train.py …, as a hunt trial) with emb_dim 512,
# tdnn_channels 512, batch 32 on the default corpus, sampling nvidia-smi every 100 ms; writes
# bench/results/throughput_gpu.json (run `bench/run_all.py --table-only` to put it in the table).
# Environment: PYTHON (default .venv/train/bin/python, which must hold the CUDA build of torch,
# i.e. `TORCH_VARIANT=cuda make setup`), DEVICE (default cuda:0), EPOCHS (default 5).
# Exits 2, saying why, on a host without a usable NVIDIA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/train/bin/python}
DEVICE=${DEVICE:-cuda:0}

fail() {
    echo "bench/gpu.sh: $*" >&2
    exit 2
}

command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: run this on a host with an NVIDIA GPU and its driver"
nvidia-smi -L >/dev/null 2>&1 || fail "nvidia-smi lists no GPU (driver not loaded, or no GPU visible to this job)"
[[ -x "$PYTHON" ]] || fail "$PYTHON not found: create the train env (make setup) or set PYTHON"
"$PYTHON" - "$DEVICE" <<'PY' || fail "torch in $PYTHON cannot use $DEVICE (see above); the CPU build of torch comes from train-cpu.lock: rebuild with TORCH_VARIANT=cuda make setup"
import sys

import torch

device = sys.argv[1]
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__}: torch.cuda.is_available() is False")
index = int(device.partition(":")[2] or 0)
if index >= torch.cuda.device_count():
    sys.exit(f"{device}: torch sees only {torch.cuda.device_count()} GPU(s)")
print(f"{device}: {torch.cuda.get_device_name(index)}, torch {torch.__version__}")
PY

exec "$PYTHON" bench/bench_throughput.py --device "$DEVICE" --emb-dim 512 --tdnn-channels 512 \
    --batch-size 32 --epochs "${EPOCHS:-5}" --name throughput_gpu "$@"

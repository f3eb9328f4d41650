#!/usr/bin/env bash
# Create or update one of the environments from its hashed lock.
#
#   containers/setup-env.sh train       VENV_DIR  # torch, orion, hyperpyyaml, pyyaml 5.4.1, + this package
#   containers/setup-env.sh workflow    VENV_DIR  # snakemake 9 and the developer checks
#   containers/setup-env.sh speechbrain VENV_DIR  # the train env's CUDA lock + speechbrain, torchaudio
#
# Why a script: `make setup` and the Dockerfile must install exactly the same way, and the
# steps carry measured traps (pip version, cython<3 for PyYAML 5.4.1, which torch build).
# TORCH_VARIANT=cpu|cuda picks train-cpu.lock or train.lock (default: cuda when `nvidia-smi -L`
# lists a GPU, else cpu). Prints the set-up time and the venv size at the end.
set -euo pipefail

env_name=${1:?usage: setup-env.sh train|workflow|speechbrain VENV_DIR}
venv=${2:?usage: setup-env.sh train|workflow VENV_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
req="$here/requirements"
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: $python is Python $("$python" -V 2>&1); both environments need Python 3.11" >&2
    echo "       (orion 0.2.7 does not install on 3.12). Set PYTHON=/path/to/python3.11." >&2
    exit 2
fi

case "$env_name" in
train)
    variant=${TORCH_VARIANT:-}
    if [[ -z "$variant" ]]; then
        if nvidia-smi -L >/dev/null 2>&1; then variant=cuda; else variant=cpu; fi
    fi
    case "$variant" in
    cuda) lock="$req/train.lock" ;;
    cpu) lock="$req/train-cpu.lock" ;;
    *) echo "error: TORCH_VARIANT=$variant; use cpu or cuda" >&2; exit 2 ;;
    esac
    ;;
workflow) lock="$req/workflow.lock" ;;
# torchaudio (which speechbrain imports) loads only next to torch's CUDA build, so this env is the
# CUDA lock plus SpeechBrain on every machine; that build runs on a CPU too.
speechbrain) lock="$req/speechbrain.lock" ;;
*) echo "error: unknown environment '$env_name'; use train, workflow or speechbrain" >&2; exit 2 ;;
esac

start=$(date +%s)
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"

# pip 26.3 refuses orion 0.2.7 (direct-URL extras); 26.2.1 installs it. Pinned with hashes.
"$venv/bin/python" -m pip install --quiet --require-hashes -r "$req/pip.lock"

# PyYAML 5.4.1 is an sdist that only builds with cython<3. pip 23 passes PIP_CONSTRAINT to its
# isolated build, pip 26 only PIP_BUILD_CONSTRAINT: set both.
export PIP_CONSTRAINT="$req/build-constraints.txt" PIP_BUILD_CONSTRAINT="$req/build-constraints.txt"
extra=()
if [[ "$env_name" == train && "$variant" == cpu ]]; then
    # The CPU build of torch lives on PyTorch's own index, unless a local wheel directory
    # (PIP_FIND_LINKS, as on the project's development machines) already holds it.
    if ! compgen -G "${PIP_FIND_LINKS:-/nonexistent}/torch-2.13.0+cpu-*.whl" >/dev/null; then
        extra=(--extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}")
    fi
fi
"$venv/bin/python" -m pip install --quiet --require-hashes "${extra[@]}" -r "$lock"

if [[ "$env_name" != workflow ]]; then
    # Our own package, editable, with nothing else: every dependency came from the lock.
    PIP_BUILD_CONSTRAINT= "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation \
        -e "$repo"
fi
"$venv/bin/python" -m pip check
sha256sum "$lock" | cut -d' ' -f1 >"$venv/.lock-sha256"
echo "$(basename "$lock")" >"$venv/.lock-name"

echo "setup: $env_name env ($(basename "$lock")) ready in $(($(date +%s) - start)) s," \
    "$(du -sh "$venv" | cut -f1) in $venv"

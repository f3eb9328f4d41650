# reprohunt — the two commands a newcomer needs are `make run` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
TRAIN_ENV := $(VENV)/train
WORKFLOW_ENV := $(VENV)/workflow
# SpeechBrain recipes (docs/recipes.md): the train env's CUDA lock plus speechbrain and
# torchaudio. Not part of `make setup`: `make run` stays as light as it is; `make test` builds it.
SPEECHBRAIN_ENV := $(VENV)/speechbrain
REQ := containers/requirements
CORES ?= all
UV := $(WORKFLOW_ENV)/bin/uv
export UV_CACHE_DIR ?= $(CURDIR)/.venv/uv-cache

# The CPU lock takes torch's CPU build from a local wheel folder when one is configured
# (PIP_FIND_LINKS, as on the project's machines), else from PyTorch's CPU index.
ifneq ($(strip $(PIP_FIND_LINKS)),)
TORCH_CPU_SOURCE := --find-links $(PIP_FIND_LINKS)
else
TORCH_CPU_SOURCE := --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
endif
LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--build-constraints $(REQ)/build-constraints.txt --custom-compile-command "make lock"

.PHONY: help setup setup-speechbrain run test test-quick lint docs results-page pytest lock bench audit numerics-check dashboard image-test clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# An env is rebuilt when its lock changes (the stamp records the lock's hash).
$(TRAIN_ENV)/.lock-sha256: $(REQ)/train.lock $(REQ)/train-cpu.lock $(REQ)/pip.lock pyproject.toml
	containers/setup-env.sh train $(TRAIN_ENV)
$(WORKFLOW_ENV)/.lock-sha256: $(REQ)/workflow.lock $(REQ)/pip.lock
	containers/setup-env.sh workflow $(WORKFLOW_ENV)

$(SPEECHBRAIN_ENV)/.lock-sha256: $(REQ)/speechbrain.lock $(REQ)/pip.lock pyproject.toml
	containers/setup-env.sh speechbrain $(SPEECHBRAIN_ENV)

setup: $(TRAIN_ENV)/.lock-sha256 $(WORKFLOW_ENV)/.lock-sha256 ## create both envs from the hashed locks (if missing or stale)

setup-speechbrain: setup $(SPEECHBRAIN_ENV)/.lock-sha256 ## also the SpeechBrain env (5.4 GB) for SpeechBrain recipes

run: setup ## run the whole default workflow on the embedded synthetic corpus
	$(WORKFLOW_ENV)/bin/snakemake --cores $(CORES) --workflow-profile profiles/default

lint: setup ## ruff, mypy, snakefmt, snakemake --lint, hadolint
	$(WORKFLOW_ENV)/bin/ruff check .
	$(WORKFLOW_ENV)/bin/ruff format --check .
	$(WORKFLOW_ENV)/bin/mypy --python-executable $(TRAIN_ENV)/bin/python src
	$(WORKFLOW_ENV)/bin/snakefmt --check .
	$(WORKFLOW_ENV)/bin/snakemake --lint --cores 1
	$(WORKFLOW_ENV)/bin/hadolint Dockerfile

# The user guide (mkdocs.yml, docs/) into site/ (git-ignored). Strict: a broken link between pages,
# a missing anchor or a page left out of the nav fails it.
docs: setup ## build the docs site strictly into site/
	$(WORKFLOW_ENV)/bin/mkdocs build --strict

# docs/results.md, the one page that quotes measured numbers, from published/*.json and
# docs/measured.json (tests/test_docs.py fails when it is stale).
results-page: setup ## regenerate docs/results.md from published/ and docs/measured.json
	$(TRAIN_ENV)/bin/python -m reprohunt.results_page

# The suite (tests/suite.sh): everything but SLURM on two pytest-xdist workers even on 2 cores
# (the end-to-end tests wait a lot: process start-up, polling; the bench file stays on one
# worker, xdist_group + --dist loadgroup), and beside them the SLURM file in a process of its own.
# PYTEST_WORKERS=0: one process. The coverage figure of src/ and the recipes, subprocesses
# included ([tool.coverage] in pyproject.toml), is printed at the end; COVERAGE=0 leaves it out
# (docs/testing.md: what it costs).
PYTEST_WORKERS ?= 2
COVERAGE ?= 1
pytest: setup-speechbrain ## the test suite and its coverage figure (COVERAGE=0: without)
	tests/suite.sh $(TRAIN_ENV)/bin/python $(PYTEST_WORKERS) $(COVERAGE) $(PYTEST_ARGS)

test: lint docs pytest ## everything CI runs: lint, the docs site, the whole test suite

# What a developer runs while editing: no SLURM cluster, container image or benchmarks.
test-quick: setup-speechbrain ## the test suite without the slurm, container and bench groups
	PATH="$(CURDIR)/$(TRAIN_ENV)/bin:$$PATH" $(TRAIN_ENV)/bin/python -m pytest -n $(PYTEST_WORKERS) \
		--dist loadgroup -m "not slurm and not container and not bench" $(PYTEST_ARGS)

lock: ## recompile every lock (hashed) from containers/requirements/*.in with uv
	@test -x $(UV) || { echo "make lock needs the workflow env (it holds uv): run make setup" >&2; exit 2; }
	$(UV) pip compile $(REQ)/pip.in $(LOCK_FLAGS) -o $(REQ)/pip.lock
	$(UV) pip compile $(REQ)/workflow.in $(LOCK_FLAGS) -o $(REQ)/workflow.lock
	$(UV) pip compile $(REQ)/train.in $(LOCK_FLAGS) -o $(REQ)/train.lock
	$(UV) pip compile $(REQ)/speechbrain.in --constraint $(REQ)/train.lock $(LOCK_FLAGS) \
		-o $(REQ)/speechbrain.lock
	echo 'torch==2.13.0+cpu' >$(REQ)/.torch-cpu-override.txt
	$(UV) pip compile $(REQ)/train.in $(LOCK_FLAGS) $(TORCH_CPU_SOURCE) \
		--override $(REQ)/.torch-cpu-override.txt -o $(REQ)/train-cpu.lock
	rm $(REQ)/.torch-cpu-override.txt

bench: setup ## benchmarks; JSON under bench/results/, figures into docs/measured.json and docs/results.md
	$(TRAIN_ENV)/bin/python bench/run_all.py

# The audit is no Snakemake rule: it must never rerun (and so replace) what it audits, and it reads
# everything from the results folder's own records, whatever config made them.
RESULTS ?= results/$(shell sed -n 's/^experiment: *//p' config/config.yaml)
audit: setup ## re-check a finished RESULTS=results/<experiment> (default: config's): envs, data, retraining (AUDIT_HUNT=1: hunt too)
	$(TRAIN_ENV)/bin/python -m reprohunt.audit --results $(RESULTS) --workflow-python $(WORKFLOW_ENV)/bin/python

# The recipe's data preparation on a small subset and its training, natively and under emulated
# Intel and AMD CPUs (qemu-user, installed when missing), op by op: the first op or file that
# differs, or that all agree. CONFIG=my.yaml checks that config's recipe; RECIPE=DIR the default
# config with that recipe folder and its *_prepare.py. NUMERICS_SET: config changes (KEY=VALUE),
# by default the tiny synthetic corpus; NUMERICS_MAX_OPS: where training stops (a few steps).
CONFIG ?= config/config.yaml
NUMERICS_SET ?= data.synthetic.n_speakers=4 data.synthetic.utts_per_speaker=8
NUMERICS_MAX_OPS ?= 3000
numerics-check: setup ## whether a recipe computes the same bits on Intel and AMD CPUs (CONFIG=FILE or RECIPE=DIR)
	containers/ensure-packages.sh results/numerics-check.apt.log qemu-user:qemu-x86_64
	$(TRAIN_ENV)/bin/python -m reprohunt.numerics_check --config $(CONFIG) $(if $(RECIPE),--recipe $(RECIPE)) \
		$(foreach item,$(NUMERICS_SET),--set $(item)) --max-ops $(NUMERICS_MAX_OPS)

# Serves a copy of the result's Orion database (orion serve) and the dashboard build on 127.0.0.1.
dashboard: setup ## Orion's dashboard over RESULTS=results/<experiment>'s hunt (PORT=N, default free)
	$(TRAIN_ENV)/bin/python -m reprohunt.dashboard --results $(RESULTS) --port $(or $(PORT),0)

image-test: ## build the container with buildah (no Docker engine) and run the workflow in it
	containers/image-test.sh

clean: ## remove results, snakemake state and both envs
	rm -rf results .snakemake $(VENV)

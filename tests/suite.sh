#!/usr/bin/env bash
# `make pytest`: the whole suite in two pytest processes, everything but the SLURM file on
# pytest-xdist workers, then the SLURM file in a process of its own; with COVERAGE=1 one coverage
# figure of src/ and the recipes over both ([tool.coverage] in pyproject.toml).
#
# Why a process of its own, after the rest: under pytest-xdist both workers started a throw-away
# SLURM cluster on this host and the two clusters' jobs hung; run beside the rest (measured
# once), its jobs did not start for 20 min, so it runs after. Its cluster (Debian packages on
# first use, five daemons) starts in the background while the rest runs, and both processes
# share one folder for what conftest.built_once makes (the tiny workflow run, built once).
#
#   tests/suite.sh PYTHON WORKERS COVERAGE [PYTEST_ARGS...]
#     PYTHON    the train env's python; WORKERS: pytest-xdist workers for the non-SLURM part
#     COVERAGE  1: measure (subprocesses too; data files .coverage-main* / .coverage-slurm*)
set -euo pipefail
python="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" workers=$2 coverage=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$(dirname "$python"):$PATH"  # absolute: tests start commands in other folders
rm -f .coverage .coverage-main* .coverage-slurm*
shared=$(mktemp -d /tmp/reprohunt-tests.XXXXXX)  # short: the cluster's UNIX sockets live in it
export REPROHUNT_TEST_SHARED=$shared
slurm_state=$shared/slurm
trap 'wait; containers/slurm/down.sh "$slurm_state" 2>/dev/null || true; rm -rf "$shared"' EXIT
# With PYTEST_ARGS (a file, -k) the SLURM tests may not run: their fixture starts it then.
slurm_up=
if (($# == 0)); then
	containers/slurm/up.sh "$slurm_state" >"$shared/slurm-up.log" 2>&1 &
	slurm_up=$!
	export REPROHUNT_SLURM_STATE=$slurm_state
fi
cov=()
if [[ $coverage == 1 ]]; then cov=(--cov --cov-report=); fi

# pytest exits 5 when it collects nothing: that passes only if nothing was there to collect.
set +e
COVERAGE_FILE="$root/.coverage-main" "$python" -m pytest -n "$workers" --dist loadgroup \
	-m "not slurm" ${cov[@]+"${cov[@]}"} "$@"
main_rc=$?
# Its failure (or exit 3, cannot install here) is the cluster fixture's to report: up.sh again.
[[ -z $slurm_up ]] || wait "$slurm_up"
COVERAGE_FILE="$root/.coverage-slurm" "$python" -m pytest -m slurm ${cov[@]+"${cov[@]}"} "$@"
slurm_rc=$?
set -e
if [[ $main_rc -eq 5 ]] && ! compgen -G 'tests/test_*.py' >/dev/null; then
	echo "pytest: no test files, nothing to run"
	main_rc=0
fi
if [[ $slurm_rc -eq 5 ]]; then
	echo "pytest: no SLURM test selected"
	slurm_rc=0
fi
if [[ $coverage == 1 ]]; then
	parts=()
	for part in .coverage-main .coverage-slurm; do [[ -f $part ]] && parts+=("$part"); done
	"$python" -m coverage combine --keep --data-file=.coverage "${parts[@]}"
	"$python" -m coverage report --data-file=.coverage
fi
exit $((main_rc ? main_rc : slurm_rc))

#!/usr/bin/env bash
# `make pytest`: the whole suite in two pytest processes side by side: everything but the SLURM
# file on pytest-xdist workers, and the SLURM file in a process of its own (its output follows
# the rest's); with COVERAGE=1 (make's default) one coverage figure of src/ and the recipes
# over both ([tool.coverage] in pyproject.toml).
#
# Why a process of its own: under pytest-xdist both workers started a throw-away SLURM cluster
# on this host and the two clusters' jobs hung. Each process has a --basetemp of its own: with
# pytest's default numbered folders, the two processes' clean-ups removed each other's working
# folders (seen 2026-12-03: the SLURM runs' folders vanished, so their jobs never showed up),
# which is why an earlier side-by-side try never got its jobs running. Both share one folder
# for what conftest.built_once makes (the tiny workflow run, built once). With PYTEST_ARGS (a
# file, -k) the SLURM file runs after the rest, and its fixture starts the cluster if needed.
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
# Short: UNIX sockets (the cluster's, the warm launcher's in each run's hunt folder) live below.
shared=$(mktemp -d /tmp/rh.XXXXXX)
export REPROHUNT_TEST_SHARED=$shared
slurm_state=$shared/slurm
finish() {
	local rc=$?
	wait
	containers/slurm/down.sh "$slurm_state" 2>/dev/null || true
	if ((rc == 0)); then rm -rf "$shared"; else echo "pytest: the tests' folders are kept in $shared"; fi
}
trap finish EXIT
cov=()
if [[ $coverage == 1 ]]; then cov=(--cov --cov-report=); fi
slurm_tests() {
	COVERAGE_FILE="$root/.coverage-slurm" "$python" -m pytest -m slurm --basetemp "$shared/s" \
		${cov[@]+"${cov[@]}"} "$@"
}

set +e
slurm_pid=
if (($# == 0)); then
	# A failed start (or exit 3, cannot install here) is the cluster fixture's to report.
	(
		containers/slurm/up.sh "$slurm_state" >"$shared/slurm-up.log" 2>&1
		REPROHUNT_SLURM_STATE=$slurm_state slurm_tests
	) >"$shared/slurm-tests.log" 2>&1 &
	slurm_pid=$!
fi
# pytest exits 5 when it collects nothing: that passes only if nothing was there to collect.
COVERAGE_FILE="$root/.coverage-main" "$python" -m pytest -n "$workers" --dist loadgroup \
	-m "not slurm" --basetemp "$shared/m" ${cov[@]+"${cov[@]}"} "$@"
main_rc=$?
if [[ -n $slurm_pid ]]; then
	echo "pytest: waiting for the SLURM file, started beside the rest"
	wait "$slurm_pid"
	slurm_rc=$?
	cat "$shared/slurm-tests.log"
else
	slurm_tests "$@"
	slurm_rc=$?
fi
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

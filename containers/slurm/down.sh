#!/usr/bin/env bash
# Stop the cluster that containers/slurm/up.sh started in STATE_DIR (default: .slurm/):
#   containers/slurm/down.sh [STATE_DIR]
# Its jobs are cancelled first, then each daemon is stopped through its PID file, and only if
# that process carries this STATE_DIR's marker (never by process name; a stale PID file is
# ignored). The folder is kept (logs); delete it to start from nothing.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${1:-${REPROHUNT_SLURM_STATE:-$REPO/.slurm}}
[[ -d $STATE ]] || {
  echo "slurm-down: no cluster state in $STATE" >&2
  exit 0
}
STATE=$(cd "$STATE" && pwd)
export SLURM_CONF=$STATE/etc/slurm.conf

log() { echo "slurm-down: $*" >&2; }

# shellcheck source=containers/slurm/pid-of.sh
source "$REPO/containers/slurm/pid-of.sh"

stop() {
  local name=$1 pid deadline started=$SECONDS
  pid=$(pid_of "$name") || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + 20))
  while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if [[ -e /proc/$pid ]]; then
    log "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/run/$name.pid"
  log "stopped $name (pid $pid) in $((SECONDS - started)) s"
}

# Jobs first, while slurmctld and slurmd can still end their processes.
if pid_of slurmctld >/dev/null; then
  jobs=$(squeue -h -o '%i' 2>/dev/null || true)
  if [[ -n $jobs ]]; then
    log "cancelling jobs: $(tr '\n' ' ' <<<"$jobs")"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    deadline=$((SECONDS + 30))
    while [[ -n $(squeue -h -o '%i' 2>/dev/null) ]] && ((SECONDS < deadline)); do
      sleep 0.5
    done
  fi
fi
for daemon in slurmd slurmctld slurmdbd mariadb munged; do
  stop "$daemon"
done

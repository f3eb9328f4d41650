#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster with accounting, as root, without systemd:
#   containers/slurm/up.sh [STATE_DIR]        (default: .slurm/ in the repository root)
#   source STATE_DIR/env.sh                   (SLURM_CONF for sbatch, sacct, snakemake)
#   containers/slurm/down.sh [STATE_DIR]      (stops exactly the daemons this script started)
#
# Daemons, in start order: munged, mariadbd (its own datadir, 127.0.0.1 only), slurmdbd,
# slurmctld, slurmd. Everything (keys, configs, databases, spool, logs, PID files, sockets)
# lives under STATE_DIR; nothing in /etc is written. Ports are free ones picked on the first
# start and kept in STATE_DIR/ports.env. Idempotent: a daemon whose PID file names a live
# process of this STATE_DIR is left running. Installs Debian 12's packages when missing.
# The state path must stay short: it holds UNIX sockets (108 bytes at most).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${1:-${REPROHUNT_SLURM_STATE:-$REPO/.slurm}}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
CLUSTER=reprohunt
ACCOUNT=reprohunt
PARTITION=debug
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server mariadb-client)
COMMANDS=(munged munge unmunge mariadbd mariadb mariadb-admin mariadb-install-db
  slurmdbd slurmctld slurmd sacctmgr scontrol sinfo sbatch srun sacct squeue scancel)
# Seconds to wait for each daemon to answer.
WAIT_S=${REPROHUNT_SLURM_WAIT_S:-60}

log() { echo "slurm-up: $*" >&2; }
die() {
  echo "slurm-up: error: $*" >&2
  exit 1
}
# Exit 3: the packages are missing and cannot be installed here (tests skip on it).
cannot_install() {
  echo "slurm-up: cannot install the SLURM packages: $*" >&2
  exit 3
}

missing_commands() {
  local missing=() command
  for command in "${COMMANDS[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$command")
  done
  echo "${missing[*]}"
}

install_packages() {
  local missing
  missing=$(missing_commands)
  [[ -z $missing ]] && return 0
  [[ $(id -u) -eq 0 ]] ||
    cannot_install "missing $missing; as root: apt-get install ${PACKAGES[*]}"
  command -v apt-get >/dev/null || cannot_install "missing $missing and no apt-get (Debian 12)"
  log "installing ${PACKAGES[*]} (missing: $missing)"
  # Keep the packages' init scripts from starting system-wide daemons (policy-rc.d, as in
  # Debian's container images); an existing policy is left as it is.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  local rc=0
  {
    apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${PACKAGES[@]}"
  } >"$STATE/apt.log" 2>&1 || rc=$?
  ((own_policy)) && rm -f "$policy"
  ((rc == 0)) ||
    cannot_install "apt-get failed (exit $rc), see $STATE/apt.log: $(tail -n 5 "$STATE/apt.log")"
  missing=$(missing_commands)
  [[ -z $missing ]] || die "still missing after install: $missing"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# shellcheck source=containers/slurm/pid-of.sh
source "$REPO/containers/slurm/pid-of.sh"

wait_for() {
  local what=$1 logfile=$2
  shift 2
  local deadline=$((SECONDS + WAIT_S))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "$what did not come up in ${WAIT_S}s; last lines of $logfile:
$(tail -n 20 "$logfile" 2>/dev/null)"
    fi
    sleep 0.2
  done
}

layout() {
  mkdir -p "$STATE"/{etc,run,log,mariadb,spool/slurmctld,spool/slurmd,munge}
  chmod 700 "$STATE/munge" "$STATE/etc"
  if [[ ! -s $STATE/ports.env ]]; then
    {
      echo "MARIADB_PORT=$(free_port)"
      echo "SLURMDBD_PORT=$(free_port)"
      echo "SLURMCTLD_PORT=$(free_port)"
      echo "SLURMD_PORT=$(free_port)"
    } >"$STATE/ports.env"
  fi
  # shellcheck source=/dev/null
  source "$STATE/ports.env"
  if [[ ! -s $STATE/munge/munge.key ]]; then
    (umask 077 && head -c 1024 /dev/urandom >"$STATE/munge/munge.key")
  fi
  if [[ ! -s $STATE/etc/db-password ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$STATE/etc/db-password")
  fi
  DB_PASSWORD=$(cat "$STATE/etc/db-password")
  MUNGE_SOCKET=$STATE/run/munge.socket
  MARIADB_SOCKET=$STATE/run/mariadb.socket
  (( ${#MUNGE_SOCKET} < 100 )) || die "state path too long for a UNIX socket: $STATE"
}

node_line() {
  # slurmd -C describes this machine; never advertise more CPUs than this process may use.
  local detected cpus hostname memory
  detected=$(slurmd -C | head -n 1)
  hostname=$(sed -n 's/.*NodeName=\([^ ]*\).*/\1/p' <<<"$detected")
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$detected")
  memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$detected")
  local allowed
  allowed=$(nproc)
  if ((cpus > allowed)); then
    # Fewer CPUs than the hardware: a flat layout, which slurmd accepts (config_overrides).
    echo "NodeName=$hostname NodeAddr=127.0.0.1 CPUs=$allowed RealMemory=$memory State=UNKNOWN"
  else
    echo "${detected/NodeName=$hostname/NodeName=$hostname NodeAddr=127.0.0.1} State=UNKNOWN"
  fi
}

write_configs() {
  local node
  node=$(node_line)
  NODE_NAME=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node")
  cat >"$STATE/etc/slurm.conf" <<EOF
# Generated by containers/slurm/up.sh for a throw-away single-node cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE_NAME(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups (containers, no systemd): track a job step by its process group, bind nothing.
# proctrack/linuxproc lost a cancelled hunt: once the step's shell died, the hunt process was
# re-parented to init, out of the tree it signals, and went on running trials.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# sacct (which snakemake-executor-plugin-slurm polls) needs slurmdbd.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$SLURMDBD_PORT
# Messages to slurmdbd authenticate through this MUNGE socket (not AuthInfo).
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
# Keep sbatch --comment (the plugin puts rule_<name> there) for sacct.
AccountingStoreFlags=job_comment
MpiDefault=none
SchedulerType=sched/backfill
# CPUs (not cores) are the unit, so jobs asking one CPU each share a hyper-threaded core.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
$node
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  (
    umask 077
    cat >"$STATE/etc/slurmdbd.conf" <<EOF
# Generated by containers/slurm/up.sh.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MARIADB_PORT
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
  )
  # snakemake-executor-plugin-slurm-jobstep drops SLURM_CONF from the environment of the srun
  # it starts inside each job, which is fine where the config is /etc/slurm/slurm.conf; this
  # cluster's is not, so its srun is found first on PATH and is given the config.
  mkdir -p "$STATE/bin"
  local real_srun
  real_srun=$(PATH=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$STATE/bin" | paste -sd :) &&
    command -v srun)
  cat >"$STATE/bin/srun" <<EOF
#!/bin/sh
SLURM_CONF=$STATE/etc/slurm.conf exec $real_srun "\$@"
EOF
  chmod 755 "$STATE/bin/srun"
  cat >"$STATE/env.sh" <<EOF
# source this file to use the cluster of $STATE
export SLURM_CONF=$STATE/etc/slurm.conf
export PATH=$STATE/bin:\$PATH
EOF
}

start_munge() {
  pid_of munged >/dev/null && return 0
  munged --force --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed" </dev/null >>"$STATE/log/munged.start.log" 2>&1
  wait_for munged "$STATE/log/munged.log" \
    bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
}

mariadb_sql() {
  mariadb --no-defaults --socket="$MARIADB_SOCKET" -u root "$@"
}

start_mariadb() {
  pid_of mariadb >/dev/null && return 0
  if [[ ! -d $STATE/mariadb/mysql ]]; then
    mariadb-install-db --no-defaults --datadir="$STATE/mariadb" --user=root \
      --skip-test-db --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed: $(tail -n 20 "$STATE/log/mariadb-install.log")"
  fi
  # Settings slurmdbd asks for (innodb lock wait, log and buffer sizes); no binary log.
  mariadbd --no-defaults --user=root --datadir="$STATE/mariadb" --socket="$MARIADB_SOCKET" \
    --port="$MARIADB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --pid-file="$STATE/run/mariadb.pid" --log-error="$STATE/log/mariadb.log" \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
    --skip-log-bin </dev/null >>"$STATE/log/mariadb.start.log" 2>&1 &
  disown
  wait_for mariadbd "$STATE/log/mariadb.log" \
    mariadb-admin --no-defaults --socket="$MARIADB_SOCKET" -u root ping
  mariadb_sql -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  pid_of slurmdbd >/dev/null && return 0
  slurmdbd </dev/null >>"$STATE/log/slurmdbd.start.log" 2>&1
  wait_for slurmdbd "$STATE/log/slurmdbd.log" sacctmgr -n show cluster
}

register_accounts() {
  # sacctmgr -i: no questions; an existing entry is left (and reported) as it is.
  if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
  if ! sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=reprohunt \
      organization=reprohunt >/dev/null
  fi
  local user
  user=$(id -un)
  if ! sacctmgr -n -P show assoc where user="$user" account="$ACCOUNT" format=user |
    grep -qx "$user"; then
    sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
  fi
  # root comes with an association to account root; jobs without -A go to ours.
  sacctmgr -i modify user where name="$user" set defaultaccount="$ACCOUNT" >/dev/null || true
}

start_slurmctld() {
  pid_of slurmctld >/dev/null && return 0
  slurmctld </dev/null >>"$STATE/log/slurmctld.start.log" 2>&1
  wait_for slurmctld "$STATE/log/slurmctld.log" scontrol ping
}

node_idle() {
  sinfo -h -n "$NODE_NAME" -o '%T' | grep -Eq '^(idle|mixed|allocated)$'
}

start_slurmd() {
  if ! pid_of slurmd >/dev/null; then
    slurmd </dev/null >>"$STATE/log/slurmd.start.log" 2>&1
  fi
  local deadline=$((SECONDS + WAIT_S))
  until node_idle; do
    # A node a previous cluster of this folder marked down comes back at once.
    if sinfo -h -n "$NODE_NAME" -o '%T' | grep -Eq '^(down|drained|draining)'; then
      scontrol update nodename="$NODE_NAME" state=resume >/dev/null 2>&1 || true
    fi
    ((SECONDS < deadline)) || die "node $NODE_NAME not idle after ${WAIT_S}s: $(sinfo -N -l 2>&1)
$(tail -n 20 "$STATE/log/slurmd.log" 2>/dev/null)"
    sleep 0.2
  done
}

started=$SECONDS
install_packages
layout
write_configs
export SLURM_CONF=$STATE/etc/slurm.conf REPROHUNT_SLURM_STATE=$STATE
start_munge
start_mariadb
start_slurmdbd
register_accounts
start_slurmctld
start_slurmd
log "cluster $CLUSTER up in $((SECONDS - started)) s: node $NODE_NAME, partition $PARTITION," \
  "account $ACCOUNT; state in $STATE"
log "use it with: source $STATE/env.sh"

#!/usr/bin/env bash
# Install Debian packages for the commands that are missing, the way the test set-up needs them:
#   containers/ensure-packages.sh LOG PACKAGE:COMMAND[,COMMAND…] …
# A package is installed only when one of its commands is not on PATH. Exit 0 when every command
# is there afterwards, 3 when they are missing and cannot be installed here (not root, no
# apt-get, apt-get failed: tests skip on 3 and say why), 1 when still missing after an install.
# Init scripts are kept from starting system-wide daemons (policy-rc.d, as in Debian's images).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

LOG=$1
shift
cannot_install() {
  echo "ensure-packages: cannot install $*" >&2
  exit 3
}

# Sets packages and missing: the packages with a command not on PATH, and those commands.
find_missing() {
  packages=() missing=()
  local spec package command commands
  for spec in "$@"; do
    package=${spec%%:*}
    IFS=, read -r -a commands <<<"${spec#*:}"
    for command in "${commands[@]}"; do
      if ! command -v "$command" >/dev/null 2>&1; then
        packages+=("$package")
        missing+=("$command")
        break
      fi
    done
  done
}

find_missing "$@"
((${#packages[@]} == 0)) && exit 0
[[ $(id -u) -eq 0 ]] || cannot_install "${packages[*]} (missing ${missing[*]}): not root; as root: apt-get install ${packages[*]}"
command -v apt-get >/dev/null || cannot_install "${packages[*]} (missing ${missing[*]}): no apt-get (Debian 12)"
# One install at a time (tests install chromium or qemu while the SLURM cluster starts beside
# them): apt-get would fail on its own lock. After the wait, another may have installed ours.
exec 9>>/tmp/reprohunt-ensure-packages.lock
flock -w 1800 9 || cannot_install "${packages[*]}: another install held the lock for 30 min"
find_missing "$@"
((${#packages[@]} == 0)) && exit 0
echo "ensure-packages: installing ${packages[*]} (missing: ${missing[*]}); log: $LOG" >&2
mkdir -p "$(dirname "$LOG")"
policy=/usr/sbin/policy-rc.d own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  own_policy=1
fi
rc=0
{
  apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
} >"$LOG" 2>&1 9>&- || rc=$?
((own_policy)) && rm -f "$policy"
((rc == 0)) || cannot_install "${packages[*]}: apt-get failed (exit $rc), see $LOG: $(tail -n 5 "$LOG")"
for command in "${missing[@]}"; do
  command -v "$command" >/dev/null || {
    echo "ensure-packages: still missing after the install: $command" >&2
    exit 1
  }
done

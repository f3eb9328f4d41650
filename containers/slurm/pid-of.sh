# Sourced by up.sh and down.sh (STATE set): the one test of whether a PID file names one of our
# daemons — the process lives and carries our marker variable. Never by process name.
pid_of() {
  local file=$STATE/run/$1.pid pid
  [[ -s $file ]] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [[ -n $pid && -r /proc/$pid/environ ]] || return 1
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "REPROHUNT_SLURM_STATE=$STATE" ||
    return 1
  echo "$pid"
}

#!/usr/bin/env bash
# Stop the one-node Slurm cluster started by .ci/slurm-up.sh, through its pid files (never by process name).
# Pass --munge to stop munged too.
set -uo pipefail
SLURM_LOCAL_DIR="${SLURM_LOCAL_DIR:-/tmp/slurm}"

stop() {
  local name=$1 pidfile=$2
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    local pid; pid=$(cat "$pidfile")
    echo "slurm-down: stopping $name (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
}

stop slurmd "$SLURM_LOCAL_DIR/slurmd.pid"
stop slurmctld "$SLURM_LOCAL_DIR/slurmctld.pid"
if [[ "${1:-}" == "--munge" ]]; then
  stop munged "$SLURM_LOCAL_DIR/munged.pid"
fi
exit 0

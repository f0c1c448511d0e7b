#!/usr/bin/env bash
# Stops the cluster that scripts/slurm-up.sh started: slurmd first (it must not
# be left without its controller), then slurmctld, by their pid files only.
# munged is left running: it is harmless and other users of munge may need it.
set -uo pipefail

DIR=${SLURM_DIR:-/tmp/incrpipe-slurm}

stop() {
  local pidfile=$1
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    # A slurmd that lost its controller may ignore SIGTERM.
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

stop "$DIR/slurmd.pid"
stop "$DIR/slurmctld.pid"
echo "slurm-down: stopped the daemons of $DIR" >&2

#!/usr/bin/env bash
# Alternates `incrpipe bench runner` between two builds of incrpipe and prints each
# cold run: the runner overhead before and after a change, measured in one series
# (this machine's speed drifts by 2x within an hour, so separate runs do not compare).
#   scripts/runner-ab.sh OLD_BINARY NEW_BINARY [JOBS] [ROUNDS]
# Each run waits 65 s first: the previous run's cleanup deleted ~10,000 inodes, and
# ext4 without a journal scans past inodes freed in the last 60 s on every allocation.
set -euo pipefail
old=$1 new=$2 jobs=${3:-1} rounds=${4:-3}
for r in $(seq "$rounds"); do
  for b in "$old" "$new"; do
    sync
    sleep 65
    echo "== round $r: $b -j $jobs"
    "$b" bench runner --jobs "$jobs" --repeats 1 | grep -E 'cold run|overhead|alone'
  done
done

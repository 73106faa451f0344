#!/usr/bin/env bash
# Stop the test SLURM started by slurm_up.sh (by pid file).
BASE=${BASE:-${TMPDIR:-/tmp}/sec-nb-slurm}
for d in slurmd slurmctld; do
  [ -f "$BASE/run/$d.pid" ] && kill "$(cat "$BASE/run/$d.pid")" 2>/dev/null || true
done

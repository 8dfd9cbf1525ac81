#!/usr/bin/env bash
# The simulation's long run: random seeds (consecutive from a clock-derived start, or from
# START) until SECONDS of CPU time are spent, in a release build. Prints every failing seed
# with its replay command, then the seeds covered, simulated deliveries and deliveries per
# CPU-second. Exit status 1 when a seed failed.
#   sim/run.sh 600            # ten minutes
#   START=42 sim/run.sh 60    # seeds from 42
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
cargo build --release -q -p rmox-sim
args=(--secs "$secs")
if [ -n "${START:-}" ]; then
  args+=(--start "$START")
fi
exec ./target/release/rmox-sim "${args[@]}"

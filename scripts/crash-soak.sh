#!/usr/bin/env bash
# The exactly-once soak: every Nexmark query that supports checkpoints, interrupted N times at
# random moments (after 1–3 more checkpoints and 0–250 ms, at most a quarter of an uninterrupted
# run's time) — with SIGKILL, or one time in three with SIGTERM, a graceful stop that must exit
# 0 with "stopped" in its summary — restarted at 1, 2, 2, 1, 3 workers in turn, and its
# committed Parquet (read back with pyarrow, streamed) compared with an uninterrupted run's. A
# query that reaches the end of its input before all N interruptions land is run again from an
# empty output (another round); every round must be interrupted at least once and is compared.
# Prints a table: query, kills, graceful stops, restarts (runs resumed from a checkpoint),
# rounds, rows (of each round's output), differences (every one must be 0: a difference fails
# the run with up to 5 of the rows that differ). The comparison keeps 16 bytes per distinct row,
# not the rows, so any event count fits in memory.
#
#   bash scripts/crash-soak.sh 20            # 20 interruptions per query, 1 M events each
#   EDDY_SOAK_EVENTS=4000000 bash scripts/crash-soak.sh 50
#   EDDY_CRASH_SEED=123 bash scripts/crash-soak.sh 5   # replays the interruptions of a seed
#
# Needs pyarrow (pip install pyarrow). Not part of CI: it takes minutes per query.
set -euo pipefail
cd "$(dirname "$0")/.."
interruptions="${1:-10}"
EDDY_SOAK_KILLS="$interruptions" cargo test --release -p eddy-queries --test exactly_once soak \
  -- --ignored --nocapture --test-threads 1

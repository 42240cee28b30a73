#!/usr/bin/env bash
# The exactly-once soak: every Nexmark query that supports checkpoints, killed with SIGKILL N
# times at random moments (after 1–3 more checkpoints and 0–250 ms), restarted at 1, 2, 2, 1,
# 3 workers in turn, and its committed Parquet (read back with pyarrow) compared with an
# uninterrupted run's. Prints a table: query, kills, restarts, rows compared, differences
# (every one must be 0; a difference fails the run with the rows that differ).
#
#   bash scripts/crash-soak.sh 20            # 20 kills per query, 1 M events each
#   EDDY_SOAK_EVENTS=3000000 bash scripts/crash-soak.sh 50
#   EDDY_CRASH_SEED=123 bash scripts/crash-soak.sh 5   # replays the kill moments of a seed
#
# Needs pyarrow (pip install pyarrow). Not part of CI: it takes minutes per query.
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${1:-10}"
EDDY_SOAK_KILLS="$kills" cargo test --release -p eddy-queries --test exactly_once soak \
  -- --ignored --nocapture --test-threads 1

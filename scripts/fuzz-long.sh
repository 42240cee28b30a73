#!/usr/bin/env bash
# The long run of the property tests over every decoder and parser that takes outside bytes
# (docs/reliability.md): each `fuzz_*` test, one at a time, with PROPTEST_CASES cases (10^6 by
# default; CI runs 256 of each within `cargo test`). Prints each target's cases and seconds.
# A failure stops the run and proptest prints the smallest failing input (and saves it under
# proptest-regressions/, to check in so that CI replays it).
#
#   bash scripts/fuzz-long.sh                   # 10^6 cases per target (hours, in a debug build)
#   PROPTEST_CASES=20000 bash scripts/fuzz-long.sh
#   EDDY_FUZZ_PROFILE=release bash scripts/fuzz-long.sh   # faster cases, a longer build
#
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${PROPTEST_CASES:-1000000}"
profile=(--profile "${EDDY_FUZZ_PROFILE:-dev}")
targets=(
  "eddy-connectors fuzz::fuzz_json_lines_every_line_is_one_record_or_one_rejection"
  "eddy-connectors fuzz::fuzz_csv_splitting_accounts_for_every_byte_and_line"
  "eddy-connectors fuzz::fuzz_csv_rows_are_read_back_or_rejected_one_for_one"
  "eddy-connectors fuzz::fuzz_endpoint_uris_parse_or_fail_cleanly"
  "eddy-connectors webhook::tests::fuzz::fuzz_webhook_bodies_are_refused_or_every_record_decodes"
  "eddy-connectors webhook::tests::fuzz::fuzz_ndjson_batches_split_one_record_per_line"
  "eddy-connectors webhook_wal::tests::fuzz::fuzz_wal_segments_give_back_whole_requests_or_skip_them"
  "eddy-connectors webhook_wal::tests::fuzz::fuzz_wal_arbitrary_segments_and_positions_never_panic"
  "eddy-engine checkpoint::tests::fuzz::fuzz_checkpoint_files_unseal_or_are_named_damaged"
  "eddy-engine checkpoint::tests::fuzz::fuzz_manifests_parse_or_fail_cleanly"
  "eddy-engine checkpoint::tests::fuzz::fuzz_part_names_round_trip_and_others_are_not_parts"
  "eddy-engine checkpoint::tests::fuzz::fuzz_part_payloads_decode_or_fail_cleanly"
)
for package in eddy-connectors eddy-engine; do
  cargo test "${profile[@]}" -p "$package" --lib --no-run
done
printf '%-80s %10s %9s\n' target cases seconds
for target in "${targets[@]}"; do
  read -r package name <<<"$target"
  start=$(date +%s.%N)
  if ! out=$(cargo test -q "${profile[@]}" -p "$package" --lib "$name" -- --exact 2>&1); then
    echo "$out"
    echo "FAILED: $name" >&2
    exit 1
  fi
  grep -q "1 passed" <<<"$out" || { echo "$out"; echo "did not run: $name" >&2; exit 1; }
  seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '%-80s %10s %9s\n' "$name" "$PROPTEST_CASES" "$seconds"
done

#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60), seeded from fuzz/seeds, on
# the stable toolchain (cargo-fuzz with --sanitizer none). Prints each target's final statistics; a
# crash stops the script and leaves its input in fuzz/artifacts. See docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd fuzz
for target in sip_message sip_endpoint sdp graph_bodies callback_uri access_token token_form config sim_behaviour; do
  case $target in
    sip_*) seeds=seeds/sip ;;
    *) seeds=seeds/$target ;;
  esac
  mkdir -p "corpus/$target"
  echo "== $target, ${secs}s"
  cargo fuzz run --sanitizer none "$target" "corpus/$target" "$seeds" -- \
    -max_total_time="$secs" -print_final_stats=1 2>&1 | grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|^#.*DONE|ERROR|panicked|SUMMARY' || true
  [ -z "$(ls artifacts/$target 2>/dev/null)" ] || { echo "fuzz: $target found a failing input in fuzz/artifacts/$target" >&2; exit 1; }
done

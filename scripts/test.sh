#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: unit tests of the pure core and the server, property
# tests, and the integration tests that start real `switchboard` processes on loopback.
# Installs what it needs idempotently (today: nothing beyond the Rust toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

echo "== build"
cargo build --workspace --all-targets --locked
echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (unit, property and integration tests).
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
exit "$status"

#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: unit tests of the pure core and the server, property
# tests, the integration tests that start real `switchboard` processes on loopback, and the
# conformance suites that drive it with Microsoft's own Graph clients (Python and JavaScript) and
# Schemathesis. Installs what it needs idempotently: Python venvs from PyPI, npm packages.
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
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')

# Conformance, against the binary just built. Schemathesis and the JavaScript check write their
# results to target/conformance/, which the Python suite folds into docs/CONFORMANCE.md.
export SWITCHBOARD_BIN="$PWD/target/debug/switchboard"
rm -rf target/conformance
conformance=0
for suite in schemathesis/run.sh js/run.sh run.sh; do
  echo "== conformance: $suite"
  if bash "conformance/$suite"; then passed=$((passed + 1)); else failed=$((failed + 1)); conformance=1; fi
done
if ! git diff --quiet -- docs/CONFORMANCE.md 2>/dev/null; then
  echo "note: docs/CONFORMANCE.md changed in this run; commit it with the change that caused it"
fi

# One closing line over every test binary (unit, property and integration tests) and the three
# conformance suites (each counted once here; their own lines above give the detail).
echo "tests: $passed passed, $failed failed"
if [ "$status" -ne 0 ] || [ "$conformance" -ne 0 ]; then exit 1; fi

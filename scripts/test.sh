#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: unit tests of the pure core and the server, property
# tests, the store conformance suite on SQLite, in memory and on PostgreSQL, the integration tests
# that start real `switchboard` processes on loopback, and the conformance suites that drive it with
# Microsoft's own Graph clients (Python and JavaScript) and Schemathesis, and the console in Debian's
# chromium (headless, through playwright-core). Installs what it needs idempotently: PostgreSQL and
# chromium from Debian, Python venvs from PyPI, npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

# PostgreSQL's server, for the PostgreSQL store's tests: each starts a throwaway cluster of its own on a
# free loopback port (crates/switchboard-postgres/src/testing.rs). HAProxy, for the three-node tests
# (docs/haproxy.cfg). SIPp (sip-tester), baresip and linphonec (linphone-cli), the SIP user agents of the
# SIP tests. Installed once, from Debian.
missing=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
command -v sipp >/dev/null 2>&1 || missing="$missing sip-tester"
command -v baresip >/dev/null 2>&1 || missing="$missing baresip"
command -v linphonec >/dev/null 2>&1 || missing="$missing linphone-cli"
if [ -n "$missing" ]; then
  echo "== installing$missing (Debian's packages)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi
export PATH="$PATH:/usr/sbin"

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

# The benchmark suite's machinery, with tiny counts on the debug build: every phase runs and the summary
# line comes out. No timing is asserted (figures come from `scripts/bench`, on a quiet machine).
echo "== benchmark smoke: scripts/bench --smoke"
bench_log=$(mktemp)
trap 'rm -f "$log" "$bench_log"' EXIT
summary='^bench: anchor_rps=[0-9.]+ get_rps=[0-9.]+ get_ratio=[0-9.]+ e2e_tps=[0-9.]+ transfer_p99_ms=[0-9.]+ notify_p99_ms=[0-9.]+ rss_per_call_bytes=[0-9.]+ recover_100k_s=[0-9.]+$'
bench=0
if bash scripts/bench --smoke >"$bench_log" 2>&1 && tail -1 "$bench_log" | grep -Eq "$summary" && ! grep -Eq '"errors": [1-9]' target/bench-smoke.json; then
  passed=$((passed + 1))
  tail -1 "$bench_log"
else
  failed=$((failed + 1))
  bench=1
  echo "benchmark smoke FAILED:"; tail -30 "$bench_log"
fi

# Conformance, against the binary just built. Schemathesis and the JavaScript check write their
# results to target/conformance/, which the Python suite folds into docs/CONFORMANCE.md.
export SWITCHBOARD_BIN="$PWD/target/debug/switchboard"
rm -rf target/conformance
conformance=0
suite_log=$(mktemp)
trap 'rm -f "$log" "$bench_log" "$suite_log"' EXIT
for suite in conformance/schemathesis/run.sh conformance/js/run.sh conformance/console/run.sh examples/run.sh conformance/run.sh; do
  echo "== $suite"
  set +e
  bash "$suite" 2>&1 | tee "$suite_log"
  suite_status=${PIPESTATUS[0]}
  set -e
  [ "$suite_status" -eq 0 ] || conformance=1
  # The JS, console, examples and Python suites end with "<name>: N passed, M failed"; Schemathesis
  # counts as one test.
  last=$(grep -E '^[a-z]+: [0-9]+ passed, [0-9]+ failed$' "$suite_log" | tail -1 || true)
  if [ -n "$last" ]; then
    passed=$((passed + $(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$last")))
    failed=$((failed + $(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"$last")))
  elif [ "$suite_status" -eq 0 ]; then
    passed=$((passed + 1))
  fi
  if [ "$suite_status" -ne 0 ] && [ -z "$last" ]; then failed=$((failed + 1)); fi
done
if ! git diff --quiet -- docs/CONFORMANCE.md 2>/dev/null; then
  echo "note: docs/CONFORMANCE.md changed in this run; commit it with the change that caused it"
fi

# One closing line over every test binary (unit, property and integration tests) and the conformance
# suites (Python and JavaScript tests one by one, the Schemathesis run as one), and the benchmark smoke.
echo "tests: $passed passed, $failed failed"
if [ "$status" -ne 0 ] || [ "$conformance" -ne 0 ] || [ "$bench" -ne 0 ]; then exit 1; fi

#!/usr/bin/env bash
# Runs the Graph conformance suite against a switchboard binary ($SWITCHBOARD_BIN, default
# $ROOT/target/debug/switchboard). Idempotent: creates conformance/.venv on first use and reinstalls
# only when requirements.txt changed (hash stamp in the venv); no network needed after that.
# Writes docs/CONFORMANCE.md. Extra arguments go to pytest.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="$HERE/.venv"
export SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$ROOT/target/debug/switchboard}"

if [[ ! -x "$SWITCHBOARD_BIN" ]]; then
  echo "conformance: no switchboard binary at $SWITCHBOARD_BIN (set SWITCHBOARD_BIN or build it)" >&2
  echo "conformance: 0 passed, 1 failed"
  exit 1
fi

want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  echo "$want" > "$VENV/.requirements.sha256"
fi

cd "$HERE"
report="$VENV/last-run.txt"
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -rfEX "$@" 2>&1 | tee "$report"
status=${PIPESTATUS[0]}
set -e

# pytest's summary line, e.g. "12 passed, 1 failed, 9 xfailed in 40.1s": errors and strict xpasses count as failures.
summary="$(grep -E '^[0-9]+ [a-z]+.* in [0-9.]+s' "$report" | tail -1 || true)"
count() { local n; n="$(grep -oE "[0-9]+ $1\b" <<<"$summary" | head -1 | cut -d' ' -f1)"; echo "${n:-0}"; }
passed=$(count passed)
failed=$(( $(count failed) + $(count errors?) ))
if [[ $status -ne 0 && $failed -eq 0 ]]; then failed=1; fi
echo "conformance: $passed passed, $failed failed"
exit "$status"

#!/usr/bin/env bash
# Runs the examples against a throwaway HTTPS server, as the test command does, so that they cannot
# rot: the curl walkthrough, then the Python SDK bot (in the conformance suite's venv, with its pinned
# packages) and its JavaScript twin. Prints "examples: N passed, M failed".
# Env: SWITCHBOARD_BIN (default $ROOT/target/debug/switchboard).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN="${SWITCHBOARD_BIN:-$ROOT/target/debug/switchboard}"
[ -x "$BIN" ] || { echo "switchboard binary not found at $BIN (build it or set SWITCHBOARD_BIN)" >&2; exit 2; }

# The Python SDKs, pinned as for the conformance suite (the same venv, made the same way).
VENV="$ROOT/conformance/.venv"
want="$(sha256sum "$ROOT/conformance/requirements.txt" | cut -d' ' -f1)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/conformance/requirements.txt"
  echo "$want" > "$VENV/.requirements.sha256"
fi

source "$ROOT/conformance/server.sh"
# The JavaScript client, pinned by its lock; reinstalled only when the lock changes.
npm_ci_when_lock_changes "$HERE/js"
# The bots listen here.
PORT="$(free_port_below_ephemeral)"
start_switchboard --tls --demo-webhook "http://127.0.0.1:$PORT/api/calls" --legacy-webhook http://127.0.0.1:9/api/calls
[ -n "$BASE" ] || { cat "$WORK/server.err" >&2; echo "examples: 0 passed, 1 failed"; exit 1; }
CA="$WORK/data/tls/cert.pem"
passed=0 failed=0
run() {
  echo "== examples/$1"
  if timeout 120 "${@:2}"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL examples/$1"; fi
}
# Nothing listens on the bot's port during the walkthrough: it needs no bot.
run curl-walkthrough.sh env B="$BASE" CURL_CA_BUNDLE="$CA" bash "$HERE/curl-walkthrough.sh"
run python/transfer_bot.py "$VENV/bin/python" "$HERE/python/transfer_bot.py" --base "$BASE" --ca "$CA" --listen "127.0.0.1:$PORT" --demo
run js/transfer_bot.mjs env BASE="$BASE" LISTEN="127.0.0.1:$PORT" NODE_EXTRA_CA_CERTS="$CA" node "$HERE/js/transfer_bot.mjs" --demo
echo "examples: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

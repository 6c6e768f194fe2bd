#!/usr/bin/env bash
# Blind and consultative transfer through the Microsoft Graph JavaScript client (transfer.mjs).
#
# Installs the pinned client with `npm ci` when node_modules is missing or package-lock.json changed,
# starts a throwaway HTTPS server (unless BASE is given), runs transfer.mjs, and writes
# target/conformance/js.json ({"ok": bool, "checks": [...]}). Exits non-zero on any failed check.
#
# Env: SWITCHBOARD_BIN (default $ROOT/target/debug/switchboard).
#      BASE (+ CA, the server's certificate, for https) to use a running server instead; its Demo Bot
#      webhook must be http://127.0.0.1:$WEBHOOK_PORT/api/calls (default 3978, the demo's).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${SWITCHBOARD_BIN:-$ROOT/target/debug/switchboard}"
export OUT="$ROOT/target/conformance/js.json"
mkdir -p "$ROOT/target/conformance"

source "$HERE/../server.sh"
npm_ci_when_lock_changes "$HERE"

if [ -z "${BASE:-}" ]; then
  [ -x "$BIN" ] || { echo "switchboard binary not found at $BIN (build it or set SWITCHBOARD_BIN)" >&2; exit 2; }
  # The receiver in transfer.mjs listens on this port.
  WEBHOOK_PORT="$(free_port_below_ephemeral)"
  # HTTPS: the Graph client attaches the token only to https URLs.
  start_switchboard --tls --demo-webhook "http://127.0.0.1:$WEBHOOK_PORT/api/calls"
  if [ -z "$BASE" ]; then
    cat "$WORK/server.err" >&2
    echo '{"ok": false, "checks": [{"name": "server starts", "ok": false}]}' > "$OUT"
    exit 1
  fi
  CA="$WORK/data/tls/cert.pem"
  export WEBHOOK_PORT
fi
echo "== server $BASE"
export BASE
# Node reads extra trusted certificates only at startup, so it goes in the environment of the run.
[ -n "${CA:-}" ] && export NODE_EXTRA_CA_CERTS="$CA"
set +e
timeout --kill-after=5 120 node "$HERE/transfer.mjs"
status=$?
set -e
if [ $status -ne 0 ] && [ -n "$SERVER_PID" ]; then echo "-- server log (tail)"; tail -20 "$WORK/server.err"; fi
exit $status

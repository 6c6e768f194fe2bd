#!/usr/bin/env bash
# The console in a real browser: Debian's chromium, headless, driven by playwright-core (console.mjs).
#
# Installs chromium from Debian when it is missing and the pinned playwright-core with `npm ci` when
# node_modules is missing or package-lock.json changed; starts a throwaway server; runs console.mjs;
# writes target/conformance/console.json and the screenshots to target/console/ (and to docs/ with
# SWITCHBOARD_UPDATE_SCREENSHOTS=1). Exits non-zero on any failed check.
#
# Env: SWITCHBOARD_BIN (default $ROOT/target/debug/switchboard), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${SWITCHBOARD_BIN:-$ROOT/target/debug/switchboard}"
export OUT="$ROOT/target/conformance/console.json"
export SHOTS="$ROOT/target/console"
mkdir -p "$ROOT/target/conformance" "$SHOTS"

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "== installing chromium (Debian's package)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

source "$HERE/../server.sh"
npm_ci_when_lock_changes "$HERE"
[ -x "$BIN" ] || { echo "switchboard binary not found at $BIN (build it or set SWITCHBOARD_BIN)" >&2; exit 2; }
# The bot in console.mjs listens here.
WEBHOOK_PORT="$(free_port_below_ephemeral)"
export WEBHOOK_PORT
start_switchboard --demo-webhook "http://127.0.0.1:$WEBHOOK_PORT/api/calls"
if [ -z "$BASE" ]; then
  cat "$WORK/server.err" >&2
  echo '{"ok": false, "checks": [{"name": "server starts", "ok": false}]}' > "$OUT"
  echo "console: 0 passed, 1 failed"
  exit 1
fi
echo "== server $BASE"
export BASE
set +e
timeout --kill-after=5 120 node "$HERE/console.mjs"
status=$?
set -e
if [ $status -ne 0 ]; then echo "-- server log (tail)"; tail -20 "$WORK/server.err"; fi
if [ $status -eq 0 ] && [ -n "${SWITCHBOARD_UPDATE_SCREENSHOTS:-}" ]; then
  cp "$SHOTS/console.png" "$SHOTS/console-phone.png" "$ROOT/docs/"
fi
exit $status

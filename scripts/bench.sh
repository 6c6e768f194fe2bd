#!/usr/bin/env bash
# Quick local benchmark: GET call throughput against a bare handler (/healthz) measured in the same run,
# and the time from create call to the `established` notification. Prints figures and ratios.
# Needs wrk (apt-get install wrk) and python3. Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
cargo build --release -p switchboard --locked -q
data=$(mktemp -d); port=18480; botport=18479
trap 'kill $srv $bot 2>/dev/null; rm -rf "$data"' EXIT
./target/release/switchboard serve --listen 127.0.0.1:$port --data-dir "$data" \
  --demo-webhook http://127.0.0.1:$botport/api/calls >/dev/null 2>&1 & srv=$!
python3 scripts/bench_bot.py $botport & bot=$!
sleep 1
python3 scripts/bench_latency.py http://127.0.0.1:$port $botport > "$data/call.env"
. "$data/call.env"
echo "== GET /v1.0/communications/calls/{id} vs GET /healthz (wrk, 2 threads, 32 connections, 10 s each)"
base=$(wrk -t2 -c32 -d10s http://127.0.0.1:$port/healthz | awk '/Requests\/sec/ {print $2}')
get=$(wrk -t2 -c32 -d10s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:$port/v1.0/communications/calls/$CALL | awk '/Requests\/sec/ {print $2}')
echo "bare handler: $base req/s; GET call: $get req/s; ratio $(python3 -c "print(f'{$get/$base:.2f}')")"

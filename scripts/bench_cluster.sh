#!/usr/bin/env bash
# Several nodes, measured: SQLite on one node (the anchor), then PostgreSQL with 1, 2 and 3 nodes behind
# HAProxy (docs/haproxy.cfg), all on this machine. For each: GET /healthz and GET call throughput (wrk,
# 2 threads, 32 connections, 5 s) and the transfer load of scripts/bench_cluster.py. Writes
# target/bench-cluster.json and docs/BENCHMARKS.md. Needs PostgreSQL, HAProxy and wrk (installed
# from Debian if missing). Loopback only; about two minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${CALLS:-300}
missing=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi
export PATH="$PATH:/usr/sbin"
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
cargo build --release -p switchboard --locked -q
bin=./target/release/switchboard

work=$(mktemp -d); chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -d "$work/pg" ] && as_pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pgport=$(free_port)
mkdir -p "$work/pg"; [ "$(id -u)" = 0 ] && chown postgres: "$work/pg"
as_pg "$pgbin/initdb" -D "$work/pg" -A trust -U switchboard >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -o "-p $pgport -h 127.0.0.1 -k $work/pg" -w start >/dev/null

botport=$(free_port)
python3 scripts/bench_bot.py "$botport" & pids+=($!)

results="$work/results.jsonl"
run() { # name nodes store
  local name=$1 n=$2 store=$3 lb base ports=() node_pids=()
  echo "== $name" >&2
  lb=$(free_port); base="http://127.0.0.1:$lb"
  for i in $(seq 1 "$n"); do
    local port; port=$(free_port); ports+=("$port")
    local args=(serve --listen "127.0.0.1:$port" --data-dir "$work/$name-$i" --node-id "node-$i"
                --demo-webhook "http://127.0.0.1:$botport/api/calls")
    if [ "$store" = postgres ]; then
      args+=(--store "postgres://switchboard@127.0.0.1:$pgport/$name" --public-url "$base")
    fi
    RUST_LOG=error $bin "${args[@]}" >/dev/null 2>&1 & node_pids+=($!); pids+=($!)
  done
  if [ "$store" = postgres ]; then
    sed -e "s#127.0.0.1:8080#127.0.0.1:$lb#" -e "s#docs/haproxy-503.http#$PWD/docs/haproxy-503.http#" docs/haproxy.cfg |
      awk -v ports="${ports[*]}" 'BEGIN{split(ports,p," ")} /^    server node-/ {i++; if (p[i]=="") next; sub(/127\.0\.0\.1:[0-9]+/, "127.0.0.1:" p[i])} {print}' > "$work/$name.cfg"
    haproxy -db -f "$work/$name.cfg" >/dev/null 2>&1 & pids+=($!)
  else
    base="http://127.0.0.1:${ports[0]}"
  fi
  for _ in $(seq 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done
  sleep 1.5 # every node passed HAProxy's health checks
  local out; out=$(python3 scripts/bench_cluster.py "$base" "$botport" "$calls" 16)
  local token call anchor get
  token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$out")
  call=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["get_call"])' "$out")
  anchor=$(wrk -t2 -c32 -d5s "$base/healthz" | awk '/Requests\/sec/ {print $2}')
  get=$(wrk -t2 -c32 -d5s -H "Authorization: Bearer $token" "$base/v1.0/communications/calls/$call" | awk '/Requests\/sec/ {print $2}')
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.pop("token"); r.pop("get_call"); r.update(name=sys.argv[2], nodes=int(sys.argv[3]), store=sys.argv[4], healthz_rps=float(sys.argv[5]), get_rps=float(sys.argv[6])); print(json.dumps(r))' \
    "$out" "$name" "$n" "$store" "$anchor" "$get" | tee -a "$results" >&2
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "haproxy -db -f $work/$name.cfg" 2>/dev/null || true
  sleep 0.5
}

for db in pg1 pg2 pg3; do as_pg psql -q -h 127.0.0.1 -p "$pgport" -U switchboard -d postgres -c "CREATE DATABASE $db"; done
run sqlite1 1 sqlite
run pg1 1 postgres
run pg2 2 postgres
run pg3 3 postgres

mkdir -p target
python3 - "$results" <<'PY'
import json, os, platform, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
json.dump(rows, open("target/bench-cluster.json", "w"), indent=1)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
anchor = rows[0]
def label(r):
    return "SQLite, 1 node (direct)" if r["store"] == "sqlite" else f"PostgreSQL, {r['nodes']} node{'s' if r['nodes'] > 1 else ''} behind HAProxy"
lines = [
    "## Several nodes: SQLite against PostgreSQL behind HAProxy", "",
    f"Machine: {os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB. "
    "Everything runs on it at once: the nodes, PostgreSQL (one throwaway cluster, default settings, fsync on), HAProxy, "
    "the load driver and the bot. So more nodes share the same two cores: these figures show the cost of the "
    "cluster's machinery (forwarding, leases, the database), not scaling.", "",
    f"Load: the bot places {anchor['calls']} calls to a user who answers at once, from {anchor['concurrency']} threads, "
    "then transfers each (blind, to a user who answers at once); `scripts/bench_cluster.py` (Python, the same "
    "driver for every row). GET figures: wrk, 2 threads, 32 connections, 5 s; `/healthz` is the anchor measured in "
    "the same run, through the same path (HAProxy for the PostgreSQL rows). The load is a burst (every call at "
    "once from 16 threads), so latencies include the wait in the queue: they show how a burst drains, not one "
    "call alone.", "",
    "| setup | calls set up /s | setup p50 / p99 ms | transfers /s | transfer POST p50 / p99 ms | transfer done p50 / p99 ms | GET call req/s | /healthz req/s | GET ÷ /healthz |",
    "|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    lines.append(f"| {label(r)} | {r['setup_calls_per_s']} | {r['setup_p50_ms']} / {r['setup_p99_ms']} | {r['transfers_per_s']} | "
                 f"{r['transfer_post_p50_ms']} / {r['transfer_post_p99_ms']} | {r['transfer_done_p50_ms']} / {r['transfer_done_p99_ms']} | "
                 f"{r['get_rps']:.0f} | {r['healthz_rps']:.0f} | {r['get_rps'] / r['healthz_rps']:.2f} |")
lines += ["", "Relative to SQLite on one node (same run):", ""]
for r in rows[1:]:
    lines.append(f"- {label(r)}: transfers/s × {r['transfers_per_s'] / anchor['transfers_per_s']:.2f}, "
                 f"calls set up/s × {r['setup_calls_per_s'] / anchor['setup_calls_per_s']:.2f}, GET call × {r['get_rps'] / anchor['get_rps']:.2f}.")
lines += ["",
    "What limits scale past one machine, on paper: every call transition is one PostgreSQL transaction (the call "
    "row and its notification rows), and every delivered notification one more (its delete), so the database's "
    "commit rate bounds the whole cluster's transitions per second. Behind round robin, (N-1)/N of the requests "
    "about a call land on a node that does not own it and cost an owner lookup and one more HTTP hop; a balancer "
    "routing by call id would save both. Leases cost one write per node per second, whatever the number of calls.", ""]
sys.path.insert(0, "scripts")
import benchlib
benchlib.splice("docs/BENCHMARKS.md", "cluster", "scripts/bench_cluster.sh", lines)
print("\n".join(lines))
PY

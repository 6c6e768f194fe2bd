"""Transfer load through one base URL (a node, or HAProxy in front of several): the bot places CALLS
calls to Heidi (who answers at once) from CONCURRENCY threads, then transfers each to Alex (who answers at
once). Prints one JSON object: setup and transfer throughput and latencies, as the bot saw them.

Usage: bench_cluster.py BASE BOT_PORT [CALLS] [CONCURRENCY]. The bot is scripts/bench_bot.py on BOT_PORT.
"""
import concurrent.futures, json, os, sys, time

import benchlib
from benchlib import ALEX, HEIDI

base, botport = sys.argv[1], int(sys.argv[2])
calls = int(sys.argv[3]) if len(sys.argv) > 3 else 200
concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 16
log = f"/tmp/switchboard-bench-{botport}.log"


def req(method, path, body=None, headers=None, form=False):
    return benchlib.req(base, method, path, body, headers, form)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else None


def seen(state):
    """call id -> first time the bot got `state` for it."""
    out = {}
    if not os.path.exists(log):
        return out
    for line in open(log):
        parts = line.split()
        if len(parts) == 3 and parts[2] == state:
            out.setdefault(parts[1].rsplit("/", 1)[-1], float(parts[0]))
    return out


def wait_for(state, ids, limit_s=120):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        got = seen(state)
        if all(i in got for i in ids):
            return got
        time.sleep(0.05)
    got = seen(state)
    missing = [i for i in ids if i not in got]
    sys.exit(f"{len(missing)} calls never reached {state}, e.g. {missing[:3]}")


if os.path.exists(log):
    os.remove(log)
token = benchlib.token(base)
for user in (HEIDI, ALEX):
    req("PUT", f"/sim/v1/parties/{user}/behaviour", {"kind": "answer", "after_ms": 0}, benchlib.ADMIN)
auth = {"Authorization": f"Bearer {token}"}
body = {"callbackUri": f"http://127.0.0.1:{botport}/cb", "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        "requestedModalities": ["audio"], "targets": [{"identity": {"user": {"id": HEIDI}}}]}


def place(_):
    t0 = time.monotonic()
    status, call = req("POST", "/v1.0/communications/calls", body, auth)
    assert status == 201, status
    return call["id"], t0


def transfer(call_id):
    t0 = time.monotonic()
    status, _ = req("POST", f"/v1.0/communications/calls/{call_id}/transfer",
                    {"transferTarget": {"identity": {"user": {"id": ALEX}}}}, auth)
    assert status == 202, status
    return call_id, t0, time.monotonic() - t0


with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    start = time.monotonic()
    placed = list(pool.map(place, range(calls)))
    ids = [i for i, _ in placed]
    established = wait_for("established", ids)
    setup_s = max(established.values()) - start
    setup_lat = [established[i] - t0 for i, t0 in placed]
    start = time.monotonic()
    transferred = list(pool.map(transfer, ids))
    ended = wait_for("terminated", ids)
    transfer_s = max(ended.values()) - start
    post_lat = [d for _, _, d in transferred]
    done_lat = [ended[i] - t0 for i, t0, _ in transferred]

# One call left established, for the GET throughput run.
last, _ = place(0)
wait_for("established", [last])

print(json.dumps({
    "get_call": last, "token": token,
    "calls": calls, "concurrency": concurrency,
    "setup_calls_per_s": round(calls / setup_s, 1),
    "setup_p50_ms": round(pct(setup_lat, 0.5), 1), "setup_p99_ms": round(pct(setup_lat, 0.99), 1),
    "transfers_per_s": round(calls / transfer_s, 1),
    "transfer_post_p50_ms": round(pct(post_lat, 0.5), 1), "transfer_post_p99_ms": round(pct(post_lat, 0.99), 1),
    "transfer_done_p50_ms": round(pct(done_lat, 0.5), 1), "transfer_done_p99_ms": round(pct(done_lat, 0.99), 1),
}))

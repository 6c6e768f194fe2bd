"""Time from POST /communications/calls to the `established` notification, over 50 sequential calls
to a user who answers at once. Prints figures to stderr and TOKEN/CALL for the throughput run."""
import os, statistics, sys, time

import benchlib
from benchlib import HEIDI

base, botport = sys.argv[1], int(sys.argv[2])
log = f"/tmp/switchboard-bench-{botport}.log"
if os.path.exists(log):
    os.remove(log)


def req(method, path, body=None, headers=None):
    return benchlib.req(base, method, path, body, headers)[1]


token = benchlib.token(base)
req("PUT", f"/sim/v1/parties/{HEIDI}/behaviour", {"kind": "answer", "after_ms": 0}, benchlib.ADMIN)
auth = {"Authorization": f"Bearer {token}"}
body = {"callbackUri": f"http://127.0.0.1:{botport}/cb", "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        "requestedModalities": ["audio"], "targets": [{"identity": {"user": {"id": HEIDI}}}]}
lat = []
for _ in range(50):
    t0 = time.monotonic()
    call = req("POST", "/v1.0/communications/calls", body, auth)["id"]
    deadline = t0 + 5
    while time.monotonic() < deadline:
        if os.path.exists(log):
            hit = [l for l in open(log) if call in l and l.rstrip().endswith("established")]
            if hit:
                lat.append(float(hit[0].split()[0]) - t0)
                break
        time.sleep(0.0005)
lat.sort()
print(f"create call -> established notification over {len(lat)} calls: median {statistics.median(lat)*1000:.1f} ms, "
      f"p90 {lat[int(len(lat)*0.9)-1]*1000:.1f} ms, max {lat[-1]*1000:.1f} ms", file=sys.stderr)
print(f"TOKEN={token}\nCALL={call}")

"""What the benchmark drivers share: the demo's ids, and requests with a 503 retry as Graph clients do."""
import json, time, urllib.error, urllib.request

TENANT, APP = "aaaaaaaa-0000-4000-8000-000000000001", "cccccccc-0000-4000-8000-000000000003"
HEIDI, ALEX = "550fae72-d251-43ec-868c-373732c2704f", "751f6800-3180-414d-bd94-333364659951"
ADMIN = {"X-Sim-Admin-Key": "switchboard-demo-admin"}


def req(base, method, path, body=None, headers=None, form=False):
    """Returns (status, parsed body or None). A 503 (Retry-After) is retried for a few seconds."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body.encode() if form else json.dumps(body).encode()
        headers["content-type"] = "application/x-www-form-urlencoded" if form else "application/json"
    for attempt in range(20):
        try:
            r = urllib.request.urlopen(urllib.request.Request(base + path, data=data, method=method, headers=headers), timeout=30)
            text = r.read()
            return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            if e.code == 503 and attempt < 19:
                time.sleep(0.2)
                continue
            raise


def token(base):
    form = f"grant_type=client_credentials&client_id={APP}&client_secret=switchboard-demo-secret&scope=https://graph.microsoft.com/.default"
    return req(base, "POST", f"/{TENANT}/oauth2/v2.0/token", form, form=True)[1]["access_token"]

"""The bot for the SIP benchmark: it answers every incoming call and, once established, transfers it
blind to Alex, through the Graph API, as a real bot would. Usage: bench_sip_bot.py PORT BASE.
Counts what it did in /tmp/switchboard-sip-bot-PORT.json on SIGTERM."""
import http.client, http.server, json, signal, sys, threading, urllib.parse

import benchlib
from benchlib import ALEX

port, base = int(sys.argv[1]), sys.argv[2]
token = benchlib.token(base)
host = urllib.parse.urlsplit(base)
local = threading.local()
counts = {"answered": 0, "transferred": 0, "errors": 0, "terminated": 0}
lock = threading.Lock()


def post(path, body):
    """One POST on this thread's keep-alive connection (opened again if the server closed it)."""
    for _ in range(2):
        conn = getattr(local, "conn", None) or http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        local.conn = conn
        try:
            conn.request("POST", path, json.dumps(body), {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            return r.status
        except (http.client.HTTPException, OSError):
            conn.close()
            local.conn = None
    return 0


def count(key):
    with lock:
        counts[key] += 1


class Bot(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        for item in body["value"]:
            call = item["resourceUrl"].rsplit("/", 1)[-1]
            state = item["resourceData"].get("state")
            if state == "incoming":
                cb = f"http://127.0.0.1:{port}/cb"
                answer = {"callbackUri": cb, "acceptedModalities": ["audio"],
                          "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}}
                count("answered" if post(f"/v1.0/communications/calls/{call}/answer", answer) == 202 else "errors")
            elif state == "established" and "resultInfo" not in item["resourceData"]:
                target = {"transferTarget": {"identity": {"user": {"id": ALEX}}}}
                count("transferred" if post(f"/v1.0/communications/calls/{call}/transfer", target) == 202 else "errors")
            elif state == "terminated":
                count("terminated")

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


def stop(*_):
    json.dump(counts, open(f"/tmp/switchboard-sip-bot-{port}.json", "w"))
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
Server(("127.0.0.1", port), Bot).serve_forever()

"""A minimal bot for the benchmark: accepts every notification and appends it to a queue file."""
import http.server, json, sys, time

class Bot(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with open(f"/tmp/switchboard-bench-{self.server.server_port}.log", "a") as f:
            for item in json.loads(body)["value"]:
                f.write(f"{time.monotonic()} {item['resourceUrl']} {item['resourceData'].get('state')}\n")
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Bot).serve_forever()

"""A minimal bot for the benchmark: accepts every notification and appends it to a queue file."""
import http.server, json, sys, time

class Bot(http.server.BaseHTTPRequestHandler):
    # Keep-alive, so that the notifier reuses its connections as it would with a real bot.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with open(f"/tmp/switchboard-bench-{self.server.server_port}.log", "a") as f:
            for item in json.loads(body)["value"]:
                f.write(f"{time.monotonic()} {item['resourceUrl']} {item['resourceData'].get('state')}\n")
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    # The default backlog (5) refuses connections when the notifier sends 64 POSTs at once, and the
    # benchmark would measure retries.
    request_queue_size = 1024
    daemon_threads = True


Server(("127.0.0.1", int(sys.argv[1])), Bot).serve_forever()

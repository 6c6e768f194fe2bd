"""Starts and stops the prebuilt switchboard binary."""

import os
import pathlib
import re
import subprocess
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = os.environ.get("SWITCHBOARD_BIN") or str(ROOT / "target" / "debug" / "switchboard")
LISTENING = re.compile(r"^Switchboard \S+ listening on (https://127\.0\.0\.1:\d+)")


# The ring timeout (and transfer deadline) a test module's server runs with, unless the module sets
# RING_TIMEOUT_MS: one whose tests must act before a deadline they do not test sets a long one, since
# 3 s is no safe margin on a loaded CI machine.
RING_TIMEOUT_MS = 3000


class Server:
    def __init__(self, data_dir, demo_webhook, legacy_webhook, ring_timeout_ms=RING_TIMEOUT_MS):
        self.data_dir = pathlib.Path(data_dir)
        args = [
            BINARY, "serve", "--tls", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir),
            "--demo-webhook", demo_webhook, "--legacy-webhook", legacy_webhook,
            "--retry-first-ms", "100", "--ring-timeout-ms", str(ring_timeout_ms),
        ]  # fmt: skip
        self.log = open(self.data_dir / "server.log", "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        first = self.proc.stdout.readline()
        match = LISTENING.match(first)
        if not match:
            self.stop()
            raise RuntimeError(f"{BINARY} did not start: {first!r}; see {self.data_dir / 'server.log'}")
        self.base = match.group(1)
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.cafile = str(self.data_dir / "tls" / "cert.pem")
        self.notification_openid = f"{self.base}/notifications/v1/.well-known/openid-configuration"
        # The key that signs notification tokens (access tokens have their own).
        self.signing_key = self.data_dir / "keys" / "notification-key.pem"

    def stop(self):
        # Graceful first; but msgraph-core's wrapped httpx transport keeps a keep-alive connection open
        # that the server's drain waits ~10 s for, so don't wait for that.
        self.proc.terminate()
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

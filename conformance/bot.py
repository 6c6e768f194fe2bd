"""The test bot: an HTTP receiver that does what a production calling bot does with every POST.

1. Authenticates it: the `Authorization: Bearer` JWT must verify against the keys the server publishes
   through its notification OpenID configuration (RS256, issuer, audience = this app's client id,
   `tid` = the tenant, exp/nbf). Anything else gets 401 and is recorded as a rejection.
2. Validates the body against Microsoft's schemas (schemas.check_notifications).
3. Parses it with the SDK's models (sdkparse.parse_notifications).
Items are queued per call id, so a test waits for exactly the notifications of its own calls.
"""

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt

import schemas
import sdkparse
from directory import BOT_APPS, CONTOSO, NOTIFICATION_ISSUER

CALL_ID = re.compile(r"/calls/([^/]+)")

# Notifications of the kinds the bot receives (a call with most of its parts, a 2018 operation), for
# warm_up to run through the checks once; their findings are not kept.
_IDENTITY = {"@odata.type": "#microsoft.graph.identitySet", "user": {"@odata.type": "#microsoft.graph.identity", "id": "u"}}
_CALL = {
    "@odata.type": "#microsoft.graph.call", "id": "c", "state": "incoming", "direction": "incoming",
    "callbackUri": "https://127.0.0.1/cb", "callChainId": "x", "myParticipantId": "m", "tenantId": CONTOSO,
    "source": {"@odata.type": "#microsoft.graph.participantInfo", "identity": _IDENTITY},
    "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": _IDENTITY}],
    "requestedModalities": ["audio"], "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
    "mediaState": {"@odata.type": "#microsoft.graph.callMediaState", "audio": "active"},
    "resultInfo": {"@odata.type": "#microsoft.graph.resultInfo", "code": 200, "subcode": 4521, "message": "m"},
    "incomingContext": {"@odata.type": "#microsoft.graph.incomingContext", "sourceParticipantId": "p", "transferor": _IDENTITY},
}  # fmt: skip
_OPERATION = {
    "@odata.type": "#microsoft.graph.commsOperation", "@odata.id": "/app/calls/c/operations/o", "@odata.etag": 'W/"1"',
    "clientContext": "x", "resultInfo": {"code": "200", "subCode": "transferring"}, "status": "running",
}  # fmt: skip
WARM_UP = [
    ("v1.0", "v1.0", {"@odata.type": "#microsoft.graph.commsNotifications", "value": [
        {"@odata.type": "#microsoft.graph.commsNotification", "changeType": "created", "resourceUrl": "/communications/calls/c", "resourceData": _CALL},
    ]}),
    ("beta", "beta-2018", {"value": [
        {"changeType": "updated", "resource": "/app/calls/c/operations/o", "resourceData": _OPERATION},
        {"changeType": "created", "resource": "/app/calls/c", "resourceData": _CALL},
    ]}),
]  # fmt: skip


class Keys:
    """The server's notification signing keys, from its OpenID configuration (refreshed on an unknown kid)."""

    def __init__(self, openid_config_url, cafile):
        self.url, self.cafile, self.issuer, self.keys = openid_config_url, cafile, None, {}

    def refresh(self):
        with httpx.Client(verify=self.cafile) as http:
            config = http.get(self.url).raise_for_status().json()
            jwks = http.get(config["jwks_uri"]).raise_for_status().json()
        self.issuer = config["issuer"]
        self.keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}

    def key(self, kid):
        if kid not in self.keys:
            self.refresh()
        if kid not in self.keys:
            raise jwt.InvalidKeyError(f"kid {kid!r} is not published")
        return self.keys[kid].key


def validate_token(authorization, keys, app_id, tenant=CONTOSO):
    """The claims of a valid notification token; raises jwt.InvalidTokenError (or ValueError) otherwise."""
    if not authorization or not authorization.startswith("Bearer "):
        raise jwt.InvalidTokenError("no bearer token")
    token = authorization[len("Bearer ") :]
    header = jwt.get_unverified_header(token)
    if header.get("alg") != "RS256":
        raise jwt.InvalidAlgorithmError(f"alg {header.get('alg')!r}")
    claims = jwt.decode(
        token,
        keys.key(header.get("kid")),
        algorithms=["RS256"],
        audience=app_id,
        issuer=NOTIFICATION_ISSUER,
        leeway=5,
        options={"require": ["exp", "nbf", "iat", "iss", "aud", "tid"]},
    )
    if keys.issuer != NOTIFICATION_ISSUER:
        raise jwt.InvalidIssuerError(f"OpenID configuration issuer {keys.issuer!r}")
    if claims["tid"] != tenant:
        raise jwt.InvalidTokenError(f"tid {claims['tid']!r} is not {tenant}")
    return claims


@dataclass
class Received:
    app: str  # "demo" or "legacy"
    dialect: str  # "v1.0" (modern envelope) or "beta-2018"
    item: dict  # one commsNotification, raw
    model: object  # its resourceData parsed by the SDK


@dataclass
class Bot:
    keys: Keys = None
    port: int = 0
    rejections: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    sdk_gaps: list = field(default_factory=list)  # fields the SDK could not read in by-design dialects
    posts: list = field(default_factory=list)  # (app, authorization, body bytes), for replay tests
    validated: int = 0  # notifications that passed through all three checks
    _queues: dict = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def url(self, app, tag="calls"):
        return f"http://127.0.0.1:{self.port}/{app}/api/{tag}"

    def warm_up(self):
        """Does before any traffic what the first notification would otherwise wait for (seconds on a
        loaded machine, enough to slow the server's retries down): fetching the server's signing keys,
        loading Graph's OpenAPI documents, and importing the SDK models, which kiota imports lazily."""
        self.keys.refresh()
        for version in ("v1.0", "beta"):
            schemas.document(version)
        for version, dialect, body in WARM_UP:
            schemas.check_notifications(version, dialect, body)
            sdkparse.parse_notifications(version, body)

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, path, authorization, raw):
        """Handles one POST; returns the HTTP status to answer."""
        app = path.strip("/").split("/")[0]
        if app not in BOT_APPS:
            return 404
        try:
            validate_token(authorization, self.keys, BOT_APPS[app])
        except (jwt.PyJWTError, ValueError, KeyError) as err:
            self.rejections.append(f"{path}: {type(err).__name__}: {err}")
            return 401
        self.posts.append((app, authorization, raw))
        body = json.loads(raw)
        # The format is the app's, not the path's: the Legacy Bot is configured for the 2018 envelope.
        dialect = "v1.0" if body.get("@odata.type") == "#microsoft.graph.commsNotifications" else "beta-2018"
        version = "v1.0" if dialect == "v1.0" else "beta"
        problems = schemas.check_notifications(version, dialect, body)
        self.violations += [f"notification to {path}: {p}" for p in problems]
        _, models, gaps = sdkparse.parse_notifications(version, body)
        if dialect == "v1.0":
            self.violations += [f"SDK parse of notification to {path}: {g}" for g in gaps]
        else:
            self.sdk_gaps += gaps
        with self._cond:
            for item, model in zip(body.get("value", []), models):
                url = item.get("resourceUrl") or item.get("resource") or ""
                call_id = (CALL_ID.search(url) or [None, url])[1]
                self._queues.setdefault(call_id, []).append(Received(app, dialect, item, model))
                self.validated += 1
            self._cond.notify_all()
        return 202

    # -- what tests use ----------------------------------------------------------------------------

    def take(self, call_id, n, timeout=10.0):
        """The next `n` notifications about `call_id`, in order; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._queues.get(call_id, [])) < n:
                left = deadline - time.monotonic()
                got = [r.item for r in self._queues.get(call_id, [])]
                assert left > 0, f"waited {timeout}s for {n} notifications about {call_id}, got {got}"
                self._cond.wait(left)
            queue = self._queues[call_id]
            taken, self._queues[call_id] = queue[:n], queue[n:]
            return taken

    def silence(self, call_id, seconds=0.3):
        """Asserts nothing more arrives about `call_id` for a while."""
        time.sleep(seconds)
        with self._cond:
            left = [r.item for r in self._queues.get(call_id, [])]
        assert not left, f"unexpected notifications about {call_id}: {left}"

    def drain_problems(self):
        problems = [f"bot rejected a notification: {r}" for r in self.rejections] + self.violations
        self.rejections, self.violations = [], []
        return problems


def serve(bot):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                status = bot.receive(self.path, self.headers.get("authorization"), raw)
            except Exception as err:  # noqa: BLE001 - a crash in a check must fail the test, not hang it
                bot.violations.append(f"bot crashed on {self.path}: {type(err).__name__}: {err}")
                status = 500
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    bot.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd

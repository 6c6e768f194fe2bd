"""The bot's side of the API: azure-identity credentials, the official v1.0 and beta SDK clients, a
plain httpx client for paths no SDK builder covers, and the check on every API response.

Every HTTP client here shares one httpx response hook, so each response body the server sends, to the
SDKs or to plain httpx, is validated against the schema of its route before the caller sees it.
"""

import asyncio
import re
import threading
from dataclasses import dataclass, field

import httpx
import jwt
from azure.identity import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphServiceClient
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_beta import GraphServiceClient as BetaGraphServiceClient
from msgraph_beta.graph_request_adapter import GraphRequestAdapter as BetaGraphRequestAdapter
from msgraph_core import GraphClientFactory

import schemas
from directory import ADMIN_KEY, CONTOSO, LEGACY_BOT, SCOPE, SECRET

ID_AFTER = {"calls": "{call-id}", "operations": "{op-id}", "applications": "{app-id}", "participants": "{participant-id}"}


def template(path):
    """('v1.0' | 'beta', '/communications/calls/{call-id}/transfer') from a request path."""
    parts = path.strip("/").split("/")
    version, rest = parts[0], parts[1:]
    out = []
    for i, seg in enumerate(rest):
        # `participants/invite` is an action, not a participant's id.
        is_id = i and rest[i - 1] in ID_AFTER and not (rest[i - 1] == "participants" and seg == "invite")
        out.append(ID_AFTER[rest[i - 1]] if is_id else seg)
    return version, "/" + "/".join(out)


class Loop:
    """One event loop in a thread for the async SDKs, so plain pytest tests can call them."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Responses:
    """What the response hook saw: one entry per request, and schema violations."""

    seen: list = field(default_factory=list)  # (version, method, template, status, via_sdk)
    violations: list = field(default_factory=list)

    def hook(self, via_sdk):
        """The httpx response hook of one client; `via_sdk` says whether that client is an SDK's."""

        async def check(response: httpx.Response):
            await response.aread()
            self.check(response, via_sdk)

        return check

    def check(self, response, via_sdk):
        request = response.request
        version, path = template(request.url.path)
        if version not in ("v1.0", "beta"):
            return
        self.seen.append((version, request.method, path, response.status_code, via_sdk))
        token = request.headers.get("authorization", "")[len("Bearer ") :]
        app = jwt.decode(token, options={"verify_signature": False}).get("appid") if token else None
        dialect = "beta-2018" if version == "beta" and app == LEGACY_BOT else version
        body = response.json() if response.content else None
        for problem in schemas.check_response(version, dialect, request.method, path, response.status_code, body):
            self.violations.append(f"{request.method} {path} -> {response.status_code}: {problem} in {str(body)[:300]}")


class Graph:
    """Clients for one app against one running server."""

    def __init__(self, server, loop, responses, client_id):
        self.server, self.loop, self.client_id = server, loop, client_id
        # azure-identity insists on an https authority; it trusts the server's self-signed certificate
        # through connection_verify (no global REQUESTS_CA_BUNDLE needed).
        self.credential = ClientSecretCredential(
            CONTOSO, client_id, SECRET, authority=server.base, disable_instance_discovery=True,
            connection_verify=server.cafile,
        )  # fmt: skip
        self.v1 = self._client(GraphServiceClient, GraphRequestAdapter, "v1.0", responses)
        self.beta = self._client(BetaGraphServiceClient, BetaGraphRequestAdapter, "beta", responses)
        self.token = self.credential.get_token(SCOPE).token
        self.http = loop.run(self._plain(responses))

    def _client(self, client_class, adapter_class, version, responses):
        auth = AzureIdentityAuthenticationProvider(self.credential, scopes=[SCOPE], allowed_hosts=["127.0.0.1"])
        http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(verify=self.server.cafile, event_hooks={"response": [responses.hook(via_sdk=True)]})
        )
        adapter = adapter_class(auth, http)
        adapter.base_url = f"{self.server.base}/{version}"
        return client_class(request_adapter=adapter)

    async def _plain(self, responses):
        return httpx.AsyncClient(
            base_url=self.server.base, verify=self.server.cafile, headers={"authorization": f"Bearer {self.token}"},
            event_hooks={"response": [responses.hook(via_sdk=False)]},
        )  # fmt: skip

    def run(self, coro):
        return self.loop.run(coro)

    def close(self):
        async def close_all():
            await self.http.aclose()
            for client in (self.v1, self.beta):
                await client.request_adapter._http_client.aclose()

        self.run(close_all())
        self.credential.close()  # its requests session holds a keep-alive connection too

    def request(self, method, path, body=None):
        """A plain request (for paths no SDK builder covers); returns the httpx response."""
        return self.run(self.http.request(method, path, json=body))


class Sim:
    """The sim control API (not part of Graph; not schema-checked)."""

    def __init__(self, server):
        self.http = httpx.Client(base_url=f"{server.base}/sim/v1", verify=server.cafile, headers={"x-sim-admin-key": ADMIN_KEY})

    def call(self, caller, to):
        response = self.http.post("/calls", json={"from": caller, "to": to}).raise_for_status()
        return response.json()["callId"]

    def hangup(self, call_id):
        assert self.http.post(f"/calls/{call_id}/hangup").status_code == 204

    def behaviour(self, party, behaviour):
        self.http.put(f"/parties/{party}/behaviour", json=behaviour).raise_for_status()

    def clear(self):
        """Hangs up every leg, so a test starts from an empty world."""
        for leg in self.http.get("/world").raise_for_status().json().get("legs", []):
            self.http.delete(f"/legs/{leg['id']}")

    def connected_pairs(self):
        """Who each party's leg is connected to, by party id or number."""
        world = self.http.get("/world").raise_for_status().json()
        legs = {leg["id"]: leg for leg in world.get("legs", [])}
        key = lambda p: p.get("id") or p.get("number")  # noqa: E731
        return sorted(
            (key(leg["party"]), key(legs[leg["peer"]["legId"]]["party"]))
            for leg in legs.values()
            if leg["state"] == "connected" and leg.get("peer", {}).get("kind") == "leg"
        )

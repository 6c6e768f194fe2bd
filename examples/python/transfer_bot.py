"""A complete calling bot on Microsoft's Python SDKs (msgraph-sdk, azure-identity), run against
Switchboard. It validates every notification's JWT, answers each incoming call, and transfers it:
blind to Heidi, consultative (it calls Heidi first, then hands the caller over in that call's place),
or to a PSTN number.

    switchboard serve --tls --listen 127.0.0.1:8443
    python examples/python/transfer_bot.py --base https://127.0.0.1:8443 --ca switchboard-data/tls/cert.pem --demo

The Demo Bot's calling webhook is http://127.0.0.1:3978/api/calls, where this bot listens. `--demo` has
the sim place three calls, one per kind of transfer, and exits once all three have ended (0 if each was
transferred); without it the bot serves every call with `--transfer` until stopped. Needs
`pip install msgraph-sdk azure-identity "PyJWT[crypto]" aiohttp` (the test command uses the versions
pinned in conformance/requirements.txt). The CA is `<data-dir>/tls/cert.pem` of `serve --tls`.
"""

import argparse
import asyncio
import sys
import time
import uuid

import httpx
import jwt
from aiohttp import web
from azure.identity import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphServiceClient
from msgraph.generated.communications.calls.item.answer.answer_post_request_body import AnswerPostRequestBody
from msgraph.generated.communications.calls.item.transfer.transfer_post_request_body import TransferPostRequestBody
from msgraph.generated.models.call import Call
from msgraph.generated.models.communications_identity_set import CommunicationsIdentitySet
from msgraph.generated.models.identity import Identity
from msgraph.generated.models.identity_set import IdentitySet
from msgraph.generated.models.invitation_participant_info import InvitationParticipantInfo
from msgraph.generated.models.modality import Modality
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.service_hosted_media_config import ServiceHostedMediaConfig
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory

TENANT = "aaaaaaaa-0000-4000-8000-000000000001"
APP_ID, SECRET = "cccccccc-0000-4000-8000-000000000003", "switchboard-demo-secret"
RECEPTION = "dddddddd-0000-4000-8000-000000000004"  # the app's instance: PSTN transfers need a call of one
HEIDI, ALEX = "550fae72-d251-43ec-868c-373732c2704f", "751f6800-3180-414d-bd94-333364659951"
PSTN = "+12345678901"
ISSUER = "https://api.botframework.com"


def graph_client(base, ca):
    """The SDK pointed at Switchboard: the token authority and the Graph base URL are the only changes."""
    cred = ClientSecretCredential(TENANT, APP_ID, SECRET, authority=base, disable_instance_discovery=True, connection_verify=ca)
    auth = AzureIdentityAuthenticationProvider(cred, scopes=["https://graph.microsoft.com/.default"], allowed_hosts=["127.0.0.1", "localhost"])
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=ca))
    adapter = GraphRequestAdapter(auth, http)
    adapter.base_url = f"{base}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


class Keys:
    """The notification signing keys, from the server's notification OpenID configuration."""

    def __init__(self, base, ca):
        self.base, self.ca, self.keys = base, ca, {}

    async def refresh(self):
        async with httpx.AsyncClient(verify=self.ca) as http:
            config = (await http.get(f"{self.base}/notifications/v1/.well-known/openid-configuration")).json()
            jwks = (await http.get(config["jwks_uri"])).json()
        self.keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}

    async def verify(self, token):
        kid = jwt.get_unverified_header(token).get("kid")
        if kid not in self.keys:
            await self.refresh()
        if kid not in self.keys:
            raise jwt.InvalidTokenError(f"unknown signing key {kid!r}")
        return jwt.decode(token, self.keys[kid].key, algorithms=["RS256"], audience=APP_ID, issuer=ISSUER)


class Bot:
    def __init__(self, client, callback, default_kind):
        self.client, self.callback, self.default_kind = client, callback, default_kind
        self.kind = {}  # call id → the transfer it gets
        self.consulting = {}  # consultation call id → the call to transfer in its place
        self.started = set()  # calls whose transfer has started
        self.ended = {}  # call id → how it ended
        self.changed = asyncio.Event()

    def calls(self):
        return self.client.communications.calls

    async def on_notification(self, item):
        url = item.get("resourceUrl", "")
        if "/calls/" not in url or "/operations/" in url or "/participants" in url:
            return
        call_id, data = url.rsplit("/", 1)[1], item.get("resourceData", {})
        state, change = data.get("state"), item.get("changeType")
        if change == "created" and state == "incoming":
            await self.calls().by_call_id(call_id).answer.post(
                AnswerPostRequestBody(callback_uri=self.callback, accepted_modalities=[Modality.Audio], media_config=ServiceHostedMediaConfig())
            )
        elif state == "established" and call_id in self.consulting:
            # Heidi took the consultation call: hand the caller over in its place.
            original = self.consulting.pop(call_id)
            target = InvitationParticipantInfo(identity=IdentitySet(user=Identity(id=HEIDI)), replaces_call_id=call_id)
            await self.calls().by_call_id(original).transfer.post(TransferPostRequestBody(transfer_target=target))
        elif state == "established" and call_id not in self.started and call_id not in self.ended:
            self.started.add(call_id)
            await self.transfer(call_id, self.kind.get(call_id, self.default_kind))
        elif change == "deleted":
            info = data.get("resultInfo") or {}
            self.ended[call_id] = data.get("terminationReason") or f"{info.get('code')}/{info.get('subcode')}"
            print(f"call {call_id} ({self.kind.get(call_id, 'consultation')}) ended: {self.ended[call_id]}", flush=True)
            self.changed.set()

    async def transfer(self, call_id, kind):
        if kind == "blind":
            target = InvitationParticipantInfo(identity=IdentitySet(user=Identity(id=HEIDI, display_name="Heidi Steen")))
        elif kind == "pstn":
            target = InvitationParticipantInfo(identity=CommunicationsIdentitySet(phone=Identity(id=PSTN)))
        else:  # consultative: call Heidi first; the transfer follows when she answers
            consult = await self.calls().post(
                Call(
                    callback_uri=self.callback, tenant_id=TENANT, requested_modalities=[Modality.Audio], media_config=ServiceHostedMediaConfig(),
                    targets=[InvitationParticipantInfo(identity=IdentitySet(user=Identity(id=HEIDI)))],
                )
            )  # fmt: skip
            self.consulting[consult.id] = call_id
            return
        await self.calls().by_call_id(call_id).transfer.post(TransferPostRequestBody(transfer_target=target))


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="https://127.0.0.1:8443")
    p.add_argument("--ca", default="switchboard-data/tls/cert.pem")
    p.add_argument("--listen", default="127.0.0.1:3978")
    p.add_argument("--transfer", choices=["blind", "consultative", "pstn"], default="blind")
    p.add_argument("--admin-key", default="switchboard-demo-admin")
    p.add_argument("--demo", action="store_true", help="place one call per kind of transfer, then exit")
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    keys = Keys(args.base, args.ca)
    bot = Bot(graph_client(args.base, args.ca), f"http://{args.listen}/api/calls", args.transfer)

    async def webhook(request):
        # Graph's rule: acknowledge quickly, act afterwards; refuse what is not signed by the server.
        try:
            await keys.verify(request.headers.get("Authorization", "").removeprefix("Bearer "))
        except jwt.PyJWTError as e:
            print(f"refused a notification: {e}", file=sys.stderr)
            return web.Response(status=401)
        for item in (await request.json()).get("value", []):
            asyncio.get_running_loop().create_task(act(item))
        return web.Response(status=202)

    async def act(item):
        try:
            await bot.on_notification(item)
        except ODataError as e:
            # A late notification (retried while the bot was down) about a call that has ended since: 404.
            if e.response_status_code == 404:
                print(f"{item.get('resourceUrl')} has ended meanwhile", file=sys.stderr)
            else:
                print(f"acting on {item.get('resourceUrl')}: {e.response_status_code} {e.error.message if e.error else e}", file=sys.stderr)
        except Exception as e:  # a bot keeps serving; the failure is reported once
            print(f"acting on {item.get('resourceUrl')}: {e!r}", file=sys.stderr)

    app = web.Application()
    app.router.add_post("/api/calls", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    print(f"bot listening on http://{args.listen}/api/calls", flush=True)
    if not args.demo:
        await asyncio.Event().wait()
    # First, a forgery: right claims and a published key id, but signed with another key. Refused.
    from cryptography.hazmat.primitives.asymmetric import rsa

    await keys.refresh()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": ISSUER, "aud": APP_ID, "nbf": int(time.time()), "exp": int(time.time()) + 3600}
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": next(iter(keys.keys))})
    async with httpx.AsyncClient() as own:
        refused = await own.post(bot.callback, json={"value": []}, headers={"Authorization": f"Bearer {forged}"})
    if refused.status_code != 401:
        raise SystemExit(f"a forged notification was accepted ({refused.status_code})")
    # The sim places one call per kind, with ids of ours so that the bot knows which transfer each gets.
    async with httpx.AsyncClient(verify=args.ca, headers={"X-Sim-Admin-Key": args.admin_key}) as sim:
        for kind, to in [("blind", APP_ID), ("consultative", APP_ID), ("pstn", RECEPTION)]:
            call_id = f"example-{kind}-{uuid.uuid4().hex[:8]}"
            bot.kind[call_id] = kind
            r = await sim.post(f"{args.base}/sim/v1/calls", json={"from": ALEX, "to": to, "callId": call_id})
            r.raise_for_status()
    want = {"blind": "0/7015", "consultative": "AppTransferred", "pstn": "0/7015"}
    try:
        async with asyncio.timeout(30):
            while not all(c in bot.ended for c in bot.kind):
                bot.changed.clear()
                await bot.changed.wait()
    except TimeoutError:
        print("not every call ended within 30 s", file=sys.stderr)
    await runner.cleanup()
    ok = all(bot.ended.get(c) == want[k] for c, k in bot.kind.items())
    print("transfer_bot: every transfer completed" if ok else f"transfer_bot: {bot.ended}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

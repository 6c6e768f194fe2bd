"""The test bot's validator rejects what a production bot must reject. A real notification is replayed
to the bot with a tampered token; tokens with bad claims are signed with the server's own key (read
from the test's data dir), so only the claim under test is wrong."""

import json
import time

import jwt
import pytest

import flows
from directory import CONTOSO, DEMO_BOT, FABRIKAM, HEIDI, LEGACY_BOT, NOTIFICATION_ISSUER


@pytest.fixture(scope="module")
def real(env):
    """One real notification (authorization header and body) the server sent to the Demo Bot."""
    call_id = flows.placed(env, flows.call_to_user(env.bot.url("demo", "jwt"), HEIDI))
    env.demo.run(env.demo.v1.communications.calls.by_call_id(call_id).delete())
    env.bot.take(call_id, 2)
    app, authorization, body = next(p for p in env.bot.posts if p[0] == "demo")
    # One item only: how many the server batched into that POST depends on timing. The token does not
    # cover the body, so this is still a genuine token on a genuine notification.
    body = json.loads(body)
    return authorization, json.dumps({**body, "value": body["value"][:1]}).encode()


def forge(env, **claims):
    """A token signed with the server's notification key and its published kid, with `claims` changed."""
    header = jwt.get_unverified_header(env.bot.posts[0][1].split()[1])
    now = int(time.time())
    payload = {"iss": NOTIFICATION_ISSUER, "aud": DEMO_BOT, "tid": CONTOSO, "iat": now, "nbf": now, "exp": now + 3900}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return "Bearer " + jwt.encode(payload, env.server.signing_key.read_bytes(), algorithm="RS256", headers={"kid": header["kid"]})


def flip_signature_byte(authorization):
    head, payload, signature = authorization.split()[1].split(".")
    raw = bytearray(jwt.utils.base64url_decode(signature))
    raw[0] ^= 0x01
    return f"Bearer {head}.{payload}.{jwt.utils.base64url_encode(bytes(raw)).decode()}"


def post(env, authorization, body, app="demo"):
    rejected_before = len(env.bot.rejections)
    status = env.bot.receive(f"/{app}/api/calls", authorization, body)
    rejected = env.bot.rejections[rejected_before:]
    del env.bot.rejections[rejected_before:]  # expected rejections: not a failure of this test
    return status, rejected


def test_the_genuine_token_and_a_forged_one_with_the_right_claims_are_accepted(env, real):
    """Control: the real token passes, and so does one forged with correct claims (the forging works)."""
    before = env.bot.validated
    assert post(env, *real) == (202, [])
    assert post(env, forge(env), real[1]) == (202, [])
    assert env.bot.validated == before + 2


@pytest.mark.parametrize(
    "case",
    ["flipped signature byte", "wrong audience", "expired", "not yet valid", "wrong issuer", "wrong tenant",
     "no tenant", "unknown key", "no token", "alg none"],
)  # fmt: skip
def test_a_tampered_token_is_rejected(env, real, case):
    """Each tampering is answered 401 and recorded as a rejection."""
    authorization, body = real
    now = int(time.time())
    app = "demo"
    if case == "flipped signature byte":
        authorization = flip_signature_byte(authorization)
    elif case == "wrong audience":
        app = "legacy"  # the Demo Bot's token replayed to the Legacy Bot: aud is not LEGACY_BOT
        assert jwt.decode(authorization.split()[1], options={"verify_signature": False})["aud"] != LEGACY_BOT
    elif case == "expired":
        authorization = forge(env, iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    elif case == "not yet valid":
        authorization = forge(env, nbf=now + 3600)
    elif case == "wrong issuer":
        authorization = forge(env, iss="https://graph.microsoft.com.evil")
    elif case == "wrong tenant":
        authorization = forge(env, tid=FABRIKAM)
    elif case == "no tenant":
        authorization = forge(env, tid=None)
    elif case == "unknown key":
        from cryptography.hazmat.primitives.asymmetric import rsa

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        authorization = "Bearer " + jwt.encode(
            {"iss": NOTIFICATION_ISSUER, "aud": DEMO_BOT, "tid": CONTOSO, "iat": now, "nbf": now, "exp": now + 60},
            other, algorithm="RS256", headers={"kid": "not-published"},
        )  # fmt: skip
    elif case == "no token":
        authorization = None
    elif case == "alg none":
        authorization = "Bearer " + jwt.encode({"iss": NOTIFICATION_ISSUER, "aud": DEMO_BOT, "tid": CONTOSO}, None, algorithm="none")
    status, rejected = post(env, authorization, body, app)
    assert status == 401 and len(rejected) == 1, rejected

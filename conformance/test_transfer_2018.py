"""The 2018 beta dialect (seed page en-beta-2018.md): the Legacy Bot, configured for the 2018
notification format, transfers on /beta/app/calls (beta SDK builder) and on
/beta/applications/{appId}/calls (no SDK builder: plain httpx), and sees progress on a commsOperation.
The beta SDK cannot read the 2018 string codes ("200") into resultInfo.code: unparseable by design,
recorded, not a failure (see allowlist.py)."""

import pytest
from msgraph_beta.generated.app.calls.item.answer.answer_post_request_body import AnswerPostRequestBody
from msgraph_beta.generated.app.calls.item.transfer.transfer_post_request_body import TransferPostRequestBody
from msgraph_beta.generated.models.call import Call
from msgraph_beta.generated.models.identity import Identity
from msgraph_beta.generated.models.identity_set import IdentitySet
from msgraph_beta.generated.models.invitation_participant_info import InvitationParticipantInfo
from msgraph_beta.generated.models.modality import Modality
from msgraph_beta.generated.models.service_hosted_media_config import ServiceHostedMediaConfig

from directory import ALEX, BUSY_BOB, CONTOSO, HEIDI, LEGACY_BOT, LEGACY_PHONE
import report

BETA_2018 = "en-beta-2018.md"
CONTEXT = "d45324c1-fcb5-430a-902c-f20af696537c"


def answered(env):
    """Heidi calls the Legacy Bot's number; the bot answers on /beta/app/calls with the beta SDK."""
    call_id = env.sim.call(HEIDI, LEGACY_PHONE)
    (created,) = env.bot.take(call_id, 1)
    # The 2018 envelope: `resource`, `@odata.id`, `@odata.etag`, no @odata.type on the item.
    assert created.dialect == "beta-2018"
    assert (created.item["changeType"], created.item["resource"]) == ("created", f"/app/calls/{call_id}")
    assert created.item["resourceData"]["@odata.id"] == f"/app/calls/{call_id}"
    body = AnswerPostRequestBody(
        callback_uri=env.bot.url("legacy", "answered"), accepted_modalities=[Modality.Audio], media_config=ServiceHostedMediaConfig()
    )
    env.legacy.run(env.legacy.beta.app.calls.by_call_id(call_id).answer.post(body))
    states = [r.item["resourceData"]["state"] for r in env.bot.take(call_id, 2)]
    assert states == ["establishing", "established"]
    return call_id


def op_note(change, call_id, op, etag, result, status):
    path = f"/app/calls/{call_id}/operations/{op}"
    return {
        "changeType": change,
        "resource": path,
        "resourceData": {
            "@odata.type": "#microsoft.graph.commsOperation", "@odata.id": path, "@odata.etag": f'W/"{etag}"',
            "clientContext": CONTEXT, "resultInfo": result, "status": status,
        },
    }  # fmt: skip


def call_deleted(call_id, etag):
    return {
        "changeType": "deleted",
        "resource": f"/app/calls/{call_id}",
        "resourceData": {
            "@odata.type": "#microsoft.graph.call", "@odata.id": f"/app/calls/{call_id}", "@odata.etag": f'W/"{etag}"',
            "state": "terminated", "terminationReason": "AppTransferred",
        },
    }  # fmt: skip


def expect(env, call_id, expected):
    got = [r.item for r in env.bot.take(call_id, len(expected))]
    assert got == expected
    report.current().sequence = True


def target(user_id, display_name=None, replaces=None):
    identity = IdentitySet(user=Identity(id=user_id, display_name=display_name, additional_data={"tenantId": CONTOSO}))
    return InvitationParticipantInfo(identity=identity, replaces_call_id=replaces)


def transferred(env, call_id, tt):
    """Transfers on /beta/app/calls with the page's clientContext; the 2018 sequence: the operation
    running, the operation completed, the call deleted (AppTransferred)."""
    body = TransferPostRequestBody(transfer_target=tt, additional_data={"clientContext": CONTEXT})
    env.legacy.run(env.legacy.beta.app.calls.by_call_id(call_id).transfer.post(body))
    (running,) = env.bot.take(call_id, 1)
    op = running.item["resource"].rsplit("/", 1)[-1]  # the 2018 page names the operation by @odata.id only
    assert running.item == op_note("updated", call_id, op, 4, {"code": "200", "subCode": "transferring"}, "running")
    expect(env, call_id, [
        op_note("deleted", call_id, op, 5, {"code": "200", "subCode": "transferAccepted"}, "completed"),
        call_deleted(call_id, 6),
    ])  # fmt: skip


@pytest.mark.example(BETA_2018, "Transfer call directly, with no user involvement")
def test_2018_transfer_directly_reports_on_an_operation(env):
    """Blind transfer of Heidi to Alex on /beta/app/calls/{id}/transfer (beta SDK)."""
    call_id = answered(env)
    tt = target(ALEX, "Alex Wilber")
    tt.additional_data.update(languageId="languageId-value", region="region-value")
    transferred(env, call_id, tt)
    env.bot.silence(call_id)


@pytest.mark.example(BETA_2018, "Consultative transfer")
def test_2018_consultative_transfer(env):
    """The Legacy Bot consults Alex on a call it places (beta SDK, /beta/app/calls), then transfers Heidi to it."""
    consult = Call(
        callback_uri=env.bot.url("legacy", "consult"), requested_modalities=[Modality.Audio], media_config=ServiceHostedMediaConfig(),
        targets=[InvitationParticipantInfo(identity=IdentitySet(user=Identity(id=ALEX)))],
    )  # fmt: skip
    a = answered(env)
    b = env.legacy.run(env.legacy.beta.app.calls.post(consult)).id
    assert [r.item["resourceData"]["state"] for r in env.bot.take(b, 2)] == ["establishing", "established"]
    tt = target(ALEX, replaces=b)
    tt.additional_data.update(languageId="en-US", region="westus")
    transferred(env, a, tt)
    (replaced,) = env.bot.take(b, 1)
    assert (replaced.item["changeType"], replaced.item["resourceData"]["state"]) == ("deleted", "terminated")


def test_2018_failed_transfer_fails_its_operation(env):
    """The 2018 body (`target`) on /beta/applications/{appId}/calls/{id}/transfer (plain httpx: no SDK
    builder); the operation fails, GET returns it (beta SDK), and a second transfer works."""
    call_id = answered(env)
    response = env.legacy.request(
        "POST", f"/beta/applications/{LEGACY_BOT}/calls/{call_id}/transfer", {"target": {"user": {"id": BUSY_BOB}}, "clientContext": CONTEXT}
    )
    assert response.status_code == 202
    op = response.headers["location"].rsplit("/", 1)[1]
    assert response.headers["location"] == f"{env.server.base}/beta/app/calls/{call_id}/operations/{op}"
    failed = {"code": "500", "subCode": "7000", "message": "The blind transfer failed: the transfer target is busy. DiagCode: 500#7000.@"}
    expect(env, call_id, [
        op_note("updated", call_id, op, 4, {"code": "200", "subCode": "transferring"}, "running"),
        op_note("deleted", call_id, op, 5, failed, "failed"),
    ])  # fmt: skip
    operations = env.legacy.beta.app.calls.by_call_id(call_id).operations
    got = env.legacy.run(operations.by_comms_operation_id(op).get())
    assert (got.status.value, got.client_context) == ("Failed", CONTEXT)
    assert len(env.legacy.run(operations.get()).value) == 1
    body = TransferPostRequestBody(transfer_target=target(ALEX), additional_data={"clientContext": CONTEXT})
    env.legacy.run(env.legacy.beta.app.calls.by_call_id(call_id).transfer.post(body))
    assert [r.item["resourceData"].get("status") for r in env.bot.take(call_id, 3)] == ["running", "completed", None]

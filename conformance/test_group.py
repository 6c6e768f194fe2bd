"""Group calls and call: transfer from a group call (today's v1.0 page, example 5), through the SDKs:
the call is created with several targets, roster notifications are checked against Graph's `participant`
schema and parsed with the SDK's models, and the transfer names its `transferee`."""

import pytest

import flows
import notes
from directory import ALEX, CONTOSO, DEMO_BOT, HEIDI, SILENT_SAM

TODAY = "call-transfer (v1.0, current page)"
BACK = notes.with_data(notes.state("updated", "established"), resultInfo=notes.result(0, 7015, "GracefulTransferCompleted"))


def group_call(callback, users, sdk):
    return sdk.Call(
        callback_uri=callback, targets=[flows.user_target(u, sdk=sdk) for u in users],
        requested_modalities=[sdk.Modality.Audio], media_config=sdk.ServiceHostedMediaConfig(),
    )  # fmt: skip


def roster(received, call_id):
    """The ids in a roster notification (users by user id, the bot by app id), in roster order."""
    item = received.item
    assert (item["changeType"], item["resourceUrl"]) == ("updated", f"/communications/calls/{call_id}/participants")
    ids = []
    for p in item["resourceData"]:
        identity = p["info"]["identity"]
        ids.append((identity.get("user") or identity.get("application"))["id"])
    return ids


@pytest.mark.parametrize("sdk", [pytest.param(flows.V1, id="v1.0"), pytest.param(flows.BETA, id="beta")])
@pytest.mark.example(TODAY, "Example 5: Call transfer from a group call")
def test_example_5_transfer_from_a_group_call(env, sdk):
    """A group call with Alex and Sam; Alex is transferred to Heidi with the example's body (his participant
    id from the SDK's participants builder); the bot stays with Sam."""
    env.sim.behaviour(SILENT_SAM, {"kind": "answer", "after_ms": 100})
    try:
        calls = sdk.calls(env.demo)
        call = env.demo.run(calls.post(group_call(env.bot.url("demo", "group"), [ALEX, SILENT_SAM], sdk)))
        assert len(call.targets) == 2
        notes.expect(env.bot, call.id, [notes.ESTABLISHING, notes.ESTABLISHED])
        first, both = env.bot.take(call.id, 2)
        assert roster(first, call.id) in ([DEMO_BOT, ALEX], [DEMO_BOT, SILENT_SAM])
        assert roster(both, call.id) == [DEMO_BOT, ALEX, SILENT_SAM]
        participants = env.demo.run(calls.by_call_id(call.id).participants.get()).value
        alex = next(p.id for p in participants if p.info.identity.user and p.info.identity.user.id == ALEX)
        # The example's body: Heidi as target; Alex as transferee with his tenantId (dynamic) and participantId.
        target = flows.user_target(HEIDI, "Heidi Steen", sdk)
        if sdk is flows.BETA:
            target.endpoint_type = sdk.EndpointType.Default
        else:
            target.additional_data["endpointType"] = "default"
        who = sdk.Identity(id=ALEX)
        who.additional_data["tenantId"] = CONTOSO
        transferee = sdk.ParticipantInfo(identity=sdk.IdentitySet(user=who), participant_id=alex)
        body = sdk.TransferPostRequestBody(transfer_target=target, transferee=transferee)
        assert env.demo.run(calls.by_call_id(call.id).transfer.post(body)) is None  # 202
        notes.expect(env.bot, call.id, [notes.TRANSFERRING, notes.ACCEPTED, BACK])
        (after,) = env.bot.take(call.id, 1)
        assert roster(after, call.id) == [DEMO_BOT, SILENT_SAM]
        assert (ALEX, HEIDI) in env.sim.connected_pairs()
        assert env.demo.run(calls.by_call_id(call.id).get()).state == sdk.CallState.Established
        env.demo.run(calls.by_call_id(call.id).delete())
        notes.expect(env.bot, call.id, [notes.TERMINATING, notes.HUNG_UP])
    finally:
        env.sim.behaviour(SILENT_SAM, {"kind": "no-answer"})

"""The IVR around transfer (issue 14), through the v1.0 SDK's media request builders: a greeting, a key
press reported as toneInfo, a blind transfer; a recording fetched with its token. Every notification
is checked against Graph's schemas and parsed by the SDK, as elsewhere in the suite."""

import httpx
from msgraph.generated.communications.calls.item.play_prompt.play_prompt_post_request_body import PlayPromptPostRequestBody
from msgraph.generated.communications.calls.item.record_response.record_response_post_request_body import (
    RecordResponsePostRequestBody,
)
from msgraph.generated.communications.calls.item.subscribe_to_tone.subscribe_to_tone_post_request_body import (
    SubscribeToTonePostRequestBody,
)
from msgraph.generated.models.media_info import MediaInfo
from msgraph.generated.models.media_prompt import MediaPrompt
from msgraph.generated.models.operation_status import OperationStatus

import flows
import notes
from directory import ALEX, CONTOSO, HEIDI, SILENT_SAM

# Prompts play for 2 s on the sim; nothing here tests a deadline.
RING_TIMEOUT_MS = 20000
GREETING = "https://cdn.contoso.com/greeting.wav"
BLIND = [notes.TRANSFERRING, notes.ACCEPTED, notes.ACCEPTED_MEDIA, notes.BLIND_DONE]


def prompt(uri):
    return MediaPrompt(media_info=MediaInfo(uri=uri, resource_id="1D6DE2D4-CD51-4309-8DAA-70768651088E"))


def operation_note(**data):
    resource = "/communications/calls/{callId}/operations/{opId}"
    data = {"id": "{opId}", "@odata.id": resource, **data}
    return {"@odata.type": "#microsoft.graph.commsNotification", "changeType": "deleted", "resourceUrl": resource, "resourceData": data}


def test_press_one_for_heidi(env):
    """Answer, subscribe to tones, play a greeting; Alex presses 1 and is transferred to Heidi, blind."""
    env.sim.behaviour(ALEX, {"kind": "answer", "press": "1", "press_after_ms": 500})
    call_id = flows.answered(env, ALEX, env.demo.client_id)
    call = flows.V1.calls(env.demo).by_call_id(call_id)
    sub = env.demo.run(call.subscribe_to_tone.post(SubscribeToTonePostRequestBody(client_context="menu")))
    assert (sub.odata_type, sub.status, sub.client_context) == ("#microsoft.graph.subscribeToToneOperation", OperationStatus.Completed, "menu")
    op = env.demo.run(call.play_prompt.post(PlayPromptPostRequestBody(prompts=[prompt(GREETING)], client_context="greeting")))
    assert (op.odata_type, op.status) == ("#microsoft.graph.playPromptOperation", OperationStatus.Running)
    tone = notes.with_data(
        notes.state("updated", "established"), toneInfo={"@odata.type": "#microsoft.graph.toneInfo", "sequenceId": 1, "tone": "tone1"}
    )
    played = operation_note(
        **{"@odata.type": "#microsoft.graph.playPromptOperation"},
        clientContext="greeting",
        status="completed",
        resultInfo=notes.result(200, 0, "Action completed successfully."),
        completionReason="completedSuccessfully",
    )
    notes.expect(env.bot, call_id, [tone, played], {op.id: "{opId}"})
    got = env.demo.run(call.operations.by_comms_operation_id(op.id).get())
    assert (got.status, got.result_info.code) == (OperationStatus.Completed, 200)
    body = flows.V1.TransferPostRequestBody(transfer_target=flows.user_target(HEIDI, "Heidi Steen"))
    assert env.demo.run(call.transfer.post(body)) is None
    notes.expect(env.bot, call_id, BLIND)
    assert env.sim.connected_pairs() == sorted([(ALEX, HEIDI), (HEIDI, ALEX)])


def test_a_reply_is_recorded_and_fetched_with_its_token(env):
    """recordResponse: a prompt, the beep, 1.5 s of Alex and 1 s of silence; the WAV is fetched from
    recordingLocation with recordingAccessToken, and refused without it."""
    env.sim.behaviour(ALEX, {"kind": "answer", "speak_ms": 1500})
    call_id = flows.answered(env, ALEX, env.demo.client_id)
    call = flows.V1.calls(env.demo).by_call_id(call_id)
    body = RecordResponsePostRequestBody(
        prompts=[prompt(GREETING)], barge_in_allowed=True, initial_silence_timeout_in_seconds=5,
        max_silence_timeout_in_seconds=1, max_record_duration_in_seconds=10, play_beep=True, stop_tones=["#", "*"],
        client_context="reply",
    )  # fmt: skip
    op = env.demo.run(call.record_response.post(body))
    assert (op.odata_type, op.status, op.recording_location) == ("#microsoft.graph.recordOperation", OperationStatus.Running, None)
    (received,) = env.bot.take(call_id, 1)
    data = received.item["resourceData"]
    location, token = data["recordingLocation"], data["recordingAccessToken"]
    recorded = operation_note(
        **{"@odata.type": "#microsoft.graph.recordOperation"},
        clientContext="reply",
        status="completed",
        resultInfo=notes.result(200, 0, "Action completed, max silence timeout."),
        completionReason="maxSilenceTimeout",
        recordingLocation="{location}",
        recordingAccessToken="{token}",
    )
    assert notes.redact(received.item, {location: "{location}", token: "{token}", call_id: "{callId}", op.id: "{opId}"}) == recorded
    # The SDK model carries both.
    assert (received.model.recording_location, received.model.recording_access_token) == (location, token)
    assert location == f"{env.server.base}/recordings/{op.id}"
    # Not a Graph path: fetched as a bot would, with its own client.
    wav = httpx.get(location, headers={"authorization": f"Bearer {token}"}, verify=env.server.cafile)
    assert wav.status_code == 200 and wav.headers["content-type"] == "application/octet-stream"
    assert (wav.content[:4], wav.content[8:12]) == (b"RIFF", b"WAVE")
    # 2.5 s of 8 kHz 16-bit audio, give or take the real clock's few milliseconds.
    assert 44 + 2500 * 16 <= len(wav.content) <= 44 + 2600 * 16, len(wav.content)
    assert httpx.get(location, verify=env.server.cafile).status_code == 401


def test_record_then_invite_with_replaces_call_id_and_transfer_from_the_group_call(env):
    """The second IVR flow: Alex records a reply; the bot consults Heidi on a call of its own, invites her
    into Alex's call with replacesCallId (the call becomes a group call, the consultation call ends),
    then transfers Alex out of the group call to Sam, leaving Heidi with the bot."""
    from msgraph.generated.communications.calls.item.participants.invite.invite_post_request_body import InvitePostRequestBody
    from msgraph.generated.models.invitation_participant_info import InvitationParticipantInfo
    from msgraph.generated.models.participant_info import ParticipantInfo

    env.sim.behaviour(ALEX, {"kind": "answer", "speak_ms": 500})
    env.sim.behaviour(SILENT_SAM, {"kind": "answer", "after_ms": 100})
    a = flows.answered(env, ALEX, env.demo.client_id)
    call = flows.V1.calls(env.demo).by_call_id(a)
    body = RecordResponsePostRequestBody(max_silence_timeout_in_seconds=1, play_beep=False, client_context="reply")
    rec = env.demo.run(call.record_response.post(body))
    (recorded,) = env.bot.take(a, 1)
    assert (recorded.item["resourceData"]["id"], recorded.item["resourceData"]["status"]) == (rec.id, "completed")
    wav = httpx.get(
        recorded.item["resourceData"]["recordingLocation"],
        headers={"authorization": f"Bearer {recorded.item['resourceData']['recordingAccessToken']}"},
        verify=env.server.cafile,
    )
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"

    b = flows.placed(env, flows.call_to_user(env.bot.url("demo", "consult"), HEIDI))
    invitee = InvitationParticipantInfo(identity=flows.V1.IdentitySet(user=flows.V1.Identity(id=HEIDI, display_name="Heidi Steen")), replaces_call_id=b)
    op = env.demo.run(call.participants.invite.post(InvitePostRequestBody(participants=[invitee], client_context="escalate")))
    assert (op.odata_type, op.status) == ("#microsoft.graph.inviteParticipantsOperation", OperationStatus.Running)
    roster, done = env.bot.take(a, 2)
    assert roster.item["resourceUrl"] == f"/communications/calls/{a}/participants"
    assert sorted(p["info"]["identity"].get("user", {}).get("id", "bot") for p in roster.item["resourceData"]) == sorted(["bot", ALEX, HEIDI])
    invited = done.item["resourceData"]["participants"][0]
    assert invited.pop("participantId") == op.participants[0].participant_id, "the invitee's id in the call"
    assert notes.redact(done.item, {a: "{callId}", op.id: "{opId}"}) == operation_note(
        **{"@odata.type": "#microsoft.graph.inviteParticipantsOperation"},
        clientContext="escalate",
        status="completed",
        resultInfo=None,
        participants=[{
            "@odata.type": "#microsoft.graph.invitationParticipantInfo",
            "identity": {"@odata.type": "#microsoft.graph.identitySet", "user": {"@odata.type": "#microsoft.graph.identity", "id": HEIDI, "displayName": "Heidi Steen", "tenantId": CONTOSO}},
            "replacesCallId": b,
        }],
    )  # fmt: skip
    (ended,) = env.bot.take(b, 1)
    assert (ended.item["changeType"], ended.item["resourceData"]["state"]) == ("deleted", "terminated")

    alex = next(p.id for p in env.demo.run(call.participants.get()).value if p.info.identity.user and p.info.identity.user.id == ALEX)
    transferee = ParticipantInfo(identity=flows.V1.IdentitySet(user=flows.V1.Identity(id=ALEX)), participant_id=alex)
    body = flows.V1.TransferPostRequestBody(transfer_target=flows.user_target(SILENT_SAM), transferee=transferee)
    assert env.demo.run(call.transfer.post(body)) is None
    transferring, accepted, back, roster = env.bot.take(a, 4)
    assert [n.item["resourceData"].get("state") for n in (transferring, accepted, back)] == ["transferring", "transferAccepted", "established"]
    assert back.item["resourceData"]["resultInfo"]["subcode"] == 7015
    assert sorted(p["info"]["identity"].get("user", {}).get("id", "bot") for p in roster.item["resourceData"]) == sorted(["bot", HEIDI])

"""call: transfer (v1.0 seed page en-v1.0-2021.md), through the SDKs' transfer builders: each test asserts
the exact notification sequence the bot receives, like crates/switchboard/tests/it/transfer.rs."""

import pytest
from msgraph.generated.communications.calls.item.transfer.transfer_post_request_body import TransferPostRequestBody
from msgraph.generated.models.call_state import CallState

import flows
import notes
from directory import ALEX, BUSY_BOB, HEIDI, PSTN, RECEPTION, RECEPTION_PHONE

V1 = "en-v1.0-2021.md"
CONTEXT = "9e90d1c1-f61e-43e7-9f75-d420159aae08"
BLIND = [notes.TRANSFERRING, notes.ACCEPTED, notes.ACCEPTED_MEDIA, notes.BLIND_DONE]
CONSULTATIVE = [notes.TRANSFERRING, notes.ACCEPTED, notes.ACCEPTED_MEDIA, notes.CONSULTATIVE_DONE]


def transfer(env, call_id, target, context=None):
    # clientContext is documented on the page but not in the CSDL, so the SDK has no field for it.
    body = TransferPostRequestBody(transfer_target=target, additional_data={"clientContext": context} if context else {})
    assert env.demo.run(env.demo.v1.communications.calls.by_call_id(call_id).transfer.post(body)) is None  # 202


def documented(target, **dynamic):
    """The examples send endpointType, languageId and region, which v1.0 does not declare: dynamic properties."""
    target.additional_data.update(dynamic)
    return target


@pytest.mark.example(V1, "Example 1: Call transfer")

def test_example_1_blind_transfer_to_a_teams_user(env):
    """Blind transfer of Alex to Heidi."""
    call_id = flows.answered(env, ALEX, env.demo.client_id)
    transfer(env, call_id, documented(flows.user_target(HEIDI, "Heidi Steen"), endpointType="default"), CONTEXT)
    notes.expect(env.bot, call_id, BLIND)
    assert env.sim.connected_pairs() == sorted([(ALEX, HEIDI), (HEIDI, ALEX)])
    env.bot.silence(call_id)


@pytest.mark.example(V1, "Example 2: Consultative transfer")

def test_example_2_consultative_transfer(env):
    """Consultative transfer: Alex replaces the bot in its consultation call with Heidi."""
    a = flows.answered(env, ALEX, env.demo.client_id)
    b = flows.placed(env, flows.call_to_user(env.bot.url("demo", "consult"), HEIDI))
    target = documented(flows.user_target(HEIDI, "Heidi Steen"), endpointType="default")
    target.replaces_call_id = b
    transfer(env, a, target, CONTEXT)
    notes.expect(env.bot, a, CONSULTATIVE)
    handed_over = notes.result(200, 7015, "The call was handed over to call {otherId} by a consultative transfer.")
    replaced = notes.with_data(notes.state("deleted", "terminated"), resultInfo=handed_over, terminationReason="AppTransferred")
    notes.expect(env.bot, b, [replaced], {a: "{otherId}"})
    assert env.sim.connected_pairs() == sorted([(ALEX, HEIDI), (HEIDI, ALEX)])


@pytest.mark.example(V1, "Example 3: Call transfer to PSTN number")

def test_example_3_transfer_to_a_pstn_number(env):
    """Heidi called the Reception number; the bot hands her to +12345678901."""
    call_id = flows.answered(env, HEIDI, RECEPTION_PHONE)
    target = documented(flows.phone_target(PSTN), endpointType="default", languageId="languageId-value", region="region-value")
    transfer(env, call_id, target, CONTEXT)
    notes.expect(env.bot, call_id, BLIND)
    assert env.sim.connected_pairs() == sorted([(PSTN, HEIDI), (HEIDI, PSTN)])


@pytest.mark.example(V1, "Example 4: Consultative transfer to PSTN number")

def test_example_4_consultative_transfer_to_a_pstn_number(env):
    """Heidi called the Reception instance; the bot consults +12345678901 from the instance, then transfers."""
    a = flows.answered(env, HEIDI, RECEPTION)
    b = flows.placed(env, flows.call_to_phone(env.bot.url("demo", "consult"), PSTN))
    target = documented(flows.phone_target(PSTN), endpointType="default", languageId="en-us", region="amer")
    target.replaces_call_id = b
    transfer(env, a, target, CONTEXT)
    notes.expect(env.bot, a, CONSULTATIVE)
    assert env.sim.connected_pairs() == sorted([(PSTN, HEIDI), (HEIDI, PSTN)])


@pytest.mark.example(V1, "Example 1: Notification - transfer failed")

def test_a_busy_target_fails_the_transfer_and_the_call_stays_usable(env):
    """Busy Bob: 500/7000, the call is established again, a second transfer succeeds; operations are listed."""
    calls = env.demo.v1.communications.calls
    call_id = flows.answered(env, ALEX, env.demo.client_id)
    transfer(env, call_id, flows.user_target(BUSY_BOB))
    notes.expect(env.bot, call_id, [notes.TRANSFERRING, notes.failed(7000, "blind", "the transfer target is busy")])
    assert env.demo.run(calls.by_call_id(call_id).get()).state == CallState.Established
    env.demo.run(calls.by_call_id(call_id).operations.get())
    transfer(env, call_id, flows.user_target(HEIDI))
    notes.expect(env.bot, call_id, BLIND)


@pytest.mark.example(V1, "Example 2: Notification - transfer failed")

def test_the_consultation_call_ends_first(env):
    """The consultation call is hung up before the transferee acts: 500/7700 with replacesContext = its id."""
    a = flows.answered(env, ALEX, env.demo.client_id)
    b = flows.placed(env, flows.call_to_user(env.bot.url("demo", "consult"), HEIDI))
    # Alex, the transferee, takes two seconds to act on the transfer: time for the race.
    env.sim.behaviour(ALEX, {"kind": "answer", "after_ms": 200, "transfer_delay_ms": 2000})
    try:
        target = flows.user_target(HEIDI)
        target.replaces_call_id = b
        transfer(env, a, target)
        env.sim.hangup(b)
        notes.expect(env.bot, b, [notes.OTHER_HUNG_UP])
        why = "the transfer target could not be reached"
        notes.expect(env.bot, a, [notes.TRANSFERRING, notes.failed(7700, "consultative", why, "{consultId}")], {b: "{consultId}"})
        assert env.demo.run(env.demo.v1.communications.calls.by_call_id(a).get()).state == CallState.Established
    finally:
        env.sim.behaviour(ALEX, {"kind": "answer", "after_ms": 200})


def test_the_beta_sdk_transfers_on_both_beta_paths(env):
    """The beta SDK's transfer builders, on /beta/communications/calls and the deprecated /beta/app/calls:
    a modern app gets today's notifications on either path."""
    from msgraph_beta.generated.communications.calls.item.transfer.transfer_post_request_body import (
        TransferPostRequestBody as BetaBody,
    )
    from msgraph_beta.generated.models.identity import Identity
    from msgraph_beta.generated.models.identity_set import IdentitySet
    from msgraph_beta.generated.models.invitation_participant_info import InvitationParticipantInfo

    heidi = InvitationParticipantInfo(identity=IdentitySet(user=Identity(id=HEIDI)))
    for calls in (env.demo.beta.communications.calls, env.demo.beta.app.calls):
        call_id = flows.answered(env, ALEX, env.demo.client_id)
        assert env.demo.run(calls.by_call_id(call_id).transfer.post(BetaBody(transfer_target=heidi, additional_data={"clientContext": CONTEXT}))) is None
        notes.expect(env.bot, call_id, BLIND)

"""call: transfer (seed pages en-v1.0-2021.md and en-beta-2021.md), through the SDKs' transfer builders:
each test runs once per page, the v1.0 SDK on /v1.0 and the beta SDK on /beta, and asserts the exact
notification sequence the bot receives, like crates/switchboard/tests/it/transfer.rs."""

import pytest

import flows
import notes
from directory import ALEX, BUSY_BOB, CONTOSO, HEIDI, PSTN, RECEPTION, RECEPTION_PHONE

V1 = "en-v1.0-2021.md"
BETA = "en-beta-2021.md"
CONTEXT = "9e90d1c1-f61e-43e7-9f75-d420159aae08"
# This module's server: transfers in progress must not reach their deadline while a test acts (the
# consultation-call race gives the transferee 5 s); none of these tests is about that deadline.
RING_TIMEOUT_MS = 20000
BLIND = [notes.TRANSFERRING, notes.ACCEPTED, notes.ACCEPTED_MEDIA, notes.BLIND_DONE]
CONSULTATIVE = [notes.TRANSFERRING, notes.ACCEPTED, notes.ACCEPTED_MEDIA, notes.CONSULTATIVE_DONE]


def pages(title):
    """One run per page for the example `title` (both pages use the same headings), each through its
    page's SDK, so the report has a row per page."""
    return pytest.mark.parametrize("sdk", [
        pytest.param(flows.V1, marks=pytest.mark.example(V1, title), id="v1.0"),
        pytest.param(flows.BETA, marks=pytest.mark.example(BETA, title), id="beta"),
    ])  # fmt: skip


def transfer(env, sdk, call_id, target, context=None):
    # clientContext is documented on both pages but in neither CSDL, so neither SDK has a field for it.
    body = sdk.TransferPostRequestBody(transfer_target=target, additional_data={"clientContext": context} if context else {})
    assert env.demo.run(sdk.calls(env.demo).by_call_id(call_id).transfer.post(body)) is None  # 202


def documented(sdk, target, **dynamic):
    """The examples send endpointType, a property only in beta's model, and languageId and region,
    which neither declares: dynamic properties."""
    if sdk is flows.BETA:
        target.endpoint_type = sdk.EndpointType.Default
    else:
        dynamic["endpointType"] = "default"
    target.additional_data.update(dynamic)
    return target


def heidi(sdk, **beta_only):
    """Heidi as the Teams-user examples name her. The beta page also sends her tenantId (not an identity
    property in the SDK: dynamic; Contoso's here, the page's is Microsoft's) and a languageId and region."""
    target = documented(sdk, flows.user_target(HEIDI, "Heidi Steen", sdk))
    if sdk is flows.BETA:
        target.identity.user.additional_data["tenantId"] = CONTOSO
        target.additional_data.update(beta_only)
    return target


@pages("Example 1: Call transfer")
def test_example_1_blind_transfer_to_a_teams_user(env, sdk):
    """Blind transfer of Alex to Heidi."""
    call_id = flows.answered(env, ALEX, env.demo.client_id, sdk)
    transfer(env, sdk, call_id, heidi(sdk, languageId="languageId-value", region="region-value"), CONTEXT)
    notes.expect(env.bot, call_id, BLIND)
    assert env.sim.connected_pairs() == sorted([(ALEX, HEIDI), (HEIDI, ALEX)])
    env.bot.silence(call_id)


@pages("Example 2: Consultative transfer")
def test_example_2_consultative_transfer(env, sdk):
    """Consultative transfer: Alex replaces the bot in its consultation call with Heidi."""
    a = flows.answered(env, ALEX, env.demo.client_id, sdk)
    b = flows.placed(env, flows.call_to_user(env.bot.url("demo", "consult"), HEIDI, sdk), sdk)
    target = heidi(sdk, languageId="en-us", region="amer")
    target.replaces_call_id = b
    transfer(env, sdk, a, target, CONTEXT)
    notes.expect(env.bot, a, CONSULTATIVE)
    handed_over = notes.result(200, 7015, "The call was handed over to call {otherId} by a consultative transfer.")
    replaced = notes.with_data(notes.state("deleted", "terminated"), resultInfo=handed_over, terminationReason="AppTransferred")
    notes.expect(env.bot, b, [replaced], {a: "{otherId}"})
    assert env.sim.connected_pairs() == sorted([(ALEX, HEIDI), (HEIDI, ALEX)])


@pages("Example 3: Call transfer to PSTN number")
def test_example_3_transfer_to_a_pstn_number(env, sdk):
    """Heidi called the Reception number; the bot hands her to +12345678901."""
    call_id = flows.answered(env, HEIDI, RECEPTION_PHONE, sdk)
    target = documented(sdk, flows.phone_target(PSTN, sdk), languageId="languageId-value", region="region-value")
    transfer(env, sdk, call_id, target, CONTEXT)
    notes.expect(env.bot, call_id, BLIND)
    assert env.sim.connected_pairs() == sorted([(PSTN, HEIDI), (HEIDI, PSTN)])


@pages("Example 4: Consultative transfer to PSTN number")
def test_example_4_consultative_transfer_to_a_pstn_number(env, sdk):
    """Heidi called the Reception instance; the bot consults +12345678901 from the instance, then transfers."""
    a = flows.answered(env, HEIDI, RECEPTION, sdk)
    b = flows.placed(env, flows.call_to_phone(env.bot.url("demo", "consult"), PSTN, sdk), sdk)
    target = documented(sdk, flows.phone_target(PSTN, sdk), languageId="en-us", region="amer")
    target.replaces_call_id = b
    transfer(env, sdk, a, target, CONTEXT)
    notes.expect(env.bot, a, CONSULTATIVE)
    assert env.sim.connected_pairs() == sorted([(PSTN, HEIDI), (HEIDI, PSTN)])


@pages("Example 1: Notification - transfer failed")
def test_a_busy_target_fails_the_transfer_and_the_call_stays_usable(env, sdk):
    """Busy Bob: 500/7000, the call is established again, a second transfer succeeds; operations are listed."""
    calls = sdk.calls(env.demo)
    call_id = flows.answered(env, ALEX, env.demo.client_id, sdk)
    transfer(env, sdk, call_id, flows.user_target(BUSY_BOB, sdk=sdk))
    notes.expect(env.bot, call_id, [notes.TRANSFERRING, notes.failed(7000, "blind", "the transfer target is busy")])
    assert env.demo.run(calls.by_call_id(call_id).get()).state == sdk.CallState.Established
    env.demo.run(calls.by_call_id(call_id).operations.get())
    transfer(env, sdk, call_id, flows.user_target(HEIDI, sdk=sdk))
    notes.expect(env.bot, call_id, BLIND)


@pages("Example 2: Notification - transfer failed")
def test_the_consultation_call_ends_first(env, sdk):
    """The consultation call is hung up before the transferee acts: 500/7700 with replacesContext = its id."""
    a = flows.answered(env, ALEX, env.demo.client_id, sdk)
    b = flows.placed(env, flows.call_to_user(env.bot.url("demo", "consult"), HEIDI, sdk), sdk)
    # Alex, the transferee, takes five seconds to act on the transfer: time for the race, whatever the load.
    env.sim.behaviour(ALEX, {"kind": "answer", "after_ms": 200, "transfer_delay_ms": 5000})
    try:
        target = flows.user_target(HEIDI, sdk=sdk)
        target.replaces_call_id = b
        transfer(env, sdk, a, target)
        env.sim.hangup(b)
        notes.expect(env.bot, b, [notes.OTHER_HUNG_UP])
        why = "the transfer target could not be reached"
        notes.expect(env.bot, a, [notes.TRANSFERRING, notes.failed(7700, "consultative", why, "{consultId}")], {b: "{consultId}"})
        assert env.demo.run(sdk.calls(env.demo).by_call_id(a).get()).state == sdk.CallState.Established
    finally:
        env.sim.behaviour(ALEX, {"kind": "answer", "after_ms": 200})


def test_the_beta_sdk_transfers_on_both_beta_paths(env):
    """The beta SDK's transfer builders, on /beta/communications/calls and the deprecated /beta/app/calls:
    a modern app gets today's notifications on either path."""
    beta = flows.BETA
    body = beta.TransferPostRequestBody(transfer_target=flows.user_target(HEIDI, sdk=beta), additional_data={"clientContext": CONTEXT})
    for calls in (beta.calls(env.demo), env.demo.beta.app.calls):
        call_id = flows.answered(env, ALEX, env.demo.client_id)
        assert env.demo.run(calls.by_call_id(call_id).transfer.post(body)) is None
        notes.expect(env.bot, call_id, BLIND)

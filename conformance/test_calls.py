"""The call lifecycle through the SDKs: outgoing calls, answering, get, hang up, operations, errors."""

import pytest
from msgraph.generated.models.call_state import CallState
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

import flows
import notes
from directory import ALEX, HEIDI, PSTN


def hang_up(env, call_id):
    env.demo.run(env.demo.v1.communications.calls.by_call_id(call_id).delete())
    notes.expect(env.bot, call_id, [notes.TERMINATING, notes.HUNG_UP])


def test_outgoing_call_to_a_user(env):
    """POST calls with a user target (v1.0 SDK), get it, list its operations, hang up."""
    calls = env.demo.v1.communications.calls
    call_id = flows.placed(env, flows.call_to_user(env.bot.url("demo", "out"), HEIDI))
    call = env.demo.run(calls.by_call_id(call_id).get())
    assert (call.state, call.targets[0].identity.user.id) == (CallState.Established, HEIDI)
    operations = env.demo.run(calls.by_call_id(call_id).operations.get())
    assert operations.value == []
    hang_up(env, call_id)
    env.bot.silence(call_id)


def test_outgoing_pstn_call_from_an_application_instance(env):
    """POST calls with source applicationInstance to a PSTN number (v1.0 SDK)."""
    call_id = flows.placed(env, flows.call_to_phone(env.bot.url("demo", "pstn"), PSTN))
    call = env.demo.run(env.demo.v1.communications.calls.by_call_id(call_id).get())
    assert call.state == CallState.Established
    hang_up(env, call_id)


def test_answer_an_incoming_call(env):
    """An incoming call (sim API) answered with the v1.0 SDK; get; hang up."""
    call_id = flows.answered(env, ALEX, env.demo.client_id)
    call = env.demo.run(env.demo.v1.communications.calls.by_call_id(call_id).get())
    assert call.state == CallState.Established
    hang_up(env, call_id)


def test_the_beta_sdk_places_and_gets_a_call(env):
    """POST and GET calls through the beta SDK."""
    from msgraph_beta.generated.models.call import Call
    from msgraph_beta.generated.models.identity import Identity
    from msgraph_beta.generated.models.identity_set import IdentitySet
    from msgraph_beta.generated.models.invitation_participant_info import InvitationParticipantInfo
    from msgraph_beta.generated.models.modality import Modality
    from msgraph_beta.generated.models.service_hosted_media_config import ServiceHostedMediaConfig

    body = Call(
        callback_uri=env.bot.url("demo", "beta"), requested_modalities=[Modality.Audio], media_config=ServiceHostedMediaConfig(),
        targets=[InvitationParticipantInfo(identity=IdentitySet(user=Identity(id=HEIDI)))],
    )  # fmt: skip
    calls = env.demo.beta.communications.calls
    call = env.demo.run(calls.post(body))
    notes.expect(env.bot, call.id, [notes.ESTABLISHING, notes.ESTABLISHED])
    assert env.demo.run(calls.by_call_id(call.id).get()).state.value == "established"
    hang_up(env, call.id)


def test_errors_use_the_graph_envelope(env):
    """An unknown call is a 404 ODataError the SDK raises with Graph's code."""
    with pytest.raises(ODataError) as raised:
        env.demo.run(env.demo.v1.communications.calls.by_call_id("nope").get())
    assert raised.value.response_status_code == 404
    assert raised.value.error.code == "8522"

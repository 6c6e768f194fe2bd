"""Call set-ups shared by the tests, through the SDKs' request builders and models."""

from msgraph.generated.communications.calls.item.answer.answer_post_request_body import AnswerPostRequestBody
from msgraph.generated.models.call import Call
from msgraph.generated.models.communications_identity_set import CommunicationsIdentitySet
from msgraph.generated.models.identity import Identity
from msgraph.generated.models.identity_set import IdentitySet
from msgraph.generated.models.invitation_participant_info import InvitationParticipantInfo
from msgraph.generated.models.modality import Modality
from msgraph.generated.models.participant_info import ParticipantInfo
from msgraph.generated.models.service_hosted_media_config import ServiceHostedMediaConfig

import notes
from directory import CONTOSO, RECEPTION


def user_target(user_id, display_name=None):
    return InvitationParticipantInfo(identity=IdentitySet(user=Identity(id=user_id, display_name=display_name)))


def phone_target(number):
    return InvitationParticipantInfo(identity=CommunicationsIdentitySet(phone=Identity(id=number)))


def call_to_user(callback, user_id):
    return Call(
        callback_uri=callback, targets=[user_target(user_id)], requested_modalities=[Modality.Audio],
        media_config=ServiceHostedMediaConfig(),
    )  # fmt: skip


def call_to_phone(callback, number):
    """A PSTN call placed from the Contoso Reception application instance (Graph requires the instance)."""
    source = ParticipantInfo(
        identity=CommunicationsIdentitySet(application_instance=Identity(id=RECEPTION, display_name="Contoso Reception"))
    )
    return Call(
        callback_uri=callback, source=source, targets=[phone_target(number)], requested_modalities=[Modality.Audio],
        media_config=ServiceHostedMediaConfig(), tenant_id=CONTOSO,
    )  # fmt: skip


def answer_body(callback):
    return AnswerPostRequestBody(
        callback_uri=callback, accepted_modalities=[Modality.Audio], media_config=ServiceHostedMediaConfig()
    )


def answered(env, caller, to):
    """An incoming call from `caller` to `to`, answered by the Demo Bot with the v1.0 SDK; its
    created/establishing/established notifications are checked and consumed."""
    call_id = env.sim.call(caller, to)
    (created,) = env.bot.take(call_id, 1)
    assert (created.item["changeType"], created.item["resourceData"]["state"]) == ("created", "incoming")
    env.demo.run(env.demo.v1.communications.calls.by_call_id(call_id).answer.post(answer_body(env.bot.url("demo", "answered"))))
    notes.expect(env.bot, call_id, [notes.ESTABLISHING, notes.ESTABLISHED])
    return call_id


def placed(env, body):
    """An outgoing call of the Demo Bot (v1.0 SDK), established; its notifications are checked and consumed."""
    call = env.demo.run(env.demo.v1.communications.calls.post(body))
    notes.expect(env.bot, call.id, [notes.ESTABLISHING, notes.ESTABLISHED])
    return call.id

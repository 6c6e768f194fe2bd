"""Call set-ups shared by the tests, through the SDKs' request builders and models: V1 (msgraph) by
default, or BETA (msgraph_beta), so one test can reproduce a v1.0 page's example and its beta twin."""

import importlib
import re

import notes
from directory import CONTOSO, RECEPTION


def _load(package, name):
    """Class `name` from a kiota package: both SDKs put each class in the snake_case module of its name."""
    module = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    return getattr(importlib.import_module(f"{package}.{module}"), name)


class Sdk:
    """One official Python SDK: its models (as attributes, by class name) and the Demo Bot's builders.
    Both SDKs are generated from the same layout, so the same names load from either package."""

    MODELS = (
        "Call", "CallState", "CommunicationsIdentitySet", "EndpointType", "Identity", "IdentitySet",
        "InvitationParticipantInfo", "Modality", "ParticipantInfo", "ServiceHostedMediaConfig",
    )  # fmt: skip

    def __init__(self, version, package, client):
        self.version, self.client = version, client  # client: the graph.Graph attribute, "v1" or "beta"
        for name in self.MODELS:
            setattr(self, name, _load(f"{package}.generated.models", name))
        self.AnswerPostRequestBody = _load(f"{package}.generated.communications.calls.item.answer", "AnswerPostRequestBody")
        self.TransferPostRequestBody = _load(f"{package}.generated.communications.calls.item.transfer", "TransferPostRequestBody")

    def calls(self, app):
        """`app`'s communications.calls request builder in this SDK (/v1.0 or /beta)."""
        return getattr(app, self.client).communications.calls


V1 = Sdk("v1.0", "msgraph", "v1")
BETA = Sdk("beta", "msgraph_beta", "beta")


def user_target(user_id, display_name=None, sdk=V1):
    return sdk.InvitationParticipantInfo(identity=sdk.IdentitySet(user=sdk.Identity(id=user_id, display_name=display_name)))


def phone_target(number, sdk=V1):
    return sdk.InvitationParticipantInfo(identity=sdk.CommunicationsIdentitySet(phone=sdk.Identity(id=number)))


def call_to_user(callback, user_id, sdk=V1):
    return sdk.Call(
        callback_uri=callback, targets=[user_target(user_id, sdk=sdk)], requested_modalities=[sdk.Modality.Audio],
        media_config=sdk.ServiceHostedMediaConfig(),
    )  # fmt: skip


def call_to_phone(callback, number, sdk=V1):
    """A PSTN call placed from the Contoso Reception application instance (Graph requires the instance)."""
    instance = sdk.Identity(id=RECEPTION, display_name="Contoso Reception")
    source = sdk.ParticipantInfo(identity=sdk.CommunicationsIdentitySet(application_instance=instance))
    return sdk.Call(
        callback_uri=callback, source=source, targets=[phone_target(number, sdk)], requested_modalities=[sdk.Modality.Audio],
        media_config=sdk.ServiceHostedMediaConfig(), tenant_id=CONTOSO,
    )  # fmt: skip


def answer_body(callback, sdk=V1):
    return sdk.AnswerPostRequestBody(
        callback_uri=callback, accepted_modalities=[sdk.Modality.Audio], media_config=sdk.ServiceHostedMediaConfig()
    )


def answered(env, caller, to, sdk=V1):
    """An incoming call from `caller` to `to`, answered by the Demo Bot with `sdk`; its
    created/establishing/established notifications are checked and consumed."""
    call_id = env.sim.call(caller, to)
    (created,) = env.bot.take(call_id, 1)
    assert (created.item["changeType"], created.item["resourceData"]["state"]) == ("created", "incoming")
    env.demo.run(sdk.calls(env.demo).by_call_id(call_id).answer.post(answer_body(env.bot.url("demo", "answered"), sdk)))
    notes.expect(env.bot, call_id, [notes.ESTABLISHING, notes.ESTABLISHED])
    return call_id


def placed(env, body, sdk=V1):
    """An outgoing call of the Demo Bot (`sdk`, whose models built `body`), established; its
    notifications are checked and consumed."""
    call = env.demo.run(sdk.calls(env.demo).post(body))
    notes.expect(env.bot, call.id, [notes.ESTABLISHING, notes.ESTABLISHED])
    return call.id

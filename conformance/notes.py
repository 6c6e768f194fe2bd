"""Expected notifications, built like the Rust integration tests' helpers (tests/it/harness.rs)."""

import copy

import report


def redact(item, names):
    """`item` with every id in `names` ({id: placeholder}) replaced, so items compare exactly."""

    def walk(v):
        if isinstance(v, str):
            for real, placeholder in names.items():
                v = v.replace(real, placeholder)
            return v
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(copy.deepcopy(item))


def state(change, state_):
    return {
        "@odata.type": "#microsoft.graph.commsNotification",
        "changeType": change,
        "resourceUrl": "/communications/calls/{callId}",
        "resourceData": {"@odata.type": "#microsoft.graph.call", "state": state_},
    }


def with_data(note, **data):
    note = copy.deepcopy(note)
    note["resourceData"].update(data)
    return note


def result(code, subcode, message):
    return {"@odata.type": "#microsoft.graph.resultInfo", "code": code, "subcode": subcode, "message": message}


def media(audio):
    return {"@odata.type": "#microsoft.graph.callMediaState", "audio": audio}


ESTABLISHING = state("updated", "establishing")
ESTABLISHED = with_data(state("updated", "established"), mediaState=media("active"))
TRANSFERRING = state("updated", "transferring")
ACCEPTED = state("updated", "transferAccepted")
ACCEPTED_MEDIA = with_data(ACCEPTED, mediaState=media("inactive"))
BLIND_DONE = with_data(state("deleted", "terminated"), resultInfo=result(0, 7015, "GracefulTransferCompleted"))
CONSULTATIVE_DONE = with_data(state("deleted", "terminated"), terminationReason="AppTransferred")
TERMINATING = state("updated", "terminating")
HUNG_UP = with_data(state("deleted", "terminated"), resultInfo=result(200, 7000, "The call was ended by the application."))
OTHER_HUNG_UP = with_data(state("deleted", "terminated"), resultInfo=result(200, 4521, "The other participant ended the call."))


def failed(subcode, kind, why, replaces_context=None):
    message = f"The {kind} transfer failed: {why}. DiagCode: 500#{subcode}.@"
    note = with_data(state("updated", "established"), resultInfo=result(500, subcode, message))
    return with_data(note, replacesContext=replaces_context) if replaces_context else note


def expect(bot, call_id, expected, names=None):
    """Asserts the next notifications about `call_id` are exactly `expected` (ids redacted)."""
    names = {call_id: "{callId}", **(names or {})}
    got = [redact(r.item, names) for r in bot.take(call_id, len(expected))]
    assert got == expected
    report.current().sequence = True
    return got

"""What the strict schema check accepts beyond Microsoft's schemas, and why. The one place for it.

Keys are (schema type title, property). `UNDECLARED` lists properties that the OpenAPI documents in
shared/graph do not declare on that type; `VALUE_EXCEPTIONS` lists declared properties whose value
may differ from the declared type or enum. Each applies to the dialects named in the key of the
outer dict: "v1.0", "beta" (today's beta) and "beta-2018" (the 2018 envelope of the Legacy Bot).
"""

ANNOTATIONS = {
    "@odata.type": "OData annotation; every Graph object may carry it",
    "@odata.id": "OData annotation; Graph puts it in notification resourceData (2018 seed page)",
    "@odata.etag": "OData annotation; Graph puts it in notification resourceData (2018 seed page)",
    "@odata.context": "OData annotation on entity and collection responses (Graph JSON conventions)",
}

_MODERN = {
    ("call", "terminationReason"): "undeclared in v1.0 CSDL but sent by Graph (`call` is open): the v1.0 seed "
    "page's consultative 'transfer completed' notification carries terminationReason: AppTransferred",
    ("call", "replacesContext"): "undeclared dynamic property (`call` is open): the v1.0 seed page's "
    "'transfer failed' notifications carry replacesContext",
    ("identity", "tenantId"): "dynamic property of the open `identity` type; Graph's create/get call "
    "examples put tenantId inside `user`",
}

_V1_ONLY = {
    ("invitationParticipantInfo", "endpointType"): "undeclared in v1.0 (declared in beta); the v1.0 seed "
    "page's transfer requests send it and invitationParticipantInfo is open",
    ("recordOperation", "completionReason"): "undeclared in v1.0 (declared in beta); Graph's v1.0 "
    "cancelMediaProcessing page shows a cancelled recordOperation notification carrying it (the type is open)",
    ("playPromptOperation", "completionReason"): "undeclared in v1.0 (declared in beta, playPromptCompletionReason); "
    "sent as for recordOperation, so a bot learns why a prompt stopped",
}

_2018 = {
    ("resultInfo", "subCode"): "the 2018 seed page spells it subCode and uses it for progress "
    "(transferring, transferAccepted)",
}

UNDECLARED = {
    "v1.0": {**_MODERN, **_V1_ONLY},
    "beta": dict(_MODERN),
    "beta-2018": {**_MODERN, **_2018},
}

_OPERATION_STATUS = {
    (t, "status"): "CSDL enum members are PascalCase (Running); Graph's docs and notifications use camelCase "
    "(running); the SDKs' parser capitalises the first letter, so both parse"
    for t in (
        "commsOperation", "playPromptOperation", "recordOperation", "subscribeToToneOperation", "sendDtmfTonesOperation",
        "cancelMediaProcessingOperation", "muteParticipantOperation", "unmuteParticipantOperation",
        "updateRecordingStatusOperation", "inviteParticipantsOperation", "startHoldMusicOperation", "stopHoldMusicOperation",
    )
}  # fmt: skip

VALUE_EXCEPTIONS = {
    "v1.0": dict(_OPERATION_STATUS),
    "beta": dict(_OPERATION_STATUS),
    "beta-2018": {
        **_OPERATION_STATUS,
        ("resultInfo", "code"): "the 2018 seed page sends codes as strings (\"200\"); the schema says int32",
    },
}

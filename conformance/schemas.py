"""Strict validation of JSON bodies against Microsoft's OpenAPI documents in shared/graph.

jsonschema alone cannot be strict here: the documents model inheritance with allOf and open types
with `additionalProperties`, so "no undeclared property" would reject every derived type. So this
walks objects itself (following $ref, allOf, the nullable anyOf wrappers and the @odata.type
discriminator to the derived type), reports every property the type does not declare, and hands
each leaf value to the OpenAPI 3.0 validator for its declared type, format, enum and nullability.
"""

import functools
import pathlib
import re

import yaml
from openapi_schema_validator import OAS30Validator

from allowlist import ANNOTATIONS, UNDECLARED, VALUE_EXCEPTIONS

SHARED = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "graph"
FILES = {"v1.0": "openapi-calls-v1.0.yaml", "beta": "openapi-calls-beta.yaml"}


@functools.lru_cache(maxsize=None)
def document(version):
    return yaml.safe_load((SHARED / FILES[version]).read_text())


def _ref(doc, schema):
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _object_branch(doc, schema):
    """The object schema behind a property: its $ref, or the $ref inside a wrapper (the documents write
    nullable complex types as anyOf [$ref, {type: object, nullable}] and plain ones as allOf [$ref])."""
    schema = _ref(doc, schema)
    wrapped = schema.get("anyOf") or schema.get("oneOf") or (schema["allOf"] if len(schema.get("allOf", [])) == 1 else None)
    if wrapped and "title" not in schema:
        for branch in wrapped:
            if "$ref" in branch:
                return _ref(doc, branch)
    return schema


def _flatten(doc, schema):
    """(title, declared properties, discriminator mapping) of an object schema, inheritance merged."""
    schema = _ref(doc, schema)
    title, props, mapping = schema.get("title"), {}, {}
    for part in schema.get("allOf", []):
        t, p, m = _flatten(doc, part)
        props.update(p)
        mapping.update(m)
        title = schema.get("title") or t  # the last part is the derived type's own
    props.update(schema.get("properties", {}))
    mapping.update(schema.get("discriminator", {}).get("mapping", {}))
    return title, props, mapping


class Checker:
    """Collects violations as 'path: problem' strings for one body."""

    def __init__(self, version, dialect):
        self.doc, self.dialect, self.errors = document(version), dialect, []

    def leaf(self, prop_schema, value, path, owner, name):
        schema = {"components": self.doc["components"], **prop_schema}
        for err in OAS30Validator(schema).iter_errors(value):
            if (owner, name) in VALUE_EXCEPTIONS[self.dialect]:
                continue
            self.errors.append(f"{path}: {err.message}")

    def value(self, prop_schema, value, path, owner, name):
        if isinstance(value, dict):
            target = _object_branch(self.doc, prop_schema)
            if "properties" in target or "allOf" in target:
                return self.object(target, value, path)
        if isinstance(value, list):
            items = _ref(self.doc, prop_schema).get("items")
            if items is not None:
                return [self.value(items, v, f"{path}[{i}]", owner, name) for i, v in enumerate(value)]
        self.leaf(prop_schema, value, path, owner, name)

    def object(self, schema, obj, path):
        title, props, mapping = _flatten(self.doc, schema)
        odata_type = obj.get("@odata.type")
        if odata_type in mapping:  # a derived type: check against what it declares
            title, props, _ = _flatten(self.doc, {"$ref": mapping[odata_type]})
        elif odata_type is not None and odata_type != f"#microsoft.graph.{title}":
            self.errors.append(f"{path}: @odata.type {odata_type!r} is not {title} or a type derived from it")
        for name, value in obj.items():
            where = f"{path}.{name}"
            if name in props and name not in ANNOTATIONS:
                self.value(props[name], value, where, title, name)
            elif name in ANNOTATIONS:
                if not isinstance(value, str):
                    self.errors.append(f"{where}: annotation must be a string")
            elif (title, name) not in UNDECLARED[self.dialect]:
                self.errors.append(f"{where}: undeclared property of microsoft.graph.{title}")
            elif isinstance(value, dict):  # allowlisted dynamic object: its own shape is unknown
                pass


def check(version, dialect, schema_name, body, path="$", skip=()):
    """Violations of `body` against components.schemas[schema_name]; properties in `skip` are
    left to the caller (resourceData, which the documents leave untyped)."""
    checker = Checker(version, dialect)
    body = {k: v for k, v in body.items() if k not in skip} if isinstance(body, dict) else body
    if not isinstance(body, dict):
        return [f"{path}: expected an object"]
    checker.object({"$ref": f"#/components/schemas/{schema_name}"}, body, path)
    return checker.errors


# An operation's subtype (playPromptOperation, recordOperation, ...) is checked as what it declares,
# through commsOperation's discriminator.
OPERATION_TYPES = (
    "commsOperation", "playPromptOperation", "recordOperation", "subscribeToToneOperation", "sendDtmfTonesOperation",
    "cancelMediaProcessingOperation", "muteParticipantOperation", "unmuteParticipantOperation",
    "updateRecordingStatusOperation", "inviteParticipantsOperation", "startHoldMusicOperation", "stopHoldMusicOperation",
)  # fmt: skip
RESOURCE_TYPES = {
    "#microsoft.graph.call": "microsoft.graph.call",
    **{f"#microsoft.graph.{t}": "microsoft.graph.commsOperation" for t in OPERATION_TYPES},
}


def check_notifications(version, dialect, body):
    """The commsNotifications envelope, each commsNotification, and each resourceData as the call or
    commsOperation its @odata.type names; a roster update's resourceData is an array of participants."""
    errors = check(version, dialect, "microsoft.graph.commsNotifications", body, skip=("value",))
    for i, item in enumerate(body.get("value") or []):
        where = f"$.value[{i}]"
        errors += check(version, dialect, "microsoft.graph.commsNotification", item, where, skip=("resourceData",))
        data = item.get("resourceData")
        if isinstance(data, list):
            for j, p in enumerate(data):
                errors += check(version, dialect, "microsoft.graph.participant", p, f"{where}.resourceData[{j}]")
            continue
        kind = RESOURCE_TYPES.get((data or {}).get("@odata.type")) if isinstance(data, dict) else None
        if kind is None:
            errors.append(f"{where}.resourceData: not a call or commsOperation: {data!r}")
        else:
            errors += check(version, dialect, kind, data, f"{where}.resourceData")
    if not body.get("value"):
        errors.append("$.value: no notifications")
    return errors


# Which schema an API response must match, by route (version prefix stripped, ids templated).
RESPONSE_SCHEMAS = [
    (re.compile(r"^(/communications|/app|/applications/\{app-id\})/calls$"), "microsoft.graph.call"),
    (re.compile(r"^(/communications|/app|/applications/\{app-id\})/calls/\{call-id\}$"), "microsoft.graph.call"),
    (re.compile(r".*/operations$"), "microsoft.graph.commsOperationCollectionResponse"),
    (re.compile(r".*/operations/\{op-id\}$"), "microsoft.graph.commsOperation"),
    # The media actions answer with their operation.
    (
        re.compile(
            r".*/calls/\{call-id\}/(playPrompt|recordResponse|subscribeToTone|sendDtmfTones|cancelMediaProcessing|mute|unmute"
            r"|updateRecordingStatus|participants/invite|participants/\{participant-id\}/(mute|startHoldMusic|stopHoldMusic))$"
        ),
        "microsoft.graph.commsOperation",
    ),
    (re.compile(r".*/participants$"), "microsoft.graph.participantCollectionResponse"),
    (re.compile(r".*/participants/\{participant-id\}$"), "microsoft.graph.participant"),
]


def check_response(version, dialect, method, template, status, body):
    """An API response: errors are the ODataError envelope, 202/204 are empty, the rest by route."""
    if status >= 400:
        return check(version, dialect, "microsoft.graph.ODataErrors.ODataError", body)
    if status in (202, 204):
        return [] if body is None else [f"$: {status} with a body: {body!r}"]
    for pattern, schema in RESPONSE_SCHEMAS:
        if pattern.match(template):
            return check(version, dialect, schema, body)
    return [f"$: no schema known for {method} {template}"]

"""Parsing with the official SDKs' models, through kiota's JSON parse node, as a bot built on the SDK
would. Neither msgraph-sdk nor msgraph-beta-sdk for Python ships a commsNotifications model (kiota
trims types no operation returns), so the two-field envelope is a small Parsable here; every
resourceData is parsed by the SDK's own Entity discriminator into its Call / CommsOperation model
(a roster update's, an array, into Participant models).
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from kiota_abstractions.serialization import AdditionalDataHolder, Parsable, ParseNode
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from msgraph.generated.models.entity import Entity as EntityV1
from msgraph_beta.generated.models.entity import Entity as EntityBeta

ENTITY = {"v1.0": EntityV1, "beta": EntityBeta}


def _snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.replace("@odata.", "odata_")).lower()


def parse(factory, data):
    """A kiota model from a JSON value (dict), with the SDK's parse node."""
    node = JsonParseNodeFactory().get_root_parse_node("application/json", json.dumps(data).encode())
    return node.get_object_value(factory)


def lost(model, raw, path="$"):
    """Declared properties present in `raw` that the parsed model lost (None): what the SDK could not
    read, e.g. a string where it expects an int. Walks nested models."""
    missing = []
    for name in model.get_field_deserializers():
        if raw.get(name) is None:
            continue
        value = getattr(model, _snake(name), None)
        if value is None:
            missing.append(f"{path}.{name}")
        elif isinstance(value, Parsable) and isinstance(raw[name], dict):
            missing += lost(value, raw[name], f"{path}.{name}")
    return missing


@dataclass
class CommsNotification(AdditionalDataHolder, Parsable):
    """microsoft.graph.commsNotification: changeType, resourceUrl; resourceData is dynamic."""

    additional_data: dict[str, Any] = field(default_factory=dict)
    change_type: Optional[str] = None
    resource_url: Optional[str] = None

    @staticmethod
    def create_from_discriminator_value(parse_node: ParseNode) -> "CommsNotification":
        return CommsNotification()

    def get_field_deserializers(self):
        return {
            "changeType": lambda n: setattr(self, "change_type", n.get_str_value()),
            "resourceUrl": lambda n: setattr(self, "resource_url", n.get_str_value()),
        }

    def serialize(self, writer):
        raise NotImplementedError


@dataclass
class CommsNotifications(AdditionalDataHolder, Parsable):
    additional_data: dict[str, Any] = field(default_factory=dict)
    value: Optional[list] = None

    @staticmethod
    def create_from_discriminator_value(parse_node: ParseNode) -> "CommsNotifications":
        return CommsNotifications()

    def get_field_deserializers(self):
        return {
            "value": lambda n: setattr(
                self, "value", n.get_collection_of_object_values(CommsNotification)
            )
        }

    def serialize(self, writer):
        raise NotImplementedError


def parse_notifications(version, body):
    """(envelope, [resource models], [problems]) for a notification POST body."""
    envelope = parse(CommsNotifications, body)
    models, problems = [], []
    for i, (item, raw) in enumerate(zip(envelope.value or [], body.get("value", []))):
        data = raw.get("resourceData") or {}
        if isinstance(data, list):
            # A roster update: every participant through the SDK's own Participant model.
            roster = [parse(ENTITY[version], p) for p in data]
            for j, (model, p) in enumerate(zip(roster, data)):
                if type(model).__name__ != "Participant":
                    problems.append(f"$.value[{i}].resourceData[{j}]: the SDK made a {type(model).__name__}")
                problems += lost(model, p, f"$.value[{i}].resourceData[{j}]")
            models.append(roster)
            continue
        model = parse(ENTITY[version], data)
        # A call, or an operation as its own subtype (playPromptOperation, recordOperation, ...).
        if type(model).__name__ != "Call" and not type(model).__name__.endswith("Operation"):
            problems.append(f"$.value[{i}].resourceData: the SDK made a {type(model).__name__}")
        problems += lost(model, data, f"$.value[{i}].resourceData")
        models.append(model)
    if len(models) != len(body.get("value", [])):
        problems.append("$.value: the SDK did not read every item")
    return envelope, models, problems

"""Tests of the .avsc files, ids.json and the schema loader: the contract outside users rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from fastavro import parse_schema

from schemas import load_schema, pinned_ids, record_names, schema_json

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
RAW = {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.avsc"))}
RECORDS = sorted(name for name, raw in RAW.items() if raw["type"] == "record")
ENUMS = sorted(name for name, raw in RAW.items() if raw["type"] == "enum")
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}

FIELDS = {
    "PushRequest": "message_id account_id importance title body read_action link campaign_id "
    "device_ids created_at",
    "Ack": "message_id account_id channel kind device_id route send_id acked_at",
    "AccountSettings": "account_id primary secondary updated_at",
    "AccountProfile": "account_id phone wechat_openid email updated_at",
    "DeviceRegistration": "device_id account_id manufacturer model routes push_tokens active "
    "registered_at",
    "ChannelSend": "send_id message_id account_id channel device_id route reason attempt "
    "importance title body read_action link sent_at",
    "Escalation": "message_id account_id from_channel to_channel deadline_at fired_at",
    "DeliveryResult": "message_id account_id status channel device_id route send_id detail at",
    "AccountLifecycle": "account_id lifecycle pushes changed_at",
    "CampaignEvent": "campaign_id partition targeted acked due_at at",
    "CampaignDue": "campaign_id due_at",
    "CampaignDecision": "campaign_id targeted acked ratio threshold fallback decided_at",
    "RouteChange": "device_id account_id from_route to_route success_rate reason changed_at",
    "DeadLetter": "key value topic partition offset error failed_at omitted_value_bytes",
    "ProviderOutcome": "send_id message_id account_id channel device_id route provider status "
    "provider_message_id error_code attempts latency_ms at",
    "RoutePrior": "manufacturer model route success_rate samples computed_at",
    "DispatchIntent": "send_id message_id account_id channel device_id route provider at",
}
SYMBOLS = {
    "Channel": ["APP", "WECHAT", "SMS", "EMAIL"],
    "Importance": ["LOW", "NORMAL", "HIGH", "URGENT"],
    "ReadAction": ["BUTTON", "REPLY", "LINK"],
    "AckKind": ["RECEIPT", "READ"],
    "SendReason": ["FANOUT", "PRIMARY", "ESCALATION", "ORIGINAL_ROUTE", "FALLBACK_ROUTE", "PROBE"],
    "Lifecycle": ["NEW", "ESTABLISHED"],
    "DeliveryStatus": ["UNREACHABLE", "SENT", "READ", "ESCALATED", "EXHAUSTED", "FAILED"],
    "OutcomeStatus": ["ACCEPTED", "REJECTED", "FAILED"],
}
PII = {("AccountProfile", field) for field in ("phone", "wechat_openid", "email")} | {
    ("DeviceRegistration", "push_tokens")}


def _field(record: str, name: str) -> dict[str, Any]:
    return next(f for f in RAW[record]["fields"] if f["name"] == name)


def test_every_record_has_a_unique_pinned_id() -> None:
    ids = pinned_ids()
    assert sorted(ids) == RECORDS
    assert len(set(ids.values())) == len(ids)
    assert all(isinstance(i, int) and 0 < i < 1 << 31 for i in ids.values())
    assert sorted(record_names()) == RECORDS


def test_records_have_the_contract_fields_in_order() -> None:
    assert sorted(FIELDS) == RECORDS
    for record, fields in FIELDS.items():
        assert [f["name"] for f in RAW[record]["fields"]] == fields.split(), record


def test_enums_have_the_contract_symbols() -> None:
    assert sorted(SYMBOLS) == ENUMS
    for enum, symbols in SYMBOLS.items():
        assert RAW[enum]["symbols"] == symbols
        assert RAW[enum].get("default", symbols[0]) in symbols


@pytest.mark.parametrize("name", sorted(RAW))
def test_namespace_name_and_docs(name: str) -> None:
    raw = RAW[name]
    assert raw["namespace"] == "pushcascade"
    assert raw["name"] == name
    assert raw["doc"].strip()
    for field in raw.get("fields", []):
        assert field.get("doc", "").strip(), f"{name}.{field['name']} has no doc"


@pytest.mark.parametrize("record", RECORDS)
def test_field_conventions(record: str) -> None:
    for field in RAW[record]["fields"]:
        kind = field["type"]
        where = f"{record}.{field['name']}"
        if field["name"].endswith("_at") or field["name"] == "at":
            assert kind == TIMESTAMP, where
        if isinstance(kind, list):
            assert kind[0] == "null" and len(kind) == 2, where
            assert "default" in field and field["default"] is None, where
        if isinstance(kind, str) and kind[0].isupper():
            pytest.fail(f"{where}: use the full name pushcascade.{kind}")
        if isinstance(kind, dict):
            assert kind["type"] in ("array", "map", "long"), f"{where}: no inline named types"
        tagged = "PII" in field.get("confluent:tags", [])
        assert tagged == ((record, field["name"]) in PII), where


def test_contract_defaults() -> None:
    assert _field("PushRequest", "importance")["default"] == "NORMAL"
    assert _field("PushRequest", "read_action")["default"] == "BUTTON"
    assert _field("PushRequest", "device_ids")["default"] == []
    assert _field("DeviceRegistration", "routes")["default"] == []
    assert _field("DeviceRegistration", "active")["default"] is True
    assert _field("ChannelSend", "attempt")["default"] == 0
    assert _field("ChannelSend", "importance")["default"] == "NORMAL"
    assert _field("DeliveryResult", "detail")["default"] == ""


@pytest.mark.parametrize("record", RECORDS)
def test_expanded_schema_is_self_contained(record: str) -> None:
    text = schema_json(record)
    parse_schema(json.loads(text))  # no named_schemas given: every type is inline
    parsed = avro.schema.parse(text)
    assert isinstance(parsed, avro.schema.RecordSchema)
    assert parsed.fullname == f"pushcascade.{record}"
    assert json.loads(text)["fields"][0]["doc"] == RAW[record]["fields"][0]["doc"]


def test_shared_enum_is_inlined_once_then_referenced() -> None:
    fields = json.loads(schema_json("AccountSettings"))["fields"]
    assert fields[1]["type"][1]["type"] == "enum"
    assert fields[1]["type"][1]["symbols"] == SYMBOLS["Channel"]
    assert fields[2]["type"] == ["null", "pushcascade.Channel"]


def test_expanded_schema_keeps_pii_tags() -> None:
    fields = {f["name"]: f for f in json.loads(schema_json("AccountProfile"))["fields"]}
    assert fields["phone"]["confluent:tags"] == ["PII"]
    parsed = avro.schema.parse(schema_json("AccountProfile"))
    assert isinstance(parsed, avro.schema.RecordSchema)
    assert parsed.fields[1].other_props == {"confluent:tags": ["PII"]}


def test_load_schema_is_parsed_and_a_fresh_copy() -> None:
    first = load_schema("Ack")
    assert first["name"] == "pushcascade.Ack"
    assert first["__fastavro_parsed"]
    first["fields"].clear()
    assert load_schema("Ack")["fields"]


def test_unknown_record_name() -> None:
    with pytest.raises(ValueError, match="unknown record 'Nope'"):
        load_schema("Nope")
    with pytest.raises(ValueError):
        schema_json("Channel")

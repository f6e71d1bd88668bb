"""Tests of the wire-format codec with real fastavro, avro and confluent's mock registry."""

from __future__ import annotations

import io
import json
import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import avro.io
import avro.schema
import pytest
from confluent_kafka.schema_registry import record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Codec, RecordError, SchemaError, schema_json

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EXAMPLES: dict[str, dict[str, Any]] = {
    "PushRequest": {
        "message_id": "msg-1", "account_id": "acc-1", "importance": "HIGH", "title": "Gate",
        "body": "Boarding now 登机", "read_action": "REPLY", "link": None, "campaign_id": "camp-7",
        "device_ids": ["dev-1", "dev-2"], "created_at": T0,
    },
    "Ack": {
        "message_id": "msg-1", "account_id": "acc-1", "channel": "APP", "kind": "READ",
        "device_id": "dev-1", "route": "huawei", "send_id": "snd-1", "acked_at": T0 + 5,
    },
    "AccountSettings": {
        "account_id": "acc-1", "primary": "WECHAT", "secondary": "SMS", "updated_at": T0,
    },
    "AccountProfile": {
        "account_id": "acc-1", "phone": "+8613800000000", "wechat_openid": None,
        "email": "a@example.com", "updated_at": T0,
    },
    "DeviceRegistration": {
        "device_id": "dev-1", "account_id": "acc-1", "manufacturer": "HUAWEI", "model": "P60",
        "routes": ["huawei", "getui"], "push_tokens": {"huawei": "IQAAAACy0kYh"}, "active": False,
        "registered_at": T0,
    },
    "ChannelSend": {
        "send_id": "snd-1", "message_id": "msg-1", "account_id": "acc-1", "channel": "APP",
        "device_id": "dev-1", "route": "huawei", "reason": "FALLBACK_ROUTE", "attempt": 2,
        "importance": "URGENT", "title": "Gate", "body": "Boarding now", "read_action": "LINK",
        "link": "https://air.example/b/1", "sent_at": T0,
    },
    "Escalation": {
        "message_id": "msg-1", "account_id": "acc-1", "from_channel": "APP",
        "to_channel": None, "deadline_at": T0, "fired_at": T0 + 12,
    },
    "DeliveryResult": {
        "message_id": "msg-1", "account_id": "acc-1", "status": "EXHAUSTED", "channel": "SMS",
        "device_id": None, "route": None, "send_id": "snd-3", "detail": "no channel left",
        "at": T0,
    },
    "AccountLifecycle": {
        "account_id": "acc-1", "lifecycle": "ESTABLISHED", "pushes": 5, "changed_at": T0,
    },
    "CampaignEvent": {
        "campaign_id": "spring", "partition": 3, "targeted": 200000, "acked": 150000,
        "due_at": 1700000030000, "at": 1700000000000,
    },
    "CampaignDue": {"campaign_id": "spring", "due_at": 1700000031000},
    "ProviderOutcome": {
        "send_id": "s1", "message_id": "m1", "account_id": "a1", "channel": "APP",
        "device_id": "d1", "route": "HUAWEI", "provider": "huawei", "status": "ACCEPTED",
        "provider_message_id": "hw-1", "error_code": None, "attempts": 1, "latency_ms": 12,
        "at": 1700000000000,
    },
    "DispatchIntent": {
        "send_id": "s1", "message_id": "m1", "account_id": "a1", "channel": "SMS",
        "device_id": None, "route": None, "provider": "sms", "at": 1700000000000,
    },
    "RoutePrior": {
        "manufacturer": "xiaomi", "model": None, "route": "JPUSH", "success_rate": 0.93,
        "samples": 400, "computed_at": 1700000000000,
    },
    "CampaignDecision": {
        "campaign_id": "camp-7", "targeted": 200, "acked": 150, "ratio": 0.75,
        "threshold": 0.8, "fallback": True, "decided_at": T0,
    },
    "RouteChange": {
        "device_id": "dev-1", "account_id": "acc-1", "from_route": None, "to_route": "getui",
        "success_rate": 0.97, "reason": "first probe round", "changed_at": T0,
    },
    "DeadLetter": {
        "key": b"acc-1", "value": b"\x00\x00\x00\x00\x01\xff", "topic": "push.requests",
        "partition": 3, "offset": 2**40, "error": "truncated", "failed_at": T0,
        "omitted_value_bytes": None,
    },
}
TOPIC = "push.requests"
CODEC = Codec()


def _millis(value: Any) -> Any:
    """Turn datetimes (from avro and AvroDeserializer) back into epoch milliseconds."""
    if isinstance(value, datetime):
        return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: _millis(v) for k, v in value.items()}
    return value


def _avro_decode(name: str, data: bytes) -> dict[str, Any]:
    """Decode with the independent Apache avro package, after the 5-byte header."""
    reader = avro.io.DatumReader(avro.schema.parse(schema_json(name)))
    return _millis(reader.read(avro.io.BinaryDecoder(io.BytesIO(data[5:]))))


def _registry_codec() -> Codec:
    return Codec(f"mock://{uuid.uuid4().hex}")


def test_examples_cover_every_record() -> None:
    assert sorted(EXAMPLES) == sorted(CODEC.names)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_round_trip(name: str) -> None:
    data = CODEC.encode(name, EXAMPLES[name])
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == CODEC.schema_id(name)
    assert CODEC.decode(data, TOPIC, expected=name) == EXAMPLES[name]
    assert CODEC.decode_named(data, TOPIC) == (name, EXAMPLES[name])


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_independent_avro_decoder_reads_our_bytes(name: str) -> None:
    assert _avro_decode(name, CODEC.encode(name, EXAMPLES[name])) == EXAMPLES[name]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_decoded_record_is_json_compatible(name: str) -> None:
    value = CODEC.decode(CODEC.encode(name, EXAMPLES[name]), TOPIC)
    if name != "DeadLetter":
        assert json.loads(json.dumps(value)) == value
    assert not any(isinstance(v, datetime) for v in value.values())


texts = st.text(max_size=40)
ids = st.text(min_size=1, max_size=20)
millis = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)  # datetime range
push_requests = st.fixed_dictionaries({
    "message_id": ids, "account_id": ids,
    "importance": st.sampled_from(["LOW", "NORMAL", "HIGH", "URGENT"]),
    "title": texts, "body": texts,
    "read_action": st.sampled_from(["BUTTON", "REPLY", "LINK"]), "link": st.none() | texts,
    "campaign_id": st.none() | ids, "device_ids": st.lists(ids, max_size=5),
    "created_at": millis,
})
acks = st.fixed_dictionaries({
    "message_id": ids, "account_id": ids,
    "channel": st.sampled_from(["APP", "WECHAT", "SMS", "EMAIL"]),
    "kind": st.sampled_from(["RECEIPT", "READ"]),
    "device_id": st.none() | ids, "route": st.none() | ids, "send_id": st.none() | ids,
    "acked_at": millis,
})


@settings(max_examples=200, deadline=None)
@given(push_requests)
def test_push_request_property(value: dict[str, Any]) -> None:
    data = CODEC.encode("PushRequest", value)
    assert CODEC.decode(data, TOPIC, expected="PushRequest") == value
    assert _avro_decode("PushRequest", data) == value


@settings(max_examples=200, deadline=None)
@given(acks)
def test_ack_property(value: dict[str, Any]) -> None:
    data = CODEC.encode("Ack", value)
    assert CODEC.decode(data, "push.acks", expected="Ack") == value
    assert _avro_decode("Ack", data) == value


def test_validate_fills_defaults_and_converts_datetimes() -> None:
    when = datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8)))
    value = {"message_id": "m", "account_id": "a", "title": "t", "body": "b", "created_at": when}
    assert CODEC.validate("PushRequest", value) == {
        "message_id": "m", "account_id": "a", "importance": "NORMAL", "title": "t", "body": "b",
        "read_action": "BUTTON", "link": None, "campaign_id": None, "device_ids": [],
        "created_at": T0,
    }
    assert CODEC.decode(CODEC.encode("PushRequest", value), TOPIC)["created_at"] == T0


def test_defaults_are_not_shared_between_records() -> None:
    first = CODEC.validate("DeviceRegistration", {
        "device_id": "d", "account_id": "a", "manufacturer": "m", "model": "x",
        "registered_at": 0,
    })
    first["routes"].append("huawei")
    again = CODEC.validate("DeviceRegistration", {
        "device_id": "d", "account_id": "a", "manufacturer": "m", "model": "x",
        "registered_at": 0,
    })
    assert again["routes"] == [] and again["active"] is True


GOOD = CODEC.encode("PushRequest", EXAMPLES["PushRequest"])
BAD_BYTES = {
    "empty": (b"", "empty message value"),
    "short header": (b"\x00\x00\x01", "shorter than the 5-byte header"),
    "wrong magic": (b"\x01" + GOOD[1:], "bad magic byte 0x01"),
    "unknown id": (b"\x00\x00\x00\x00\x63" + GOOD[5:], "unknown schema id 99"),
    "truncated body": (GOOD[:-4], "PushRequest datum (schema id 1) is truncated or corrupt"),
    "header only": (GOOD[:5], "is truncated or corrupt"),
    "trailing garbage": (GOOD + b"\x01\x02", "2 trailing bytes after the PushRequest datum"),
}


@pytest.mark.parametrize("case", sorted(BAD_BYTES))
def test_bad_bytes_raise_schema_error(case: str) -> None:
    data, reason = BAD_BYTES[case]
    with pytest.raises(SchemaError) as info:
        CODEC.decode(data, "push.requests")
    assert info.value.topic == "push.requests"
    assert reason in info.value.reason
    assert str(info.value).startswith("push.requests: ")


def test_garbage_body_raises_schema_error() -> None:
    for body in (b"\xff" * 12, b"\x02m\x02a\x09", b"\x80" * 20):
        with pytest.raises(SchemaError):
            CODEC.decode(b"\x00\x00\x00\x00\x01" + body, TOPIC)


def test_the_reason_for_a_corrupt_datum_is_short_whatever_the_datum_holds() -> None:
    """A string that is not UTF-8 deep in a 256 KiB datum: the reason names the error in a few
    hundred characters (it used to repeat the whole string, making a dead letter of ~1 MB)."""
    body = "\U0001f600" * 65_536
    data = CODEC.encode("Escalation", {**EXAMPLES["Escalation"], "message_id": body})
    end = data.index(b"\xf0\x9f\x98\x80") + len(body.encode()) - 1
    broken = data[:end] + b"\xff" + data[end + 1:]  # the string's last byte is not UTF-8
    with pytest.raises(SchemaError) as info:
        CODEC.decode(broken, "push.escalations")
    assert "UnicodeDecodeError" in info.value.reason
    assert len(info.value.reason) < 400


def test_an_int_or_long_out_of_its_range_is_a_schema_error() -> None:
    """Avro varints have no length limit and fastavro reads any of them into an int field:
    found by the fuzzer (tests/fuzz), a CampaignEvent decoded with partition 2**63 - 4."""
    good = CODEC.encode("CampaignEvent", EXAMPLES["CampaignEvent"])
    start = 5 + 1 + len(b"spring")  # the partition's varint (3 -> zigzag 6)
    assert good[start] == 6
    huge = bytes([0xF8] + [0xFF] * 8 + [0x01])  # zigzag of 2**63 - 4
    with pytest.raises(SchemaError, match=r"CampaignEvent.partition .*out of range"):
        CODEC.decode(good[:start] + huge + good[start + 1:], "pushcascade.campaign-events")


@pytest.mark.parametrize("byte", [2, 0x7F, 0xFF])
def test_a_boolean_byte_other_than_0_or_1_is_a_schema_error(byte: int) -> None:
    """fastavro reads any byte as a boolean, ClickHouse refuses it with an error the sink took
    for its own and retried forever (found by tests/fuzz); the codec refuses it, so the sink
    dead-letters the record."""
    good = CODEC.encode("CampaignDecision", EXAMPLES["CampaignDecision"])
    at = 5 + 1 + len(b"camp-7") + 2 + 2 + 16  # campaign_id, targeted, acked, the two doubles
    assert good[at] == 1
    with pytest.raises(SchemaError, match=f"boolean byte 0x{byte:02x}"):
        CODEC.decode(good[:at] + bytes([byte]) + good[at + 1:], "campaign.decisions")
    device = CODEC.encode("DeviceRegistration", EXAMPLES["DeviceRegistration"])
    active = len(device) - 1 - len(zigzag_bytes(EXAMPLES["DeviceRegistration"]["registered_at"]))
    assert device[active] == 0
    with pytest.raises(SchemaError, match=f"boolean byte 0x{byte:02x}"):
        CODEC.decode(device[:active] + bytes([byte]) + device[active + 1:], "device.registry")


def zigzag_bytes(n: int) -> bytes:
    """Avro's zigzag varint of n."""
    from connectors.clickhouse.avro import zigzag

    return zigzag(n)


def test_wrong_expected_type_raises_schema_error() -> None:
    with pytest.raises(SchemaError) as info:
        CODEC.decode(GOOD, "push.acks", expected="Ack")
    assert str(info.value) == "push.acks: expected Ack, got PushRequest (schema id 1)"


def test_schema_error_message_and_pickle() -> None:
    error = SchemaError("push.requests", "unknown schema id 99")
    assert str(error) == "push.requests: unknown schema id 99"
    again = pickle.loads(pickle.dumps(error))
    assert (again.topic, again.reason) == ("push.requests", "unknown schema id 99")


def _push(**changes: Any) -> dict[str, Any]:
    value = dict(EXAMPLES["PushRequest"], **changes)
    return {k: v for k, v in value.items() if v is not _DROP}


_DROP = object()
BAD_RECORDS = {
    "missing required": ("PushRequest", _push(title=_DROP), "title", "missing required field"),
    "wrong type": ("PushRequest", _push(body=3), "body", "expected string, got int"),
    "bad enum": ("PushRequest", _push(importance="MEDIUM"), "importance",
                 "unknown Importance symbol 'MEDIUM'; allowed: LOW, NORMAL, HIGH, URGENT"),
    "extra key": ("PushRequest", _push(priority=1), "priority", "unknown field"),
    "bad array element": ("PushRequest", _push(device_ids=["d", None]), "device_ids.1",
                          "expected string, got null"),
    "not a list": ("PushRequest", _push(device_ids="dev-1"), "device_ids", "expected array"),
    "bad nullable enum": ("AccountSettings", dict(EXAMPLES["AccountSettings"], primary="FAX"),
                          "primary", "unknown Channel symbol 'FAX'"),
    "null not allowed": ("Ack", dict(EXAMPLES["Ack"], channel=None), "channel",
                         "expected a Channel symbol (string), got null"),
    "bool is not int": ("ChannelSend", dict(EXAMPLES["ChannelSend"], attempt=True), "attempt",
                        "expected int, got bool"),
    "int out of range": ("ChannelSend", dict(EXAMPLES["ChannelSend"], attempt=2**31), "attempt",
                         "out of range for int"),
    "bad timestamp": ("Ack", dict(EXAMPLES["Ack"], acked_at="2026-01-01"), "acked_at",
                      "expected timestamp-millis"),
    "naive datetime": ("Ack", dict(EXAMPLES["Ack"], acked_at=datetime(2026, 1, 1)), "acked_at",
                       "naive datetime"),
    "bytes field": ("DeadLetter", dict(EXAMPLES["DeadLetter"], value="text"), "value",
                    "expected bytes, got str"),
    "lone surrogate": ("PushRequest", _push(title="\ud800"), "title", "not encodable as UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_records_raise_record_error_naming_the_field(case: str) -> None:
    name, value, field, reason = BAD_RECORDS[case]
    for call in (CODEC.encode, CODEC.validate):
        with pytest.raises(RecordError) as info:
            call(name, value)
        assert (info.value.record, info.value.field) == (name, field)
        assert reason in str(info.value)
        assert str(info.value).startswith(f"{name}.{field}: ")


def test_record_error_for_a_non_dict_and_unknown_record_name() -> None:
    with pytest.raises(RecordError, match="expected a PushRequest record"):
        CODEC.encode("PushRequest", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown record 'Nope'"):
        CODEC.encode("Nope", {})
    with pytest.raises(ValueError, match="unknown record 'Nope'"):
        CODEC.decode(GOOD, TOPIC, expected="Nope")


def test_registry_mode_round_trip_and_subjects() -> None:
    codec = _registry_codec()
    for name, value in EXAMPLES.items():
        assert codec.decode(codec.encode(name, value), TOPIC, expected=name) == value
    assert sorted(codec.registry.get_subjects()) == sorted(f"pushcascade.{n}" for n in EXAMPLES)
    other = Codec(f"mock://{uuid.uuid4().hex}")
    with pytest.raises(SchemaError, match="unknown schema id"):
        other.decode(codec.encode("Ack", EXAMPLES["Ack"]), "push.acks")


def _context(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_confluent_serializer_bytes_decode_with_registry_codec(name: str) -> None:
    codec = _registry_codec()
    serializer = AvroSerializer(codec.registry, schema_json(name))  # topic-value subject
    data = serializer(EXAMPLES[name], _context("some.topic"))
    assert codec.decode_named(data, "some.topic") == (name, EXAMPLES[name])


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_our_bytes_decode_with_confluent_deserializer(name: str) -> None:
    codec = _registry_codec()
    data = codec.encode(name, EXAMPLES[name])
    conf = {"subject.name.strategy": record_subject_name_strategy}
    same = AvroSerializer(codec.registry, schema_json(name), conf=conf)(
        EXAMPLES[name], _context(TOPIC)
    )
    assert same == data
    assert _millis(AvroDeserializer(codec.registry)(data, _context(TOPIC))) == EXAMPLES[name]


def test_registry_codec_reads_an_evolved_writer_schema() -> None:
    codec = _registry_codec()
    newer = json.loads(schema_json("PushRequest"))
    newer["fields"].append({"name": "locale", "type": "string", "default": "en", "doc": "x"})
    serializer = AvroSerializer(codec.registry, json.dumps(newer))
    data = serializer(dict(EXAMPLES["PushRequest"], locale="zh"), _context(TOPIC))
    assert codec.decode(data, TOPIC, expected="PushRequest") == EXAMPLES["PushRequest"]


def test_registry_codec_rejects_a_foreign_record() -> None:
    codec = _registry_codec()
    foreign = {"type": "record", "name": "Other", "namespace": "elsewhere",
               "fields": [{"name": "x", "type": "int"}]}
    data = AvroSerializer(codec.registry, json.dumps(foreign))({"x": 1}, _context(TOPIC))
    with pytest.raises(SchemaError, match="'elsewhere.Other', not a known record"):
        codec.decode(data, TOPIC)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_long_timestamp_round_trips_as_int(at: int) -> None:
    value = dict(EXAMPLES["CampaignEvent"], due_at=at)
    decoded = CODEC.decode(CODEC.encode("CampaignEvent", value), TOPIC)
    assert decoded["due_at"] == at and type(decoded["due_at"]) is int

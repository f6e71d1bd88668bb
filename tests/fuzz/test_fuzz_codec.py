"""Fuzz the decoders and validators: every input decodes to a valid record or raises
SchemaError (a dead letter with a reason); every dict validates or raises RecordError naming
the field; the caps refuse exactly what is over them, naming the field, never the address."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import CATALOG, Codec, RecordError, SchemaError, check_caps, enforce_caps
from schemas import validation as v
from streams.privacy import PERSONAL, PERSONAL_TOPICS, masked
from tests.fuzz.counts import outcome, target
from tests.fuzz.strategies import (
    CODEC,
    IDS,
    NAMES,
    NOW,
    STRINGS,
    TIMES,
    named_records,
    wire,
)

EXPECTED = {s.name: s.record for s in CATALOG if s.record in CODEC.names}
TOPICS = sorted(EXPECTED)
REGISTRY = Codec(f"mock://{uuid.uuid4().hex}")
for _name in NAMES:  # the registry knows every record, under ids of its own
    REGISTRY.schema_id(_name)
CAPPED = tuple(v.CAPS)
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])


def _plain(value: Any) -> Any:
    """A decoded value with bytes as lists, so it can be compared through JSON."""
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_plain(x) for x in value]
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included."""
    return json.dumps(_plain(a), sort_keys=True) == json.dumps(_plain(b), sort_keys=True)


def _decoded_is_a_valid_record(name: str, value: dict[str, Any]) -> None:
    """What a decoder returns is a record its consumers can trust: valid and JSON-compatible."""
    assert _same(CODEC.validate(name, value), value)


PINNED_NAMES = {i: n for n, i in IDS.items()}
KINDS = ("empty", "shorter", "magic", "unknown schema id", "expected", "truncated or corrupt",
         "trailing")


def _kind(reason: str) -> str:
    """The kind of a decoder's refusal, for the counts."""
    return "refused: " + next((k for k in KINDS if k in reason), "other")


def _refusal(exc: SchemaError, topic: str) -> None:
    assert exc.topic == topic and exc.reason.strip()
    assert str(exc).startswith(f"{topic}: ")


@FUZZ
@given(data=wire(), topic=st.sampled_from(TOPICS), expected=st.booleans(),
       registry=st.booleans())
@example(data=b"", topic="push.acks", expected=True, registry=False)
@example(data=b"\x00\x00\x00\x00\x02" + b"\x80" * 12, topic="push.acks", expected=True,
         registry=False)
@example(data=b"\x00\x00\x00\x00\x01\x01", topic="push.requests", expected=False,
         registry=False)  # a negative string length
@target("codec.decode")
def test_any_bytes_decode_to_a_valid_record_or_a_schema_error(
        data: bytes, topic: str, expected: bool, registry: bool) -> None:
    codec = REGISTRY if registry else CODEC
    if registry and len(data) >= 5 and data[0] == 0:
        # pinned ids mean nothing to the registry: re-frame under the registry's id of it
        name = PINNED_NAMES.get(int.from_bytes(data[1:5]))
        if name:
            data = codec._header(name) + data[5:]
    try:
        if expected:
            name = EXPECTED[topic]
            value = codec.decode(data, topic, expected=name)
        else:
            name, value = codec.decode_named(data, topic)
    except SchemaError as exc:
        _refusal(exc, topic)
        outcome("codec.decode", _kind(exc.reason))
        return
    _decoded_is_a_valid_record(name, value)
    assert codec.identify(data, topic)[0] == name
    outcome("codec.decode", "decoded")


@FUZZ
@given(named_records())
@target("codec.round_trip")
def test_every_valid_record_survives_encode_and_decode(named: tuple[str, dict]) -> None:
    name, value = named
    data = CODEC.encode(name, value)
    assert _same(CODEC.decode(data, "t", expected=name), CODEC.validate(name, value))
    assert CODEC.identify(data, "t") == (name, CODEC.schema_id(name))
    outcome("codec.round_trip", "same record")


class _Colour(Enum):
    APP = "APP"
    FAX = "FAX"


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(1 << 70), 1 << 70),
    st.floats(), st.just(math.nan), st.text(), st.sampled_from(["\ud800", "a\udfffb"]),
    st.binary(max_size=8), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.sampled_from([_Colour.APP, _Colour.FAX, datetime(2026, 1, 1),
                     datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
                     datetime(9999, 12, 31, tzinfo=timezone(timedelta(hours=-23))),
                     bytearray(b"x"), memoryview(b"y"), ("a", "b"), {1: "x"}, object()]),
    STRINGS, TIMES,
)


@st.composite
def _damaged(draw: st.DrawFn) -> tuple[str, Any]:
    """A record with a field replaced by junk, a field missing, or a key added; or junk."""
    name, value = draw(named_records())
    how = draw(st.sampled_from(["replace", "replace", "drop", "add", "nest", "whole"]))
    fields = sorted(value)
    if how == "replace":
        value[draw(st.sampled_from(fields))] = draw(JUNK)
    elif how == "drop":
        value.pop(draw(st.sampled_from(fields)))
    elif how == "add":
        value[draw(st.one_of(st.text(max_size=8), st.integers()))] = draw(JUNK)
    elif how == "nest":
        lists = [f for f in fields if isinstance(value[f], (list, dict)) and value[f]]
        if lists:
            f = draw(st.sampled_from(lists))
            if isinstance(value[f], list):
                value[f][draw(st.integers(0, len(value[f]) - 1))] = draw(JUNK)
            else:
                value[f][draw(st.sampled_from(sorted(value[f])))] = draw(JUNK)
    else:
        return name, draw(JUNK)
    return name, value


@FUZZ
@given(_damaged())
@target("codec.validate")
def test_any_dict_validates_or_raises_a_record_error_naming_the_field(
        damaged: tuple[str, Any]) -> None:
    name, value = damaged
    try:
        normal = CODEC.validate(name, value)
    except RecordError as exc:
        assert exc.record == name and exc.reason
        assert str(exc).startswith(f"{name}.{exc.field}: " if exc.field else f"{name}: ")
        if exc.field and isinstance(value, dict):
            keys = {str(k) for k in value}
            if exc.reason.startswith("unknown field"):  # a key of its own (dots and all)
                assert exc.field in keys, exc
            else:
                top = exc.field.split(".")[0]
                assert (top in keys) != (exc.reason == "missing required field"), exc
        outcome("codec.validate", "record_error")
        return
    again = CODEC.decode(CODEC.encode(name, value), "t", expected=name)
    assert _same(again, normal)
    outcome("codec.validate", "valid")


def _utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _over(name: str, field: str, value: Any, now: float) -> bool:
    """Independently of validation.py: whether this field's value breaks its documented cap."""
    ids = {"message_id", "account_id", "device_id", "campaign_id", "send_id"}
    limits = {"title": v.TITLE_BYTES, "body": v.BODY_BYTES, "link": v.LINK_BYTES,
              "route": v.ROUTE_BYTES, "phone": v.PHONE_BYTES, "email": v.EMAIL_BYTES,
              "wechat_openid": v.OPENID_BYTES, "manufacturer": v.MODEL_BYTES,
              "model": v.MODEL_BYTES, **dict.fromkeys(ids, v.ID_BYTES)}
    if value is None:
        return False
    if field in ("created_at", "acked_at", "updated_at", "registered_at"):
        return not v.EARLIEST_MS <= value <= round(now * 1000) + v.FUTURE_MS
    if field == "device_ids":
        return len(value) > v.DEVICE_IDS or any(
            _utf8(d) > v.ID_BYTES or not d.strip() for d in value)
    if field == "routes":
        return len(value) > v.ROUTES or any(_utf8(r) > v.ROUTE_BYTES for r in value)
    if field == "push_tokens":
        return len(value) > v.ROUTES or any(
            _utf8(k) > v.ROUTE_BYTES or _utf8(t) > v.TOKEN_BYTES for k, t in value.items())
    if field in ids and not value.strip():
        return True
    if field == "link" and _utf8(value) <= limits[field]:
        try:
            url = urlsplit(value)
            return url.scheme != "https" or not url.hostname
        except ValueError:
            return True
    return field in limits and _utf8(value) > limits[field]


#: Times a consumer checks caps at: a Kafka timestamp (epoch ms, int64) in seconds.
NOWS = st.one_of(st.just(NOW), st.floats(0, 1e11), st.floats(0, (1 << 63) / 1000))


@FUZZ
@given(named=named_records(CAPPED), now=NOWS)
@target("caps.check")
def test_the_caps_refuse_exactly_what_is_over_them_naming_the_field(
        named: tuple[str, dict], now: float) -> None:
    name, value = named
    value = CODEC.validate(name, value)
    over = [f for f in v.CAPS[name] if _over(name, f, value.get(f), now)]
    topic = next(s.name for s in CATALOG if s.record == name)
    try:
        check_caps(name, value, now)
    except RecordError as exc:
        assert over and exc.field == over[0], (exc, over)
        assert exc.record == name and exc.reason
        for personal in PERSONAL.get(name, ()):
            secret = value.get(personal)
            for text in ([secret] if isinstance(secret, str) else list(secret or {}.values())):
                assert len(text) < 4 or text not in str(exc)
        try:
            enforce_caps(topic, name, value, now)
        except SchemaError as dead:
            _refusal(dead, topic)
            assert exc.field in dead.reason
        else:
            raise AssertionError("enforce_caps let through what check_caps refused")
        outcome("caps.check", f"refused: {exc.field}")
        return
    assert not over, over
    enforce_caps(topic, name, value, now)
    outcome("caps.check", "within the caps")


@FUZZ
@given(data=wire(), topic=st.sampled_from(TOPICS + ["pushcascade.account-events", ""]))
@target("privacy.masked")
def test_what_a_dead_letter_copies_never_holds_an_address(data: bytes, topic: str) -> None:
    out = masked(CODEC, data, topic)
    try:
        name, record = CODEC.decode_named(data, topic)
    except SchemaError:
        assert out == (None if topic in PERSONAL_TOPICS else data)
        outcome("privacy.masked", "undecodable: dropped" if out is None else "undecodable: kept")
        return
    if name not in PERSONAL:
        assert out == data
        outcome("privacy.masked", "nothing personal")
        return
    again = CODEC.decode(out, topic, expected=name)
    for personal in PERSONAL[name]:
        if isinstance(record[personal], dict):
            assert sorted(again[personal]) == sorted(record[personal])
            assert set(again[personal].values()) <= {"***"}
        else:
            assert again[personal] in (None, "", "***")
    outcome("privacy.masked", f"{name} masked")
